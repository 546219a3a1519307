"""The SQL backend: SQLite, PostgreSQL, MySQL/MariaDB and DuckDB through SQLAlchemy Core."""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import operator
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar, TypeVar

import sqlalchemy as sa

from superduperdb.backends.base import DataBackend
from superduperdb.backends.sql import keys as row_keys
from superduperdb.backends.sql import schema
from superduperdb.backends.sql.compiler import compile_filter, compile_sort
from superduperdb.base import forks
from superduperdb.base.document import new_id
from superduperdb.base.exceptions import BackendError, ConfigError, QueryError, WriteFailed
from superduperdb.base.quiet import quiet

logger = logging.getLogger(__name__)
_T = TypeVar('_T')
_M = TypeVar('_M', bound=Callable[..., Any])


class _TableChanged(BackendError):
    """A read failed because a table changed under its cached definition (now forgotten)."""


class _TableChangedOnWrite(_TableChanged, WriteFailed):
    """A write was rolled back because a table changed under its cached definition."""


def _again_if_changed(method: _M) -> _M:
    """Run a read or write method once more when a table changed under it
    (:class:`_TableChanged`; a write was rolled back): the second run reads the table's
    definition again. A generator is run again only when
    the change shows on its first page, before anything was returned."""
    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def pages(*args: Any, **kwargs: Any) -> Iterator[Any]:
            found = method(*args, **kwargs)
            try:
                first = next(found)
            except StopIteration:
                return
            except _TableChanged:
                found = method(*args, **kwargs)
                first = next(found, _NONE)
                if first is _NONE:
                    return
            yield first
            yield from found

        return pages  # type: ignore[return-value]

    @functools.wraps(method)
    def once(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except _TableChanged:
            return method(*args, **kwargs)

    return once  # type: ignore[return-value]


_NONE = object()


class SQLBackend(DataBackend):
    """Documents as rows: top-level keys are columns, nested values JSON columns."""

    self_describing: ClassVar[bool] = False
    has_schema: ClassVar[bool] = True

    def __init__(self, engine: sa.Engine, *, internal_schema: str | None = None) -> None:
        self.engine = engine
        dialect = engine.dialect.name
        self.dialect = 'mysql' if dialect in ('mysql', 'mariadb') else dialect
        #: the user's schema when superduperdb's own tables live in ``internal_schema`` (PostgreSQL)
        self.user_schema: str | None = None
        #: the schema superduperdb's own objects go to (PostgreSQL), made before the first of them
        self.internal_schema: str | None = None
        self._schema_made = False
        internal = _internal_schema(engine, self.dialect, internal_schema)
        if internal:
            self.user_schema = _use_internal_schema(engine, self.dialect, internal)
            self.internal_schema = internal
        #: called before a table is created (the metadata store makes its own tables first)
        self._before_create: Callable[[], None] | None = None
        self.single_writer = self.dialect == 'duckdb'  # type: ignore[misc]
        if self.dialect == 'duckdb':  # fields named at, asof, semi...: see schema.quote_keywords
            schema.quote_keywords(engine)
        self._metadata = sa.MetaData()
        self._tables: dict[str, sa.Table] = {}
        self._lock = threading.RLock()
        self._local = threading.local()  # the connection reading() pins, per thread
        self._plans: dict[tuple[int, int], Any] = {}  # _lookup's SQL text by statement and key count
        self._joined: dict[tuple[str, tuple[str, ...]], tuple[list[sa.Table], sa.Select[Any]]] = {}
        self._insert_plans: dict[tuple[str, tuple[str, ...]], _InsertPlan] = {}
        self._lookups: dict[str, sa.Select[Any]] = {}
        self._many: dict[tuple[str, tuple[str, ...]], tuple[sa.Table, sa.Select[Any]]] = {}
        self._whole_keys: dict[str, bool] = {}  # by table: get() takes a composite key's text
        #: lower-cased relation name -> whether it is a view over superduperdb's tables (is_internal)
        self._views_over_ours: dict[str, bool] = {}
        #: the table where each table this backend creates is recorded, in the step that creates
        #: it (see record_creations_in); None: creations are not recorded here
        self.registry: str | None = None
        # Reads run on connections in autocommit mode where that costs nothing: each read is
        # one statement anyway, and PostgreSQL then needs no BEGIN and no ROLLBACK round trip
        # when the connection goes back to the pool (a third of a small query's time).
        self._reads = engine
        if self.dialect == 'postgresql':
            _mark_sessions(engine)
            self._reads = engine.execution_options(isolation_level='AUTOCOMMIT')
        forks.in_child(self._forked)

    def _forked(self) -> None:
        """In a forked child: connections of its own. The parent's pooled ones are left to the
        parent, not closed (that would end its sessions): sharing their sockets, each process
        read the other's results (wrong counts, "no row was found") or lost the connection."""
        self.engine.dispose(close=False)
        self._lock = threading.RLock()
        self._local = threading.local()

    @property
    def name(self) -> str:  # type: ignore[override]
        return self.dialect

    def describe(self) -> str:
        from superduperdb.base.masking import mask_secrets  # ?password= too, not only user:pw@

        return f'{self.dialect}: {mask_secrets(self.engine.url.render_as_string(hide_password=True))}'

    # ----- tables -----------------------------------------------------------
    def table(self, name: str, *, refresh: bool = False) -> sa.Table | None:
        """The SQLAlchemy ``Table`` for ``name`` (reflected once, cached), or None."""
        with self._lock:
            if not refresh and name in self._tables:
                return self._tables[name]
            in_schema, bare = self._split(name)
            key = f'{in_schema}.{bare}' if in_schema else bare  # as MetaData knows it
            if key in self._metadata.tables:
                self._metadata.remove(self._metadata.tables[key])
            self._tables.pop(name, None)
            self._lookups.pop(name, None)
            with self.engine.connect() as conn:
                if self.dialect == 'duckdb':
                    table = schema.reflect_duckdb(conn, self._metadata, name)
                elif sa.inspect(conn).has_table(bare, schema=in_schema):
                    table = sa.Table(bare, self._metadata, schema=in_schema, autoload_with=conn)
                    if self.dialect == 'mysql':
                        _mark_mariadb_json(conn, table)
                else:
                    table = None
            if table is not None:
                schema.mark_instants(table, self.dialect)
            if table is not None:
                self._tables[name] = table
            return table

    def has_table(self, table: str) -> bool:
        return self.table(table) is not None

    def columns(self, table: str, *, refresh: bool = False) -> list[str] | None:
        t = self.table(table, refresh=refresh)
        return None if t is None else [c.name for c in t.c]

    def clock(self) -> float | None:
        """The server's time: PostgreSQL's and MariaDB/MySQL's (SQLite and DuckDB are embedded)."""
        if self.dialect == 'postgresql':
            query = 'SELECT EXTRACT(EPOCH FROM clock_timestamp())'
        elif self.dialect == 'mysql':
            query = 'SELECT UNIX_TIMESTAMP(NOW(6))'
        else:
            return None
        return float(self._read(lambda conn: conn.execute(sa.text(query)).scalar_one()))

    def is_internal(self, name: str) -> bool:
        """Whether ``name`` is a view that reads superduperdb's own tables (the readable output
        views, ``<table>__<key>__<model>``, or anyone else's): internal for the query API like
        the tables themselves. On MariaDB/MySQL a join view is updatable, so a write through
        one would write superduperdb's output table. Answered from a cache; a name not seen
        before costs one query (tables and views of the current schema)."""
        from superduperdb.backends.sql.views import relations

        key = name.rpartition('.')[2].lower()
        known = self._views_over_ours.get(key)
        if known is None:
            found = self._read(lambda conn: relations(conn, self.dialect))  # retried after a drop
            self._views_over_ours = {
                n.lower(): sql is not None and '_superduper' in sql.lower() for n, sql in found.items()
            }
            known = self._views_over_ours.get(key, False)
        return known

    def column_kind(self, table: str, column: str) -> str | None:
        """The column type name (``str int float bool bytes json``) ``column`` holds; None when
        the table or column does not exist (or its type is none of those)."""
        t = self.table(table)
        if t is None or column not in t.c:
            return None
        kind = t.c[column].type
        for sa_type, name in _KINDS:
            if isinstance(kind, sa_type):
                return name
        return None

    def _split(self, name: str) -> tuple[str | None, str]:
        """``'shop.items'`` -> ``('shop', 'items')``: a table in a PostgreSQL schema (MySQL: database)."""
        in_schema, dot, bare = name.rpartition('.')
        if not dot:
            # with an internal schema first in the search path, the user's tables are named with theirs
            internal = self.user_schema is not None and name.startswith('_superduper')
            return (None if internal or self.user_schema is None else self.user_schema), name
        if self.dialect not in ('postgresql', 'mysql'):
            raise QueryError(
                f'Table {name!r} names a schema ({in_schema!r}): schema-qualified tables are for '
                f'PostgreSQL (and MySQL databases); on {self.dialect} use a plain table name.'
            )
        return in_schema, bare

    def list_tables(self) -> list[str]:
        return sorted(sa.inspect(self.engine).get_table_names())

    def primary_key(self, table: str) -> str:
        t = self.table(table)
        if t is None or not t.primary_key.columns:
            return '_id'
        if row_keys.is_composite(t):
            return row_keys.ROW_KEY  # the whole key as one value (see keys.py)
        return next(iter(t.primary_key.columns)).name

    def _key_columns(self, table: str, t: sa.Table) -> list[sa.Column[Any]]:
        """The columns of ``t``'s primary key (``_id`` for a table without one)."""
        if len(t.primary_key.columns) > 1:
            row_keys.check_composite(t)
            return row_keys.key_columns(t)
        return [t.c[self.primary_key(table)]]

    @staticmethod
    def _key_is(t: sa.Table, pk: Sequence[sa.Column[Any]], key: Any) -> sa.ColumnElement[bool]:
        """The row whose key is ``key``."""
        return row_keys.equals(t, key) if len(pk) > 1 else pk[0] == key

    def create_table(self, table: str, columns: dict[str, str], *, primary_key: str = '_id') -> None:
        self._prepare_creation()
        with self._lock:
            if table in self._tables or self._declared(table, columns, primary_key) is not None:
                return
            if self.table(table) is not None:
                return
            cols = [
                schema.primary_key_column(name, 0 if kind == 'int' else '')  # an integer or string key
                if name == primary_key
                else schema.column(name, kind)
                for name, kind in columns.items()
            ]
            try:
                in_schema, bare = self._split(table)
                self._create(sa.Table(bare, sa.MetaData(), *cols, schema=in_schema), name=table)
            except WriteFailed as exc:
                raise BackendError(f'Could not create table {table!r}: {exc.reason or exc}') from exc

    def record_creations_in(self, registry: str, *, before: Callable[[], None] | None = None) -> bool:
        """Record every table this backend creates from now on as a row ``{'_id': name,
        'created_at': seconds}`` of ``registry`` (a table of this database), in the same step
        that creates it: one transaction with the CREATE TABLE and the first insert where DDL
        is transactional (PostgreSQL, SQLite, DuckDB); on MySQL/MariaDB, whose DDL commits by
        itself, the record is committed first (an intent), so a table never exists unrecorded.
        """
        self.registry = registry
        self._before_create = before
        return True

    def _prepare_creation(self) -> None:
        """Before creating a table: superduperdb's schema (PostgreSQL), then its tables."""
        self.make_internal_schema()
        if self._before_create is not None:
            self._before_create()

    def make_internal_schema(self) -> None:
        """Create :attr:`internal_schema` if it is missing: before anything is made in it, never
        on connecting (a look at a database leaves it as it was)."""
        if self.internal_schema is None or self._schema_made:
            return
        quote = self.engine.dialect.identifier_preparer.quote
        try:
            with self.engine.begin() as conn:
                conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS {quote(self.internal_schema)}'))
        except sa.exc.IntegrityError:  # made meanwhile by another process
            pass
        except sa.exc.SQLAlchemyError as exc:
            raise BackendError(
                f"Could not create schema {self.internal_schema!r} for superduperdb's tables: "
                f'{_reason(exc)}. Grant CREATE on the database, or set internal_schema to a schema '
                'that exists (your own, such as public, keeps them beside your tables).'
            ) from exc
        self._schema_made = True

    @contextlib.contextmanager
    def _ddl(self) -> Iterator[sa.Connection]:
        """A transaction that holds this database's schema-change lock: one process at a time.

        Processes started together (a server, change capture and workers) create the same
        tables at once; each checks for the table inside the lock, so the second finds it.
        PostgreSQL: a transaction-scoped advisory lock per schema. MySQL/MariaDB: a named
        ``GET_LOCK`` per database (DDL commits by itself there, so statements inside commit
        as they go). SQLite: ``BEGIN IMMEDIATE`` takes the database's write lock up front.
        DuckDB: a file has one writing process.
        """
        with self._lock, self.engine.connect() as conn:
            if self.dialect == 'postgresql':
                conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(hashtext('superduperdb.ddl.' || current_schema()))")
                )
            elif self.dialect == 'sqlite':
                conn.exec_driver_sql('BEGIN IMMEDIATE')
            elif self.dialect == 'mysql':
                got = conn.execute(
                    sa.text(f'SELECT GET_LOCK({_MYSQL_LOCK}, :wait)'),
                    {'wait': DDL_LOCK_TIMEOUT},
                ).scalar()
                conn.commit()
                if got != 1:
                    raise BackendError(
                        f'Waited {DDL_LOCK_TIMEOUT} s for the schema-change lock of this database, held by '
                        'another superduperdb process; is one stuck? Retry when it has finished.'
                    )
            try:
                yield conn
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
            finally:
                if self.dialect == 'mysql':
                    conn.execute(sa.text(f'SELECT RELEASE_LOCK({_MYSQL_LOCK})'))
                    conn.commit()

    def _exists(self, conn: sa.Connection, name: str) -> bool:
        """Whether ``name`` exists, seen from ``conn`` (inside :meth:`_ddl`: not from the cache)."""
        return bool(self._column_names(conn, name))

    def _column_names(self, conn: sa.Connection, name: str) -> list[str]:
        if self.dialect == 'duckdb':
            rows = conn.execute(
                sa.text(
                    'SELECT column_name FROM information_schema.columns '
                    'WHERE table_name = :name AND table_schema = current_schema()'
                ),
                {'name': name},
            ).scalars()
            return list(rows)
        inspector = sa.inspect(conn)
        in_schema, bare = self._split(name)
        if not inspector.has_table(bare, schema=in_schema):
            return []
        return [c['name'] for c in inspector.get_columns(bare, schema=in_schema)]

    def _create(
        self, table: sa.Table, documents: Sequence[dict[str, Any]] = (), *, name: str | None = None
    ) -> list[Any] | None:
        """Create ``table``, record it in the registry and insert its first ``documents``: one step.

        Returns the keys of the inserted documents, or None when the table was there already
        (created meanwhile by another process): then nothing was written. Raises WriteFailed,
        with nothing created and nothing written (on MySQL/MariaDB the recorded table stays,
        empty, and takes later writes).
        """
        name = name or table.name  # as superduperdb knows it ('items', 'shop.items')
        try:
            with self._ddl() as conn:
                if self._exists(conn, name):
                    return None
                if self.dialect == 'mysql':  # CREATE TABLE commits by itself: the record goes first
                    self._record(conn, name)
                    conn.commit()
                    table.create(conn)
                else:
                    table.create(conn)
                    self._record(conn, name)
                if not documents:
                    return []
                keys = list(dict.fromkeys(k for doc in documents for k in doc))
                pk = next(iter(table.primary_key.columns)).name if table.primary_key.columns else None
                documents, columns, generated = _with_keys(table, pk, documents, keys)
                if generated or pk is None:
                    return self._insert_documents(conn, table, documents, columns, generated)
                # the keys are known: the bulk lane (COPY, executemany), as for an existing table
                plan = _InsertPlan(self.engine.dialect, table, columns)
                _write_planned(conn, plan, [tuple(doc.get(c) for c in columns) for doc in documents])
                return [doc[pk] for doc in documents]
        except (sa.exc.SQLAlchemyError, self.engine.dialect.loaded_dbapi.Error) as exc:
            kept = ''
            if self.dialect == 'mysql':
                kept = ' (the table was created and recorded: later writes can use it)'
            what = f'Creating table {name!r}'
            if documents:
                what += f' with its first {len(documents)} documents'
            raise WriteFailed(
                f'{what} failed and was rolled back (nothing was written){kept}: {_reason(exc)}',
                reason=_reason(exc),
            ) from exc
        finally:
            self.table(name, refresh=True)

    def _record(self, conn: sa.Connection, name: str) -> None:
        if self.registry is None or name == self.registry:
            return
        registry = self.table(self.registry)
        if registry is None:
            return
        conn.execute(registry.delete().where(registry.c['_id'] == name))  # a stale intent, or a table dropped
        conn.execute(registry.insert(), [{'_id': name, 'created_at': time.time()}])

    def _declared(self, table: str, columns: dict[str, str], primary_key: str) -> sa.Table | None:
        """``table`` as declared, when it exists with exactly these columns (one catalog query,
        no reflection: reflecting superduperdb's own tables was most of a start); else None."""
        if self.dialect == 'duckdb':  # duckdb-engine: see schema.reflect_duckdb
            return None
        in_schema, bare = self._split(table)
        quote = self.engine.dialect.identifier_preparer
        name = (
            quote.quote(bare) if in_schema is None else f'{quote.quote_schema(in_schema)}.{quote.quote(bare)}'
        )
        try:
            with self._reads.connect() as conn:
                found = conn.exec_driver_sql(f'SELECT * FROM {name} WHERE 1 = 0')
                names = [d[0] for d in found.cursor.description]
                found.close()
        except sa.exc.SQLAlchemyError:  # no such table (or not readable): the general path says
            return None
        if sorted(names) != sorted(columns):
            return None
        cols = [
            schema.primary_key_column(n, 0 if kind == 'int' else '')
            if n == primary_key
            else schema.column(n, kind)
            for n, kind in columns.items()
        ]
        key = f'{in_schema}.{bare}' if in_schema else bare
        if key in self._metadata.tables:
            self._metadata.remove(self._metadata.tables[key])
        t = self._tables[table] = sa.Table(bare, self._metadata, *cols, schema=in_schema)
        return t

    def _present(self, table: str) -> bool:
        """Whether ``table`` exists, asked without reflecting it (one catalog query)."""
        if self.dialect == 'duckdb':  # duckdb-engine's inspector: see schema.reflect_duckdb
            return self.table(table) is not None
        in_schema, bare = self._split(table)
        with self.engine.connect() as conn:
            return bool(sa.inspect(conn).has_table(bare, schema=in_schema))

    def create_index(self, table: str, columns: Sequence[str]) -> None:
        t = self._tables.get(table)
        if t is None and self.dialect != 'duckdb' and self._present(table):
            # not reflected yet: the index needs only the columns' names (CREATE INDEX ... checkfirst)
            in_schema, bare = self._split(table)
            t = sa.Table(bare, sa.MetaData(), *(sa.Column(c) for c in columns), schema=in_schema)
        if t is None:
            t = self.table(table)
        if t is None:
            return
        name = f'ix_{t.name}_{"_".join(columns)}'[:60]
        if any(index.name == name for index in t.indexes):
            return
        # MySQL/MariaDB index TEXT columns by a prefix
        # (the keyword only for MySQL: naming it imports SQLAlchemy's MySQL dialect, ~30 ms)
        prefix: dict[str, Any] = {'mysql_length': {c: 64 for c in columns}} if self.dialect == 'mysql' else {}
        index = sa.Index(name, *(t.c[c] for c in columns), **prefix)
        try:  # quiet: duckdb-engine warns on every connection that it cannot reflect indexes
            with self._ddl() as conn, quiet():
                index.create(conn, checkfirst=True)
        except sa.exc.SQLAlchemyError as exc:  # not indexable
            logger.debug('index %s not created: %s', name, _reason(exc))

    def change_source(self, db: Any, handle: Any, stop: threading.Event) -> Any:
        """PostgreSQL: triggers into a durable queue; other SQL databases: a high-water mark over
        the primary key (see :mod:`superduperdb.backends.sql.cdc`)."""
        from superduperdb.backends.sql.cdc import PostgresTriggers, SQLHighWaterMark

        if self.dialect == 'postgresql':
            return PostgresTriggers(db, handle, stop)
        return SQLHighWaterMark(db, handle, stop)

    def drop_table(self, table: str) -> None:
        with self._lock:
            t = self.table(table)
            if t is not None:
                with self.engine.begin() as conn:
                    t.drop(conn, checkfirst=True)
                self._metadata.remove(t)
                self._tables.pop(table, None)
                self._lookups.pop(table, None)
                self._views_over_ours.pop(table.lower(), None)

    def drop_own_objects(self, prefix: str) -> list[str]:
        """Drop superduperdb's views (those reading its tables), then on PostgreSQL its change-
        capture triggers and functions, then its tables, and its schema when nothing else is in
        it; what was dropped, described. One transaction where DDL is transactional."""
        from superduperdb.backends.sql.views import relations

        dropped: list[str] = []
        quote = self.engine.dialect.identifier_preparer.quote
        with self._lock, self.engine.begin() as conn:
            found = relations(conn, self.dialect)
            for name, definition in sorted(found.items()):
                if definition is not None and prefix in definition.lower():
                    conn.execute(sa.text(f'DROP VIEW IF EXISTS {quote(name)}'))
                    dropped.append(f'view {name}')
            if self.dialect == 'postgresql':
                dropped += _drop_postgres_code(conn, prefix, quote)
            cascade = ' CASCADE' if self.dialect == 'postgresql' else ''
            for name in sorted(found):
                if name.startswith(prefix) and found[name] is None:
                    conn.execute(sa.text(f'DROP TABLE IF EXISTS {quote(name)}{cascade}'))
                    dropped.append(f'table {name}')
            if self.internal_schema is not None and self.dialect == 'postgresql':
                left = conn.execute(
                    sa.text(
                        'SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace '
                        'WHERE n.nspname = :s'
                    ),
                    {'s': self.internal_schema},
                ).scalar()
                exists = conn.execute(
                    sa.text('SELECT count(*) FROM pg_namespace WHERE nspname = :s'),
                    {'s': self.internal_schema},
                ).scalar()
                if exists and not left:
                    conn.execute(sa.text(f'DROP SCHEMA {quote(self.internal_schema)}'))
                    dropped.append(f'schema {self.internal_schema}')
                    self._schema_made = False
                elif exists:
                    logger.warning('schema %s holds objects of others: kept', self.internal_schema)
        self._forget_tables()
        return dropped

    # ----- writes -----------------------------------------------------------
    @_again_if_changed
    def insert(self, table: str, documents: Sequence[dict[str, Any]], *, new_columns: bool) -> list[Any]:
        if not documents:
            return []
        existing = self.table(table)
        if existing is not None and row_keys.is_composite(existing):
            # the whole key read as one field: derived from the key's columns, never stored
            documents = [{k: v for k, v in doc.items() if k != row_keys.ROW_KEY} for doc in documents]
        names = list(dict.fromkeys(k for doc in documents for k in doc))
        self._check_values(table, documents, names)
        if existing is None:
            self._prepare_creation()
            created = self._create(self._table_from_documents(table, documents, names), documents, name=table)
            if created is not None:
                return created
            # created meanwhile by another process: write into it as into any table
        t = self._table_for_write(table, documents, names, new_columns=new_columns)
        pk = next(iter(t.primary_key.columns)).name if t.primary_key.columns else None
        documents, columns, generated = _with_keys(t, pk, documents, names)
        if not generated and pk is not None:  # the keys are known: the bulk lane (COPY, executemany)
            plan = self._insert_plan(table, tuple(columns))
            if plan is not None:
                values = [tuple(doc.get(c) for c in columns) for doc in documents]
                self._write_rows(plan, values, what=f'{len(values)} documents', table=table)
                if row_keys.is_composite(t):
                    key = row_keys.key_columns(t)
                    return [row_keys.compose([doc[c.name] for c in key]) for doc in documents]
                return [doc[pk] for doc in documents]
        try:
            with self.engine.begin() as conn:
                return self._insert_documents(conn, t, documents, columns, generated)
        except sa.exc.SQLAlchemyError as exc:
            raise self._write_failed(
                f'Inserting {len(documents)} documents into {table!r} failed and was rolled back '
                f'(nothing was written): {_reason(exc)}',
                exc,
            ) from exc

    @staticmethod
    def _insert_documents(
        conn: sa.Connection,
        t: sa.Table,
        documents: Sequence[dict[str, Any]],
        columns: Sequence[str],
        generated: bool,
    ) -> list[Any]:
        """Insert ``documents`` (see :func:`_with_keys`) into ``t`` on ``conn`` (one executemany);
        their primary keys."""
        pk = row_keys.key_columns(t)
        # executemany needs every row to name every column
        width = len(columns)
        if all(len(doc) == width for doc in documents) and all(c in documents[0] for c in columns):
            rows = list(documents)
        else:
            rows = [{c: doc.get(c) for c in columns} for doc in documents]
        if len(pk) > 1:  # a composite key: the whole key as one value
            if generated:
                stmt = t.insert().returning(*pk, sort_by_parameter_order=True)
                return [row_keys.compose(row) for row in conn.execute(stmt, rows)]
            conn.execute(t.insert(), rows)
            return [row_keys.compose([row.get(c.name) for c in pk]) for row in rows]
        if generated and pk:
            stmt = t.insert().returning(pk[0], sort_by_parameter_order=True)
            return list(conn.execute(stmt, rows).scalars())
        conn.execute(t.insert(), rows)
        return [row[pk[0].name] for row in rows] if pk else [None] * len(rows)

    @_again_if_changed
    def insert_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> bool:
        """Bulk-insert value tuples (in ``columns`` order) into an existing table, in one transaction.

        The fast lane of :meth:`insert` for writers that already hold plain stored values
        (model outputs): no documents, no type inference, no generated keys, no per-row
        statement processing. PostgreSQL (psycopg) gets ``COPY``, other databases the
        driver's ``executemany``. Returns False, having written nothing, when the table
        or one of the columns does not exist: use :meth:`insert` then.
        """
        plan = self._insert_plan(table, tuple(columns))
        if plan is None:
            return False
        if rows:
            schema.check_sizes(table, self.size_limit(), dict(zip(plan.columns, zip(*rows))))
            self._write_rows(plan, rows, what=f'{len(rows)} rows', table=table)
        return True

    def _write_rows(self, plan: _InsertPlan, rows: Sequence[Sequence[Any]], *, what: str, table: str) -> None:
        """Write value tuples with ``plan`` in one transaction: all of them, or none."""
        try:
            with self.engine.begin() as conn:
                _write_planned(conn, plan, rows)
        except (sa.exc.SQLAlchemyError, self.engine.dialect.loaded_dbapi.Error) as exc:
            raise self._write_failed(
                f'Inserting {what} into {table!r} failed and was rolled back '
                f'(nothing was written): {_reason(exc)}',
                exc,
            ) from exc

    def _write_failed(self, message: str, exc: Exception) -> WriteFailed:
        """The error of a rolled-back write; when a table changed under its cached definition
        (another program dropped a column or the table), the definitions are forgotten and the
        write methods run once more (:func:`_again_if_changed`)."""
        if _schema_change(exc) == 'definition':
            self._forget_tables()
            return _TableChangedOnWrite(message, reason=_reason(exc))
        return WriteFailed(message, reason=_reason(exc))

    def _insert_plan(self, table: str, columns: tuple[str, ...]) -> _InsertPlan | None:
        t = self.table(table)
        if t is None or any(c not in t.c for c in columns):
            return None
        plan = self._insert_plans.get((table, columns))
        if plan is None or plan.table is not t:  # built once per table version
            plan = self._insert_plans[(table, columns)] = _InsertPlan(self.engine.dialect, t, columns)
        return plan

    def _table_for_write(
        self,
        table: str,
        documents: Sequence[dict[str, Any]],
        keys: Sequence[str],
        *,
        new_columns: bool,
    ) -> sa.Table:
        self._prepare_creation()  # in case the table was dropped meanwhile: made again below
        with self._lock:
            t = self.table(table)
            if t is None:  # dropped meanwhile
                self._create(self._table_from_documents(table, documents, keys), name=table)
                t = self.table(table)
                assert t is not None
            missing = [k for k in keys if k not in t.c]
            if missing:
                refreshed = self.table(table, refresh=True)  # another process may have added them
                t = refreshed if refreshed is not None else t
                missing = [k for k in keys if k not in t.c]
            if missing and not new_columns:
                raise QueryError(
                    f'Table {table!r} has no column {", ".join(map(repr, missing))}; its columns '
                    f'are {", ".join(c.name for c in t.c)}. superduperdb does not alter tables '
                    'it did not create: add the column yourself, or write only existing columns.'
                )
            if missing:
                types = schema.infer_columns(documents, missing)
                preparer = self.engine.dialect.identifier_preparer
                with self._ddl() as conn:
                    present = set(self._column_names(conn, table))  # added meanwhile by another process?
                    for name in missing:
                        if name in present:
                            continue
                        ddl_type = schema.sql_type(types[name]).compile(dialect=self.engine.dialect)
                        if self.dialect == 'mysql' and types[name] == 'datetime':
                            ddl_type += f" COMMENT '{schema.INSTANT_COMMENT}'"
                        conn.execute(
                            sa.text(
                                f'ALTER TABLE {preparer.format_table(t)} '
                                f'ADD COLUMN {preparer.quote(name)} {ddl_type}'
                            )
                        )
                t = self.table(table, refresh=True)
                assert t is not None
            return t

    def _check_values(self, table: str, documents: Sequence[dict[str, Any]], keys: Sequence[str]) -> None:
        """Refuse values their columns (existing, or about to be created) would not give back."""
        t = self.table(table)
        types = {} if t is None else {c.name: c.type for c in t.c if c.name in keys}
        new = [k for k in keys if k not in types and k != '_id']
        if new:
            types.update(
                {k: schema.sql_type(kind) for k, kind in schema.infer_columns(documents, new).items()}
            )
        schema.check_values(table, types, documents)
        schema.check_sizes(table, self.size_limit(), schema.document_columns(documents, keys))

    def size_limit(self) -> schema.SizeLimit | None:
        """The most one row may take on this database as the driver sends it (read once; see
        :func:`schema.size_limit`); None: no limit known."""
        if not hasattr(self, '_size_limit'):
            self._size_limit = schema.size_limit(self.dialect, self._read)
        return self._size_limit

    def _table_from_documents(
        self, table: str, documents: Sequence[dict[str, Any]], keys: Sequence[str]
    ) -> sa.Table:
        """A new table's definition, its column types inferred from ``documents``."""
        sample_id = next((d['_id'] for d in documents if d.get('_id') is not None), None)
        types = schema.infer_columns(documents, [k for k in keys if k != '_id'])
        cols = [schema.primary_key_column('_id', sample_id)]
        cols += [schema.column(name, kind) for name, kind in types.items()]
        in_schema, bare = self._split(table)
        return sa.Table(bare, sa.MetaData(), *cols, schema=in_schema)

    @_again_if_changed
    def update(
        self,
        table: str,
        filter: dict[str, Any],
        update: dict[str, Any],
        *,
        many: bool,
        new_columns: bool = False,
    ) -> list[Any]:
        t = self.table(table)
        if t is None:
            return []
        values: dict[str, Any] = {}
        for op, fields in update.items():
            for key, value in fields.items():
                if '.' in key:
                    raise QueryError(
                        f'Updating inside a JSON column ({key!r}) is not supported on SQL '
                        f'databases; $set the whole {key.split(".")[0]!r} value instead.'
                    )
                if key == row_keys.ROW_KEY and row_keys.is_composite(t):
                    raise QueryError(
                        f'{key!r} of {table!r} is its whole primary key, read from the key columns '
                        f'({", ".join(c.name for c in row_keys.key_columns(t))}): update those instead.'
                    )
                if op == '$set':
                    values[key] = value
                elif op == '$unset':
                    values[key] = None
        # new columns take their type from the values $set or $inc give them
        set_docs = [{**update.get('$inc', {}), **update.get('$set', {})}]
        self._check_values(table, set_docs, list(set_docs[0]))
        t = self._table_for_write(
            table, set_docs, list(values) + list(update.get('$inc', {})), new_columns=new_columns
        )
        for key, amount in update.get('$inc', {}).items():
            values[key] = sa.func.coalesce(t.c[key], 0) + amount
        pk = self._key_columns(table, t)
        where = compile_filter(t, filter, self.dialect)
        try:
            with self.engine.begin() as conn:
                ids = self._matching_ids(conn, pk, where, many)
                if ids:
                    stmt = t.update().values(values)
                    conn.execute(stmt.where(where if many else self._key_is(t, pk, ids[0])))
        except sa.exc.SQLAlchemyError as exc:
            raise self._write_failed(
                f'Updating {table!r} failed and was rolled back: {_reason(exc)}', exc
            ) from exc
        return ids

    @_again_if_changed
    def delete(self, table: str, filter: dict[str, Any], *, many: bool) -> list[Any]:
        t = self.table(table)
        if t is None:
            return []
        pk = self._key_columns(table, t)
        where = compile_filter(t, filter, self.dialect)
        try:
            with self.engine.begin() as conn:
                ids = self._matching_ids(conn, pk, where, many)
                if ids:
                    conn.execute(t.delete().where(where if many else self._key_is(t, pk, ids[0])))
        except sa.exc.SQLAlchemyError as exc:
            message = f'Deleting from {table!r} failed and was rolled back: {_reason(exc)}'
            raise self._write_failed(message, exc) from exc
        return ids

    @staticmethod
    def _matching_ids(conn: sa.Connection, pk: Sequence[sa.Column[Any]], where: Any, many: bool) -> list[Any]:
        stmt = sa.select(*pk).where(where)
        if not many:
            stmt = stmt.order_by(*pk).limit(1)
        if len(pk) > 1:
            return [row_keys.compose(row) for row in conn.execute(stmt)]
        return list(conn.execute(stmt).scalars())

    # ----- reads ------------------------------------------------------------
    @_again_if_changed
    def count(self, table: str, filter: dict[str, Any]) -> int:
        t = self.table(table)
        if t is None:
            return 0
        stmt = sa.select(sa.func.count()).select_from(t).where(compile_filter(t, filter, self.dialect))
        return int(self._read(lambda conn: conn.execute(stmt).scalar_one()))

    @_again_if_changed
    def find(
        self,
        table: str,
        filter: dict[str, Any],
        *,
        projection: dict[str, int] | None = None,
        sort: Sequence[tuple[str, int]] = (),
        limit: int | None = None,
        skip: int = 0,
        chunk_size: int = 1000,
    ) -> Iterator[list[dict[str, Any]]]:
        t = self.table(table)
        if t is None:
            return
        pk = self._key_columns(table, t)
        columns, drop = _projected(t, pk, projection)
        stmt = sa.select(*columns).where(compile_filter(t, filter, self.dialect))
        names = [c.name for c in columns]
        whole_key = len(pk) > 1 and (projection or {}).get(row_keys.ROW_KEY, 1)
        at = [names.index(c.name) for c in pk]
        for rows in self._pages(stmt, pk, sort, limit, skip, chunk_size, t):
            chunk = [dict(zip(names, row)) for row in rows]
            if whole_key:
                for doc, row in zip(chunk, rows):
                    doc[row_keys.ROW_KEY] = row_keys.compose([row[i] for i in at])
            for name in drop:
                for doc in chunk:
                    del doc[name]
            yield chunk

    @_again_if_changed
    def get(self, table: str, key: Any) -> dict[str, Any] | None:
        # one statement per table, built once: SQLAlchemy reuses its compiled form
        stmt = self._lookups.get(table)
        if stmt is None:
            t = self.table(table)
            if t is None:
                return None
            pk = self._key_columns(table, t)
            stmt = self._lookups[table] = sa.select(t).where(
                *(c == sa.bindparam(f'sddb_key_{i}', type_=c.type) for i, c in enumerate(pk))
            )
            self._whole_keys[table] = len(pk) > 1
        whole = self._whole_keys[table]
        values = (key,)
        if whole:
            t = self.table(table)
            assert t is not None
            values = row_keys.parse(t, key)
        found = self._lookup(stmt, [key]) if not whole else None
        if found is not None:
            if not found:
                return None
            names = [c.name for c in stmt.selected_columns]
            return dict(zip(names, found[0]))
        rows = self._fetch(stmt, {f'sddb_key_{i}': v for i, v in enumerate(values)})
        if not rows:
            return None
        doc = dict(rows[0]._mapping)  # type: ignore[attr-defined]
        if whole:
            doc[row_keys.ROW_KEY] = row_keys.compose(values)
        return doc

    @_again_if_changed
    def get_many(
        self, table: str, keys: Sequence[Any], columns: Sequence[str] = ()
    ) -> list[dict[str, Any]] | None:
        """The rows whose primary key is in ``keys`` (in no order), with ``columns`` and the key
        (every column when none are named); None for a table with a composite key.

        For small, frequent lookups (the rows a vector search found, their outputs): one
        statement per table and columns, built once (an expanding ``IN`` parameter, so
        SQLAlchemy compiles it once), and the driver's rows without a Row object each.
        """
        t = self.table(table)
        if t is None:
            return []
        if len(t.primary_key.columns) > 1:
            return None
        cached = self._many.get((table, tuple(columns)))
        if cached is None or cached[0] is not t:  # reflected again: columns may have changed
            pk = t.c[self.primary_key(table)]
            selected = [pk, *(t.c[c] for c in columns if c in t.c and c != pk.name)] if columns else list(t.c)
            stmt = sa.select(*selected).where(pk.in_(sa.bindparam('sddb_keys', expanding=True)))
            cached = self._many[(table, tuple(columns))] = (t, stmt)
        stmt = cached[1]
        if not keys:
            return []
        names = [c.name for c in stmt.selected_columns]
        rows: Sequence[Sequence[Any]] | None = self._lookup(stmt, list(keys))
        if rows is None:
            rows = self._fetch(stmt, {'sddb_keys': list(keys)}, raw=True)
        return [dict(zip(names, row)) for row in rows]

    @_again_if_changed
    def get_many_joined(
        self, table: str, keys: Sequence[Any], outputs: Sequence[str]
    ) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]] | None:
        """``get_many`` of every column, and in the same statement the ``output`` of each of the
        ``outputs`` tables (keyed by ``_id``, left-joined on the row's key): ``(rows, {output
        table: [{'_id', 'output'}, ...]})``. An output table missing, or keyed by another type,
        is left out of the second part (its caller reads it on its own); None for a composite key.

        A vector search's results with their model outputs, in one round trip.
        """
        t = self.table(table)
        if t is None:
            return [], {}
        if len(t.primary_key.columns) > 1:
            return None
        pk = t.c[self.primary_key(table)]
        joined: list[tuple[str, sa.Table]] = []
        for name in outputs:
            o = self.table(name)
            if o is not None and {'_id', 'output'} <= set(o.c.keys()) and _same_kind(o.c['_id'], pk):
                joined.append((name, o))
        at = (table, tuple(outputs))
        cached = self._joined.get(at)
        if cached is None or cached[0] != [t, *(o for _, o in joined)]:  # reflected again meanwhile
            selected: list[Any] = list(t.c)
            source: Any = t
            for i, (_, o) in enumerate(joined):
                selected += [o.c['_id'].label(f'sddb_j{i}_id'), o.c['output'].label(f'sddb_j{i}_output')]
                source = source.outerjoin(o, o.c['_id'] == pk)
            stmt = (
                sa.select(*selected)
                .select_from(source)
                .where(pk.in_(sa.bindparam('sddb_keys', expanding=True)))
            )
            cached = self._joined[at] = ([t, *(o for _, o in joined)], stmt)
        stmt = cached[1]
        found: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in joined}
        if not keys:
            return [], found
        rows: Sequence[Sequence[Any]] | None = self._lookup(stmt, list(keys), joined=[o for _, o in joined])
        if rows is None:
            rows = self._fetch(stmt, {'sddb_keys': list(keys)}, raw=True)
        width = len(t.c)
        names = list(t.c.keys())
        docs = []
        for row in rows:
            docs.append(dict(zip(names, row[:width])))
            for i, (name, _) in enumerate(joined):
                if row[width + 2 * i] is not None:
                    found[name].append({'_id': row[width + 2 * i], 'output': row[width + 2 * i + 1]})
        return docs, found

    # ----- lookups by key on the driver ---------------------------------------------
    # A vector search's few lookups by primary key (its rows, their outputs, the index's change
    # counter) are each a small statement whose time went mostly to SQLAlchemy's execution
    # pipeline (0.2 ms of 0.36 ms on PostgreSQL, 0.06 of 0.08 ms on SQLite, measured): they
    # run as SQL text prepared once per statement and key count, on the pooled connection's
    # driver cursor, with the columns' result processing applied as SQLAlchemy would.
    _MARKS: ClassVar[dict[str, str]] = {'qmark': '?', 'format': '%s', 'pyformat': '%s'}

    def _lookup(
        self, stmt: sa.Select[Any], keys: list[Any], *, joined: Sequence[sa.Table] = ()
    ) -> list[Any] | None:
        """The rows of ``stmt`` (a select of one table by its one-column primary key, with the
        ``_id`` and ``output`` of each ``joined`` table left-joined on that key) for ``keys`` on
        the driver; None where that is not possible (then SQLAlchemy runs it)."""
        if len(keys) > _LOOKUP_KEYS:
            return None  # a large read (a chunk's outputs): SQLAlchemy's cached statement serves it
        at = (id(stmt), len(keys))
        plan = self._plans.get(at)
        if plan is None or plan[0] is not stmt:  # a statement built again (the table reflected again)
            plan = self._plans[at] = (stmt, *self._lookup_plan(stmt, len(keys), joined))
        _, sql, processors = plan
        if sql is None:
            return None

        def run(conn: sa.Connection) -> tuple[Sequence[Sequence[Any]], list[Any]]:
            cursor = conn.connection.cursor()
            try:
                cursor.execute(sql, keys)
                rows = cursor.fetchall()
                known = (
                    processors
                    if processors is not None
                    else self._result_processors(stmt, cursor.description)
                )
                return rows, known
            finally:
                cursor.close()

        rows, found = self._read(run)
        if processors is None:
            self._plans[at] = (stmt, sql, found)
        return list(_processed(rows, found))

    def _lookup_plan(
        self, stmt: sa.Select[Any], count: int, joined: Sequence[sa.Table]
    ) -> tuple[str | None, Any]:
        """(SQL text, None: result processors found at the first run), or (None, None)."""
        mark = self._MARKS.get(self.engine.dialect.paramstyle)
        table = stmt.selected_columns[0].table
        if mark is None or not isinstance(table, sa.Table) or len(table.primary_key.columns) != 1:
            return None, None
        pk = list(table.primary_key.columns)
        try:
            if pk[0].type.python_type not in (int, str):
                return None, None  # other key types go through their bind processing
        except NotImplementedError:
            return None, None
        prep = self.engine.dialect.identifier_preparer
        width = len(stmt.selected_columns) - 2 * len(joined)
        selected = [f't.{prep.quote(c.name)}' for c in list(stmt.selected_columns)[:width]]
        source = f'{prep.format_table(table)} t'
        for i, o in enumerate(joined):
            selected += [f'j{i}.{prep.quote("_id")}', f'j{i}.{prep.quote("output")}']
            on = f'j{i}.{prep.quote("_id")} = t.{prep.quote(pk[0].name)}'
            source += f' LEFT OUTER JOIN {prep.format_table(o)} j{i} ON {on}'
        sql = f'SELECT {", ".join(selected)} FROM {source} WHERE t.{prep.quote(pk[0].name)}'
        if '%' in sql:
            return None, None  # would need escaping for the driver's %s markers
        sql += f' = {mark}' if count == 1 else f' IN ({", ".join([mark] * count)})'
        return sql, None

    @_again_if_changed
    def keys(self, table: str, filter: dict[str, Any]) -> list[Any]:
        t = self.table(table)
        if t is None:
            return []
        pk = self._key_columns(table, t)
        # unordered: the planner's choice
        stmt = sa.select(*pk).where(compile_filter(t, filter, self.dialect))
        rows = self._fetch(stmt, raw=True)  # driver rows: no Row objects
        if len(pk) > 1:
            return [row_keys.compose(row) for row in rows]
        return list(map(operator.itemgetter(0), rows))

    def keys_of_other_width(
        self, table: str, column: str, width: int, filter: dict[str, Any], *, limit: int = 100
    ) -> list[Any] | None:
        """Keys of up to ``limit`` rows whose ``column`` is stored as bytes of another length
        than ``width`` (missing values excluded), found by the database in one scan; None when
        this database cannot measure the column (then read the rows instead)."""
        t = self.table(table)
        if t is None or column not in t.c:
            return None
        pk = self._key_columns(table, t)
        size = sa.func.length if self.dialect == 'sqlite' else sa.func.octet_length
        stmt = (
            sa.select(*pk)
            .where(
                compile_filter(t, filter, self.dialect), t.c[column].is_not(None), size(t.c[column]) != width
            )
            .limit(limit)
        )
        try:
            rows = self._fetch(stmt, raw=True)
        except BackendError:
            return None
        if len(pk) > 1:
            return [row_keys.compose(row) for row in rows]
        return [row[0] for row in rows]

    @_again_if_changed
    def find_columns(
        self,
        table: str,
        filter: dict[str, Any],
        columns: Sequence[str],
        *,
        sort: Sequence[tuple[str, int]] = (),
        limit: int | None = None,
        skip: int = 0,
        chunk_size: int = 1000,
    ) -> Iterator[dict[str, list[Any]]]:
        """:meth:`find`, column-wise: each chunk maps the primary key and ``columns`` to lists of values.

        For bulk readers (predict) that want a column at a time: no dict per row.
        A column the table lacks comes back as ``None`` values.
        """
        t = self.table(table)
        if t is None:
            return
        pk = self._key_columns(table, t)
        in_key = {c.name for c in pk}
        selected = [*pk, *(t.c[c] for c in dict.fromkeys(columns) if c in t.c and c not in in_key)]
        names = [c.name for c in selected]
        stmt = sa.select(*selected).where(compile_filter(t, filter, self.dialect))
        for rows in self._pages(stmt, pk, sort, limit, skip, chunk_size, t, raw=True):
            # a list per column, by index: several times faster than transposing with zip(*rows)
            found = {name: list(map(operator.itemgetter(i), rows)) for i, name in enumerate(names)}
            if len(pk) > 1:
                key = row_keys.ROW_KEY, row_keys.compose_columns([found[c.name] for c in pk])
            else:
                key = pk[0].name, found[pk[0].name]
            yield {key[0]: key[1], **{c: found.get(c) or [None] * len(rows) for c in columns}}

    def _pages(
        self,
        stmt: sa.Select[Any],
        pk: Sequence[sa.Column[Any]],
        sort: Sequence[tuple[str, int]],
        limit: int | None,
        skip: int,
        chunk_size: int,
        t: sa.Table,
        *,
        raw: bool = False,
    ) -> Iterator[Sequence[Sequence[Any]]]:
        """The rows of ``stmt`` (which selects ``pk``) page by page (``raw``: see :meth:`_fetch`)."""
        remaining = limit
        if sort:
            # offset pages, ordered by the sort keys with the key as tie-breaker
            ordered = stmt.order_by(*compile_sort(t, sort, self.dialect), *pk)
            offset = skip
            while remaining is None or remaining > 0:
                n = chunk_size if remaining is None else min(chunk_size, remaining)
                chunk = self._fetch(ordered.offset(offset).limit(n), raw=raw)
                if chunk:
                    yield chunk
                if len(chunk) < n:
                    return
                offset += n
                remaining = None if remaining is None else remaining - n
            return
        # keyset pages in primary-key order: no long-lived cursor, stable under writes; one
        # statement for every page after the first (the last key is a parameter), compiled once
        names = [c.name for c in stmt.selected_columns]
        at = [names.index(c.name) for c in pk]
        ordered = stmt.order_by(*pk)
        if len(pk) > 1:  # a composite key: rows after the last one's key, compared as a row value
            after = ordered.where(row_keys.after(t))
        else:
            after = ordered.where(pk[0] > sa.bindparam('sddb_keyset_after_0', type_=pk[0].type))
        pages: dict[int, sa.Select[Any]] = {}
        last: Any = None
        offset = skip
        while remaining is None or remaining > 0:
            n = chunk_size if remaining is None else min(chunk_size, remaining)
            if last is None:
                chunk = self._fetch(ordered.offset(offset).limit(n) if offset else ordered.limit(n), raw=raw)
            else:
                if n not in pages:
                    pages[n] = after.limit(n)
                chunk = self._fetch(pages[n], last, raw=raw)
            if chunk:
                last = {f'sddb_keyset_after_{i}': chunk[-1][j] for i, j in enumerate(at)}
                yield chunk
            if len(chunk) < n:
                return
            remaining = None if remaining is None else remaining - n

    def _fetch(
        self, stmt: sa.Select[Any], params: dict[str, Any] | None = None, *, raw: bool = False
    ) -> Sequence[Sequence[Any]]:
        """The rows of ``stmt``: SQLAlchemy rows, or with ``raw`` the driver's own tuples with
        the column types' result processing applied column by column (no Row object per row)."""

        def run(conn: sa.Connection) -> Sequence[Sequence[Any]]:
            result = conn.execute(stmt, params)
            if not raw:
                return result.fetchall()
            cursor = result.cursor
            rows = cursor.fetchall()
            processors = self._result_processors(stmt, cursor.description)
            result.close()
            return _processed(rows, processors)

        return self._read(run)

    def _read(self, run: Callable[[sa.Connection], _T]) -> _T:
        """``run(connection)`` on a read connection (the pinned one, see :meth:`reading`).

        A connection the server dropped since its last use (a restart, an admin's kill) is
        replaced and the read run again, once: as SQLAlchemy does on a disconnect, every pooled
        connection goes (they were opened to the same server). So is a connection whose
        prepared statement another program's ``ALTER COLUMN ... TYPE`` outdated (PostgreSQL:
        "cached plan must not change result type", for every later run of that statement on
        that connection): the server forgets a connection's prepared statements with it.
        A table changed under its cached definition (a column dropped or renamed) is
        forgotten here and raises :class:`_TableChanged`, which the read methods retry once
        (see :func:`_again_if_changed`). Other errors are a BackendError.
        """
        error: Exception | None = None
        for attempt in (1, 2):
            with self._read_connection() as conn:
                try:
                    return run(conn)
                except sa.exc.DBAPIError as exc:  # through SQLAlchemy, which invalidated the pool
                    error, dropped = exc, exc.connection_invalidated
                except self.engine.dialect.loaded_dbapi.Error as exc:  # on the driver's own cursor
                    error = exc
                    dropped = self.engine.dialect.is_disconnect(exc, conn.connection, None)
                    if dropped:
                        conn.invalidate(exc)
                        self.engine.pool.dispose()
                except sa.exc.SQLAlchemyError as exc:
                    error, dropped = exc, False
                if not dropped and _schema_change(error) == 'plan':
                    dropped = True  # every pooled connection may hold the outdated statement
                    conn.invalidate(error)
                    self.engine.pool.dispose()
            if not dropped or attempt == 2:
                break
            self._replace_pinned()
        assert error is not None
        if _schema_change(error) == 'definition':
            self._forget_tables()
            raise _TableChanged(
                f'Query failed: {_reason(error)}. The table was changed by another program since '
                'this process read its definition; it is read again at the next query.'
            ) from error
        raise BackendError(f'Query failed: {_reason(error)}') from error

    def _forget_tables(self) -> None:
        """Drop every cached table definition and the statements built from them (read again
        when next used): after another program's schema change, for its table and any other."""
        with self._lock:
            for t in list(self._metadata.tables.values()):
                self._metadata.remove(t)
            for cache in (self._tables, self._plans, self._joined, self._insert_plans, self._lookups):
                cache.clear()
            self._many.clear()
            self._whole_keys.clear()
            self._views_over_ours.clear()

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """Run this thread's lookups on one pooled connection until the block ends (the few
        statements of one vector search: one checkout instead of one per statement)."""
        if self._pinned() is not None:
            yield
            return
        self._local.pinned = self._reads.connect()
        try:
            yield
        finally:
            pinned, self._local.pinned = self._local.pinned, None
            pinned.close()

    def _pinned(self) -> sa.Connection | None:
        return getattr(self._local, 'pinned', None)

    def _replace_pinned(self) -> None:
        """After the server dropped the pinned connection: pin a new one for the rest of the block."""
        pinned = self._pinned()
        if pinned is not None:
            pinned.close()
            self._local.pinned = self._reads.connect()

    @contextlib.contextmanager
    def _read_connection(self) -> Iterator[sa.Connection]:
        pinned = self._pinned()
        if pinned is not None:
            yield pinned
        else:
            with self._reads.connect() as conn:
                yield conn

    def _result_processors(self, stmt: sa.Select[Any], description: Any) -> list[Any]:
        dialect = self.engine.dialect
        return [
            c.type.dialect_impl(dialect).result_processor(dialect, d[1])
            for c, d in zip(stmt.selected_columns, description)
        ]

    def execute_raw(self, statement: Any) -> list[dict[str, Any]]:
        """Run a SQLAlchemy statement (the escape hatch) and return rows as dicts."""
        try:
            with self.engine.begin() as conn:
                if self.dialect == 'postgresql':  # raw writes are not triggered directly: let cdc see them
                    conn.exec_driver_sql(f"SET LOCAL {ORIGIN_SETTING} = ''")
                result = conn.execute(statement)
                return [dict(row) for row in result.mappings()] if result.returns_rows else []
        except sa.exc.SQLAlchemyError as exc:
            raise BackendError(f'Query failed: {_reason(exc)}') from exc

    def set_fields(self, table: str, updates: Sequence[tuple[Any, dict[str, Any]]]) -> None:
        """Set different values on different rows: one executemany per set of columns."""
        t = self.table(table)
        if t is None or not updates:
            return
        pk = self._key_columns(table, t)
        names = list(dict.fromkeys(name for _, values in updates for name in values))
        schema.check_sizes(table, self.size_limit(), schema.document_columns([u for _, u in updates], names))
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for row_id, fields in updates:
            columns = tuple(sorted(fields))
            key = row_keys.parse(t, row_id) if len(pk) > 1 else (row_id,)
            params = {
                **{f'_pk{i}': v for i, v in enumerate(key)},
                **{f'_v{i}': fields[c] for i, c in enumerate(columns)},
            }
            groups.setdefault(columns, []).append(params)
        where = sa.and_(*(c == sa.bindparam(f'_pk{i}') for i, c in enumerate(pk)))
        try:
            with self.engine.begin() as conn:
                for columns, params_list in groups.items():
                    values: dict[str, Any] = {c: sa.bindparam(f'_v{i}') for i, c in enumerate(columns)}
                    conn.execute(t.update().where(where).values(values), params_list)
        except sa.exc.SQLAlchemyError as exc:
            raise WriteFailed(f'Update of {table!r} failed and was rolled back: {_reason(exc)}') from exc

    def close(self) -> None:
        self.engine.dispose()


