"""The SQL backend: SQLite, PostgreSQL, MySQL/MariaDB and DuckDB through SQLAlchemy Core.

:class:`SQLBackend` is built in layers, one module each (all in this folder):

- core.py: the engine, the cached table definitions, the read path with its retries;
- reads.py: queries, counts, pages, lookups by key (``Reads``);
- ddl.py: creating, indexing and dropping tables, uninstalling (``Tables``);
- writes.py: inserts, updates, deletes (``Writes``); inserts.py: how rows are written;
- dialects.py: what each database does its own way; errors.py: its errors as superduperdb's.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

import sqlalchemy as sa

from superduperdb.backends.base import Capabilities
from superduperdb.backends.sql.dialects import ORIGIN_SETTING
from superduperdb.backends.sql.errors import map_driver_errors, query_failed
from superduperdb.backends.sql.reads import Reads
from superduperdb.backends.sql.writes import Writes


class SQLBackend(Writes, Reads):
    """Documents as rows: top-level keys are columns, nested values JSON columns."""

    capabilities: ClassVar[Capabilities] = Capabilities(column_reads=True, bulk_rows=True, views=True)

    def one_thread_at_a_time(self) -> bool:
        """DuckDB (one writer), and SQLite in memory (one connection per process)."""
        if self.single_writer:
            return True
        if self.dialect != 'sqlite':
            return False
        url = self.engine.url
        return url.database in (None, '', ':memory:') or 'mode=memory' in str(url)

    def clock(self) -> float | None:
        """The server's time: PostgreSQL's and MariaDB/MySQL's (SQLite and DuckDB are embedded)."""
        query = self.facts.clock
        if query is None:
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

    def change_source(self, db: Any, handle: Any, stop: threading.Event) -> Any:
        """PostgreSQL: triggers into a durable queue; other SQL databases: a high-water mark over
        the primary key (see :mod:`superduperdb.backends.sql.cdc`)."""
        from superduperdb.backends.sql.cdc import PostgresTriggers, SQLHighWaterMark

        if self.dialect == 'postgresql':
            return PostgresTriggers(db, handle, stop)
        return SQLHighWaterMark(db, handle, stop)

    def fulltext(self, language: str) -> Any:
        """PostgreSQL's tsvector, SQLite's FTS5, MariaDB's FULLTEXT (see fulltext.py); DuckDB: None."""
        from superduperdb.backends.sql.fulltext import fulltext_of

        return fulltext_of(self, language)

    def execute_raw(self, statement: Any) -> list[dict[str, Any]]:
        """Run a SQLAlchemy statement (the escape hatch) and return rows as dicts."""
        with map_driver_errors('Query failed', query_failed), self.engine.begin() as conn:
            if self.facts.marks_origin:  # raw writes are not triggered directly: let cdc see them
                conn.exec_driver_sql(f"SET LOCAL {ORIGIN_SETTING} = ''")
            result = conn.execute(statement)
            return [dict(row) for row in result.mappings()] if result.returns_rows else []


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
