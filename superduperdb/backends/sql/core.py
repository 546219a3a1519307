"""The SQL backend's core: the engine, the cached table definitions, and the read path.

:class:`SQLCore` opens the database (its dialect's facts, PostgreSQL's internal schema and
session mark), reflects and caches tables (:meth:`SQLCore.table`), and runs every read on a
pooled or pinned connection, once more after a dropped connection or an outdated statement
(:meth:`SQLCore._read`). The rest of the backend is built on it: reads.py, ddl.py, writes.py,
and :class:`~superduperdb.backends.sql.backend.SQLBackend` in backend.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import sqlalchemy as sa

from superduperdb.backends.base import DataBackend
from superduperdb.backends.sql import dialects, schema
from superduperdb.backends.sql import keys as row_keys
from superduperdb.backends.sql.errors import TableChanged, reason, schema_change
from superduperdb.base import forks
from superduperdb.base.exceptions import BackendError, QueryError

if TYPE_CHECKING:
    from superduperdb.backends.sql.inserts import InsertPlan

_T = TypeVar('_T')


class SQLCore(DataBackend):
    """The SQL backend's ground floor: its engine, the table definitions it caches, and the
    read path every query and lookup takes (see :class:`~superduperdb.backends.sql.backend.SQLBackend`)."""

    self_describing: ClassVar[bool] = False
    has_schema: ClassVar[bool] = True

    def __init__(
        self, engine: sa.Engine, *, internal_schema: str | None = None, facts: dialects.Dialect | None = None
    ) -> None:
        self.engine = engine
        self.dialect = dialects.name_of(engine)
        #: what this database does its own way (see dialects.py; a backend of its own passes its own)
        self.facts = facts or dialects.of(self.dialect)
        #: the user's schema when superduperdb's own tables live in ``internal_schema`` (PostgreSQL)
        self.user_schema: str | None = None
        #: the schema superduperdb's own objects go to (PostgreSQL), made before the first of them
        self.internal_schema: str | None = None
        self._schema_made = False
        internal = dialects.internal_schema(engine, self.dialect, internal_schema)
        if internal:
            self.user_schema = dialects.use_internal_schema(engine, self.dialect, internal)
            self.internal_schema = internal
        #: called before a table is created (the metadata store makes its own tables first)
        self._before_create: Callable[[], None] | None = None
        self.single_writer = self.facts.single_writer  # type: ignore[misc]
        if self.facts.prepare_engine is not None:  # DuckDB: fields named at, asof, semi... quoted
            self.facts.prepare_engine(engine)
        self._metadata = sa.MetaData()
        self._tables: dict[str, sa.Table] = {}
        self._lock = threading.RLock()
        self._local = threading.local()  # the connection reading() pins, per thread
        self._plans: dict[tuple[int, int], Any] = {}  # _lookup's SQL text by statement and key count
        self._joined: dict[tuple[str, tuple[str, ...]], tuple[list[sa.Table], sa.Select[Any]]] = {}
        self._insert_plans: dict[tuple[str, tuple[str, ...]], InsertPlan] = {}
        self._lookups: dict[str, sa.Select[Any]] = {}
        #: Reads.keys's SQL text and values by table and filter (see Reads._keys_on_driver)
        self._key_sql: dict[tuple[str, str], tuple[sa.Table, str | None, Any]] = {}
        #: Reads._fetch_columns's compiled page statements by identity (see Reads._page_plan)
        self._page_sql: dict[int, tuple[sa.Select[Any], Any]] = {}
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
        if self.facts.marks_origin:
            dialects.mark_sessions(engine)
        if self.facts.autocommit_reads:
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
            self._unregister(in_schema, bare)
            self._tables.pop(name, None)
            self._lookups.pop(name, None)
            with self.engine.connect() as conn:
                if not self.facts.inspects:
                    table = (self.facts.reflect or schema.reflect_duckdb)(conn, self._metadata, name)
                else:
                    table = self._reflect(conn, name, in_schema, bare)
            if table is not None:
                schema.mark_instants(table, self.dialect)
            if table is not None:
                self._tables[name] = table
            return table

    def _reflect(self, conn: sa.Connection, name: str, in_schema: str | None, bare: str) -> sa.Table | None:
        """``name`` reflected on an inspecting dialect: by its columns and primary key, all that
        superduperdb reads of a table (schema.reflect_lean); whole where a column is not a plain
        one (a server default, a computed or identity column)."""
        table, whole = None, False
        try:
            table = schema.reflect_lean(conn, self._metadata, bare, in_schema)
        except (sa.exc.DBAPIError, NotImplementedError):
            conn.rollback()
            self._unregister(in_schema, bare)
            whole = True
        if whole and sa.inspect(conn).has_table(bare, schema=in_schema):
            try:
                table = sa.Table(bare, self._metadata, schema=in_schema, autoload_with=conn)
            except (sa.exc.DBAPIError, NotImplementedError):
                reflect = self.facts.reflect
                if reflect is None:
                    raise
                # a detected dialect whose reflection fails here (duckdb-engine's):
                # the SQL standard's information_schema from now on
                conn.rollback()
                self.facts = dataclasses.replace(self.facts, inspects=False)
                table = reflect(conn, self._metadata, name)
        if self.facts.fix_reflected is not None and table is not None:  # MariaDB's JSON
            self.facts.fix_reflected(conn, table)
        return table

    def _unregister(self, in_schema: str | None, bare: str) -> None:
        """Drop table ``bare``'s cached definition from this backend's MetaData, if it has one."""
        key = f'{in_schema}.{bare}' if in_schema else bare  # as MetaData knows it
        if key in self._metadata.tables:
            self._metadata.remove(self._metadata.tables[key])

    def has_table(self, table: str) -> bool:
        return self.table(table) is not None

    def columns(self, table: str, *, refresh: bool = False) -> list[str] | None:
        t = self.table(table, refresh=refresh)
        return None if t is None else [c.name for c in t.c]

    def _split(self, name: str) -> tuple[str | None, str]:
        """``'shop.items'`` -> ``('shop', 'items')``: a table in a PostgreSQL schema (MySQL: database)."""
        in_schema, dot, bare = name.rpartition('.')
        if not dot:
            # with an internal schema first in the search path, the user's tables are named with theirs
            internal = self.user_schema is not None and name.startswith('_superduper')
            return (None if internal or self.user_schema is None else self.user_schema), name
        if not self.facts.schemas:
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
        key = self.primary_key(table)
        if key not in t.c:
            raise QueryError(
                f'Table {table!r} has no primary key that {self.dialect} reports, and no {key!r} '
                'column: superduperdb reads rows page by page by their key. Give the table a '
                f'primary key, or a {key!r} column of unique values.'
            )
        return [t.c[key]]

    @staticmethod
    def _key_is(t: sa.Table, pk: Sequence[sa.Column[Any]], key: Any) -> sa.ColumnElement[bool]:
        """The row whose key is ``key``."""
        return row_keys.equals(t, key) if len(pk) > 1 else pk[0] == key

    def _read(self, run: Callable[[sa.Connection], _T]) -> _T:
        """``run(connection)`` on a read connection (the pinned one, see :meth:`reading`).

        A connection the server dropped since its last use (a restart, an admin's kill) is
        replaced and the read run again, once: as SQLAlchemy does on a disconnect, every pooled
        connection goes (they were opened to the same server). So is a connection whose
        prepared statement another program's ``ALTER COLUMN ... TYPE`` outdated (PostgreSQL:
        "cached plan must not change result type", for every later run of that statement on
        that connection): the server forgets a connection's prepared statements with it.
        A table changed under its cached definition (a column dropped or renamed) is
        forgotten here and raises :class:`TableChanged`, which the read methods retry once
        (see :func:`~superduperdb.backends.sql.errors.again_if_changed`). Other errors are a BackendError.
        """
        # Not map_driver_errors: a dropped connection or an outdated statement is run again
        # first, and a changed table raises TableChanged; only what is left is a BackendError.
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
                if not dropped and schema_change(error) == 'plan':
                    dropped = True  # every pooled connection may hold the outdated statement
                    conn.invalidate(error)
                    self.engine.pool.dispose()
            if not dropped or attempt == 2:
                break
            self._replace_pinned()
        assert error is not None
        raise self._read_failed(error) from error

    def _read_failed(self, error: Exception) -> Exception:
        """The error a failed read raises: :class:`TableChanged` (the table's cached definition
        forgotten) when another program changed the table, else a BackendError."""
        if schema_change(error) == 'definition':
            self._forget_tables()
            return TableChanged(
                f'Query failed: {reason(error)}. The table was changed by another program since '
                'this process read its definition; it is read again at the next query.'
            )
        return BackendError(f'Query failed: {reason(error)}')

    def _forget_tables(self) -> None:
        """Drop every cached table definition and the statements built from them (read again
        when next used): after another program's schema change, for its table and any other."""
        with self._lock:
            for t in list(self._metadata.tables.values()):
                self._metadata.remove(t)
            for cache in (
                self._tables,
                self._plans,
                self._joined,
                self._insert_plans,
                self._lookups,
                self._key_sql,
                self._page_sql,
            ):
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

    def close(self) -> None:
        self.engine.dispose()