# SQL types by the column type names of superduperdb.backends.base.COLUMN_TYPES (JSON first: on
# some dialects it is a String; Boolean before Integer: MySQL's reflected BOOL is a TINYINT)
_KINDS: tuple[tuple[type, str], ...] = (
    (sa.JSON, 'json'),
    (sa.Boolean, 'bool'),
    (sa.Integer, 'int'),
    (sa.Float, 'float'),
    (sa.Numeric, 'float'),
    (sa.types._Binary, 'bytes'),  # LargeBinary, and MySQL's LONGBLOB
    (sa.String, 'str'),
)


def _write_planned(conn: sa.Connection, plan: _InsertPlan, rows: Sequence[Sequence[Any]]) -> None:
    """Write value tuples with ``plan`` on ``conn``: COPY where it can, else one executemany."""
    if plan.copy is not None and plan.copyable(rows):
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        with cursor, cursor.copy(plan.copy) as copy:
            for row in rows:
                copy.write_row(row)
    elif plan.sql is not None:
        conn.exec_driver_sql(plan.sql, plan.bind(rows))
    else:
        conn.execute(plan.table.insert(), [dict(zip(plan.columns, row)) for row in rows])


#: Seconds a process waits for another's schema change (a CREATE or ALTER TABLE) on MySQL/MariaDB.
DDL_LOCK_TIMEOUT = 60
# the lock's name: one per database, within GET_LOCK's 64 characters
_MYSQL_LOCK = "CONCAT('superduperdb.ddl.', SHA1(DATABASE()))"


