"""The SQL backend's schema changes: creating tables and indexes, dropping them, uninstalling.

Every CREATE and ALTER runs under the database's schema-change lock (:meth:`Tables._ddl`,
its per-dialect form in dialects.py), so processes started together create a table once.
A created table is recorded in the registry in the same step (:meth:`Tables._create`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa

from superduperdb.backends.sql import schema
from superduperdb.backends.sql.core import SQLCore
from superduperdb.backends.sql.errors import map_driver_errors, reason, write_failed
from superduperdb.backends.sql.inserts import InsertPlan, insert_documents, with_keys, write_planned
from superduperdb.base.exceptions import BackendError, NotSupported, WriteFailed
from superduperdb.base.quiet import quiet

logger = logging.getLogger(__name__)


class Tables(SQLCore):
    """Creating, indexing and dropping tables: a part of the SQL backend (see backend.py)."""

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
                self._create(sa.Table(bare, sa.MetaData(), *cols, schema=in_schema), name=table, keep=True)
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
        except sa.exc.SQLAlchemyError as exc:  # not map_driver_errors: the reason is not last here
            raise BackendError(
                f"Could not create schema {self.internal_schema!r} for superduperdb's tables: "
                f'{reason(exc)}. Grant CREATE on the database, or set internal_schema to a schema '
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
            self.facts.lock_ddl(conn)  # see dialects.py
            try:
                yield conn
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
            finally:
                self.facts.unlock_ddl(conn)  # MySQL/MariaDB: its named lock

    def _exists(self, conn: sa.Connection, name: str) -> bool:
        """Whether ``name`` exists, seen from ``conn`` (inside :meth:`_ddl`: not from the cache)."""
        return bool(self._column_names(conn, name))

    def _column_names(self, conn: sa.Connection, name: str) -> list[str]:
        if not self.facts.inspects:  # DuckDB
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
        self,
        table: sa.Table,
        documents: Sequence[dict[str, Any]] = (),
        *,
        name: str | None = None,
        keep: bool = False,
    ) -> list[Any] | None:
        """Create ``table``, record it in the registry and insert its first ``documents``: one step.

        Returns the keys of the inserted documents, or None when the table was there already
        (created meanwhile by another process): then nothing was written. Raises WriteFailed,
        with nothing created and nothing written (on MySQL/MariaDB the recorded table stays,
        empty, and takes later writes). ``keep``: a table this call creates is used as declared
        from now on, not reflected (as :meth:`_declared` does for superduperdb's own tables).
        """
        name = name or table.name  # as superduperdb knows it ('items', 'shop.items')
        kept = ''
        if self.facts.ddl_commits:
            kept = ' (the table was created and recorded: later writes can use it)'
        what = f'Creating table {name!r}'
        if documents:
            what += f' with its first {len(documents)} documents'
        failed = f'{what} failed and was rolled back (nothing was written){kept}'
        # a plain WriteFailed, never TableChangedOnWrite (not Writes._writing): the table is new,
        # no cached definition of it can be out of date
        mapped = map_driver_errors(failed, write_failed, driver=self.engine.dialect.loaded_dbapi.Error)
        try:
            with mapped, self._ddl() as conn:
                keys = self._create_in(conn, table, name, documents)
        except BaseException:
            self.table(name, refresh=True)
            raise
        # a dialect that adjusts what it reflects (MariaDB's JSON, ClickHouse's strings) reads
        # its tables as reflected
        if keep and keys is not None and self.facts.fix_reflected is None:
            self._keep(name, table)
        else:
            self.table(name, refresh=True)
        return keys

    def _create_in(
        self, conn: sa.Connection, table: sa.Table, name: str, documents: Sequence[dict[str, Any]]
    ) -> list[Any] | None:
        """:meth:`_create`'s step inside its DDL transaction (None: the table was there already)."""
        if self._exists(conn, name):
            return None
        if self.facts.ddl_commits:  # CREATE TABLE commits by itself: the record goes first
            self._record(conn, name)
            conn.commit()
            self._create_table(conn, table)
        else:
            self._create_table(conn, table)
            self._record(conn, name)
        if not documents:
            return []
        keys = list(dict.fromkeys(k for doc in documents for k in doc))
        pk = next(iter(table.primary_key.columns)).name if table.primary_key.columns else None
        documents, columns, generated = with_keys(table, pk, documents, keys)
        if generated or pk is None:
            return insert_documents(conn, table, documents, columns, generated)
        # the keys are known: the bulk lane (COPY, executemany), as for an existing table
        plan = InsertPlan(self.engine.dialect, table, columns)
        write_planned(conn, plan, [tuple(doc.get(c) for c in columns) for doc in documents])
        return [doc[pk] for doc in documents]

    def _keep(self, name: str, table: sa.Table) -> None:
        """Use ``table`` (made by this process) for ``name``, moved into this backend's MetaData."""
        self._unregister(table.schema, table.name)
        kept = table.to_metadata(self._metadata)
        schema.mark_instants(kept, self.dialect)
        self._tables[name] = kept
        self._lookups.pop(name, None)

    def _create_table(self, conn: sa.Connection, table: sa.Table) -> None:
        if any(isinstance(c.type, sa.JSON) for c in table.c):
            from superduperdb.backends.sql.generic import require

            require(self.facts, 'json columns', f'Creating {table.name!r} with nested values or lists')
        if self.facts.create_table is None:
            try:
                table.create(conn)
            except sa.exc.CompileError as exc:
                if not self.facts.detected:
                    raise
                raise NotSupported(
                    f'Creating {table.name!r} needs table creation from a generic definition, which '
                    f'the {self.facts.name!r} SQLAlchemy dialect does not do ({exc}). Create the '
                    "tables yourself, and set metadata_store to another database for superduperdb's."
                ) from exc
        else:  # ClickHouse: its engine and its own types
            conn.exec_driver_sql(self.facts.create_table(table, self.engine.dialect.identifier_preparer))

    def _record(self, conn: sa.Connection, name: str) -> None:
        if self.registry is None or name == self.registry:
            return
        # on ``conn`` itself, not reflected through another connection: an in-memory SQLite
        # database has one connection per thread, and handing that back would roll back the
        # CREATE TABLE this runs inside
        if self.registry not in self._tables and not self._exists(conn, self.registry):
            return  # being made now (the metadata store makes it with its other tables)
        in_schema, bare = self._split(self.registry)
        registry = sa.table(bare, sa.column('_id'), sa.column('created_at'), schema=in_schema)
        conn.execute(registry.delete().where(registry.c['_id'] == name))  # a stale intent, or a table dropped
        conn.execute(registry.insert(), [{'_id': name, 'created_at': time.time()}])

    def _declared(self, table: str, columns: dict[str, str], primary_key: str) -> sa.Table | None:
        """``table`` as declared, when it exists with exactly these columns (one catalog query,
        no reflection: reflecting superduperdb's own tables was most of a start); else None."""
        if not self.facts.inspects:  # duckdb-engine: see schema.reflect_duckdb
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
            # (not an error here, so not map_driver_errors)
            return None
        if sorted(names) != sorted(columns):
            return None
        cols = [
            schema.primary_key_column(n, 0 if kind == 'int' else '')
            if n == primary_key
            else schema.column(n, kind)
            for n, kind in columns.items()
        ]
        self._unregister(in_schema, bare)
        t = self._tables[table] = sa.Table(bare, self._metadata, *cols, schema=in_schema)
        return t

    def _present(self, table: str) -> bool:
        """Whether ``table`` exists, asked without reflecting it (one catalog query)."""
        if not self.facts.inspects:  # duckdb-engine's inspector: see schema.reflect_duckdb
            return self.table(table) is not None
        in_schema, bare = self._split(table)
        with self.engine.connect() as conn:
            return bool(sa.inspect(conn).has_table(bare, schema=in_schema))

    def create_index(self, table: str, columns: Sequence[str]) -> None:
        t = self._tables.get(table)
        if t is None and self.facts.inspects and self._present(table):
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
        prefix: dict[str, Any] = {'mysql_length': {c: 64 for c in columns}} if self.facts.index_prefix else {}
        index = sa.Index(name, *(t.c[c] for c in columns), **prefix)
        try:  # quiet: duckdb-engine warns on every connection that it cannot reflect indexes
            with self._ddl() as conn, quiet():
                index.create(conn, checkfirst=True)
        except sa.exc.SQLAlchemyError as exc:  # not indexable: no error (not map_driver_errors)
            logger.debug('index %s not created: %s', name, reason(exc))

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
            if self.facts.drop_code is not None:  # PostgreSQL's triggers and functions
                dropped += self.facts.drop_code(conn, prefix, quote)
            cascade = ' CASCADE' if self.facts.drop_cascade else ''
            for name in sorted(found):
                if name.startswith(prefix) and found[name] is None:
                    conn.execute(sa.text(f'DROP TABLE IF EXISTS {quote(name)}{cascade}'))
                    dropped.append(f'table {name}')
            if self.internal_schema is not None and self.dialect == 'postgresql':
                exists = conn.execute(
                    sa.text('SELECT count(*) FROM pg_namespace WHERE nspname = :s'),
                    {'s': self.internal_schema},
                ).scalar()
                if exists:
                    try:  # RESTRICT: refused while anything of anyone else's is left in it
                        with conn.begin_nested():
                            conn.execute(sa.text(f'DROP SCHEMA {quote(self.internal_schema)} RESTRICT'))
                    except sa.exc.DBAPIError:
                        logger.warning('schema %s holds objects of others: kept', self.internal_schema)
                    else:
                        dropped.append(f'schema {self.internal_schema}')
                        self._schema_made = False
        self._forget_tables()
        return dropped