def _with_keys(
    t: sa.Table, pk: str | None, documents: Sequence[dict[str, Any]], keys: Sequence[str]
) -> tuple[Sequence[dict[str, Any]], list[str], bool]:
    """``(documents, columns, generated)``: string ``_id`` keys made here for documents without one;
    ``generated``: whether the database still makes some keys (integer keys)."""
    generated = pk is not None and any(pk not in doc for doc in documents)
    columns = [k for k in keys if k in t.c]
    if pk == '_id' and generated and isinstance(t.c['_id'].type, sa.String):
        documents = [doc if '_id' in doc else {**doc, '_id': new_id()} for doc in documents]
        columns = list(dict.fromkeys([*columns, '_id']))
        generated = False
    return documents, columns, generated


#: A PostgreSQL session setting that marks superduperdb's own connections. Writes made
#: through them start their watchers' jobs directly, so change-capture triggers skip them.
ORIGIN_SETTING = 'superduperdb.origin'


#: Where superduperdb's own objects go on PostgreSQL in a database it has not been installed in
#: yet (``internal_schema`` unset); an installation that predates it keeps its schema.
DEFAULT_INTERNAL_SCHEMA = 'superduperdb'


def _internal_schema(engine: sa.Engine, dialect: str, configured: str | None) -> str | None:
    """The schema for superduperdb's own objects, None for the connection's own schema.

    ``configured`` names it (the connection's own schema keeps them beside the user's tables).
    Unset: :data:`DEFAULT_INTERNAL_SCHEMA` on PostgreSQL, unless superduperdb's tables are in
    the connection's schema already (installed there before it became the default)."""
    if configured == '' or dialect != 'postgresql':  # the others have no schemas to keep them apart
        return None
    with engine.connect() as conn:
        user = conn.execute(sa.text('SELECT current_schema()')).scalar()
        there = conn.execute(
            sa.text("SELECT to_regclass(quote_ident(current_schema()) || '._superduper_components')")
        ).scalar()
    if configured is not None:
        return None if configured == user else configured
    if there is not None or user in (None, DEFAULT_INTERNAL_SCHEMA):  # None: no schema to call its own
        if there is not None:
            logger.debug("superduperdb's tables are in schema %s (installed there): kept there", user)
        return None
    return DEFAULT_INTERNAL_SCHEMA


def _use_internal_schema(engine: sa.Engine, dialect: str, internal: str) -> str:
    """Put ``internal`` first in every connection's search path, so that superduperdb's tables,
    queue, functions, outputs and views are made there; returns the user's own schema. The
    schema itself is made before the first of them (:meth:`SQLBackend.make_internal_schema`)."""
    quote = engine.dialect.identifier_preparer.quote
    with engine.connect() as conn:
        user = conn.execute(sa.text('SELECT current_schema()')).scalar()
        path = conn.execute(sa.text('SHOW search_path')).scalar()
    if user is None or user == internal:
        raise ConfigError(
            f'internal_schema = {internal!r} needs a schema of your own for your tables, other than it; '
            f'the connection has {user!r} (search_path {path!r}).'
        )
    setting = f'SET search_path TO {quote(internal)}, {path}'

    @sa.event.listens_for(engine, 'connect')
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(setting)
        cursor.close()
        dbapi_connection.commit()

    engine.pool.dispose()  # connections opened before get the path too
    return str(user)


def _drop_postgres_code(conn: sa.Connection, prefix: str, quote: Callable[[str], str]) -> list[str]:
    """Drop superduperdb's triggers (on any table of the database) and its functions (in the
    current schema, where it made them); what was dropped, described."""
    dropped = []
    triggers = conn.execute(
        sa.text(
            'SELECT t.tgname, n.nspname, c.relname FROM pg_trigger t '
            'JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace '
            'WHERE NOT t.tgisinternal AND t.tgname LIKE :p ORDER BY 3, 1'
        ),
        {'p': prefix.replace('_', '\\_') + '%'},
    ).all()
    for name, schema_name, table in triggers:
        conn.execute(sa.text(f'DROP TRIGGER IF EXISTS {quote(name)} ON {quote(schema_name)}.{quote(table)}'))
        dropped.append(f'trigger {name} on {schema_name}.{table}')
    functions = conn.execute(
        sa.text(
            'SELECT p.proname, pg_get_function_identity_arguments(p.oid) FROM pg_proc p '
            'JOIN pg_namespace n ON n.oid = p.pronamespace '
            'WHERE n.nspname = current_schema() AND p.proname LIKE :p ORDER BY 1'
        ),
        {'p': prefix.replace('_', '\\_') + '%'},
    ).all()
    for name, arguments in functions:
        conn.execute(sa.text(f'DROP FUNCTION IF EXISTS {quote(name)}({arguments})'))
        dropped.append(f'function {name}')
    return dropped


def _mark_sessions(engine: sa.Engine) -> None:
    @sa.event.listens_for(engine, 'connect')
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"SET {ORIGIN_SETTING} = 'datalayer'")
        cursor.close()
        dbapi_connection.commit()

    engine.pool.dispose()  # connections opened before (a connect probe) get the mark too


class _InsertPlan:
    """How :meth:`SQLBackend.insert_rows` writes ``columns`` of one table: built once, reused per chunk."""

    # what COPY's text format writes the same way the driver's parameters do
    _COPY_TYPES: ClassVar[frozenset[type]] = frozenset({str, int, float, bool, bytes})

    def __init__(self, dialect: sa.Dialect, table: sa.Table, columns: Sequence[str]) -> None:
        self.table = table
        self.columns = tuple(columns)
        types = [table.c[c].type.dialect_impl(dialect) for c in columns]
        self.processors = [t.bind_processor(dialect) for t in types]
        self.python_types = [_python_type(t) for t in types]
        quote = dialect.identifier_preparer.quote
        names = ', '.join(quote(c) for c in columns)
        target = dialect.identifier_preparer.format_table(table)
        self.copy: str | None = None
        if dialect.name == 'postgresql' and dialect.driver == 'psycopg':
            self.copy = f'COPY {target} ({names}) FROM STDIN'
        marks = _placeholders(dialect.paramstyle, len(columns))
        self.sql = None if marks is None else f'INSERT INTO {target} ({names}) VALUES ({marks})'

    def copyable(self, rows: Sequence[Sequence[Any]]) -> bool:
        """Whether every value has its column's own Python type (or is None).

        COPY then stores exactly what an INSERT would (for these types the bind
        processors only check or wrap), and never meets the casts an INSERT may apply.
        """
        for kind, values in zip(self.python_types, zip(*rows)):
            if kind not in self._COPY_TYPES or not set(map(type, values)) <= {kind, type(None)}:
                return False
        return True

    def bind(self, rows: Sequence[Sequence[Any]]) -> Sequence[Sequence[Any]]:
        if not any(self.processors):
            return rows if isinstance(rows[0], tuple) else [tuple(row) for row in rows]
        return [tuple(v if p is None else p(v) for p, v in zip(self.processors, row)) for row in rows]


def _python_type(column_type: Any) -> type | None:
    try:
        kind = column_type.python_type
    except NotImplementedError:
        return None
    return kind if isinstance(kind, type) else None


def _placeholders(paramstyle: str, n: int) -> str | None:
    """``n`` positional parameter markers in the driver's style (None: a named style)."""
    if paramstyle == 'qmark':
        return ', '.join(['?'] * n)
    if paramstyle in ('format', 'pyformat'):
        return ', '.join(['%s'] * n)
    if paramstyle == 'numeric':
        return ', '.join(f':{i}' for i in range(1, n + 1))
    if paramstyle == 'numeric_dollar':
        return ', '.join(f'${i}' for i in range(1, n + 1))
    return None


def _projected(
    t: sa.Table, pk: Sequence[sa.Column[Any]], projection: dict[str, int] | None
) -> tuple[list[Any], list[str]]:
    """The columns to select (always the key's: pages continue from it), and those to drop after.

    A single-column key is kept unless the projection excludes it (as MongoDB's ``_id``); the
    columns of a composite key follow the projection, its whole key (``_key``) is kept unless
    excluded.
    """
    if not projection:
        return list(t.c), []
    tops = {key.split('.')[0]: value for key, value in projection.items()}
    tops.pop(row_keys.ROW_KEY, None)
    keep = [tops.pop(pk[0].name, 1)] if len(pk) == 1 else []
    if any(tops.values()):  # inclusion (a dotted path selects its whole top-level column)
        cols = [t.c[name] for name in tops if name in t.c]
    else:
        cols = [c for c in t.c if c.name not in tops]
    drop = [c.name for c in pk if c not in cols] if len(pk) > 1 else [] if keep[0] else [pk[0].name]
    return [*pk, *[c for c in cols if c not in pk]], drop


#: Lookups of up to this many keys run on the driver (a vector search's rows); one SQL text is
#: kept per statement and key count, so larger ones, of many different counts, are not.
_LOOKUP_KEYS = 100


def _processed(rows: Sequence[Sequence[Any]], processors: Sequence[Any]) -> Sequence[Sequence[Any]]:
    """Driver rows with each column's result processing (as SQLAlchemy's types do it) applied."""
    if not any(processors) or not rows:
        return rows
    columns = [
        list(values) if p is None else [p(v) for v in values] for p, values in zip(processors, zip(*rows))
    ]
    return list(zip(*columns))


def _same_kind(a: sa.Column[Any], b: sa.Column[Any]) -> bool:
    """Whether two key columns hold values of one Python type (so that a join on them is valid)."""
    try:
        return a.type.python_type is b.type.python_type
    except NotImplementedError:
        return False


#: SQLSTATEs and MySQL/MariaDB error numbers of a column or table that is not there
_UNDEFINED_STATES = frozenset({'42703', '42P01'})
_UNDEFINED_MYSQL = frozenset({1054, 1146})


def _schema_change(exc: BaseException | None) -> str | None:
    """What a failed read says changed under this process's cached statements: ``'plan'``
    (PostgreSQL: a prepared statement whose result columns changed type), ``'definition'``
    (a column or table of a cached table definition is gone), or None. superduperdb's
    statements name only columns read from the table's definition, so a missing column
    means the definition is out of date, not a mistake in the query."""
    orig = getattr(exc, 'orig', None) or exc
    text = str(orig).lower()
    state = getattr(orig, 'sqlstate', None)
    if state == '0A000' and 'cached plan' in text:
        return 'plan'
    if state in _UNDEFINED_STATES:
        return 'definition'
    args = getattr(orig, 'args', ())
    if args and isinstance(args[0], int) and args[0] in _UNDEFINED_MYSQL:
        return 'definition'
    if type(orig).__module__.startswith('sqlite3') and ('no such column' in text or 'no such table' in text):
        return 'definition'
    if type(orig).__name__ in ('BinderException', 'CatalogException') and (
        'not found' in text or 'does not have a column' in text or 'does not exist' in text
    ):  # DuckDB
        return 'definition'
    return None


def _reason(exc: Exception) -> str:
    """The driver's own message, without SQLAlchemy's statement dump (it may hold data)."""
    orig = getattr(exc, 'orig', None)
    return str(orig if orig is not None else exc).strip().splitlines()[0]


def _mark_mariadb_json(conn: sa.Connection, table: sa.Table) -> None:
    """MariaDB reports JSON columns as LONGTEXT with a json_valid() check: restore the JSON type.

    Floating-point columns come back as floats (reflected, they would read as Decimal), and
    BOOLEAN (TINYINT(1)) columns as booleans.
    """
    rows = conn.execute(
        sa.text(
            'SELECT CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS '
            'WHERE CONSTRAINT_SCHEMA = DATABASE() AND TABLE_NAME = :name'
        ),
        {'name': table.name},
    ).scalars()
    for clause in rows:
        for column in table.c:
            if f'json_valid(`{column.name}`)' in clause:
                column.type = sa.JSON()
    from sqlalchemy.dialects import mysql

    for column in table.c:  # MySQL's reflected DOUBLE/FLOAT read back as Decimal: keep floats floats
        if isinstance(column.type, sa.Float):
            column.type.asdecimal = False
        elif isinstance(column.type, mysql.TINYINT) and column.type.display_width == 1:
            column.type = sa.Boolean()  # BOOLEAN is TINYINT(1): read True/False, as written
