"""Reading ClickHouse's results a column at a time, as its client decodes them.

ClickHouse sends results column by column (its Native format); clickhouse-connect's DB-API
cursor turns them into rows, and the SQL backend's column reads (predict's inputs, the
fingerprints of stored outputs) turned them back into columns, one Python step per value
each way. Here a statement compiled by SQLAlchemy runs on the client itself and its columns
come back as the client decoded them: text decoded by the client (in C), bytes as they are,
the other types with their SQLAlchemy result processing applied a column at a time, as
``_fetch(raw=True)`` applies it to rows.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from superduperdb.backends.clickhouse.dialect import QUERY_FORMATS, Text

#: compiled statements kept (a predict reads every page with one; see :class:`ColumnQuery`)
_KEPT = 64


class ColumnQuery:
    """A SELECT compiled once for the client: its SQL text, how its parameters are bound, how
    each column is read (``string`` for text, ``bytes`` for the rest) and processed."""

    def __init__(self, stmt: sa.Select[Any], dialect: sa.Dialect) -> None:
        compiled = stmt.compile(dialect=dialect)
        self.sql = compiled.string
        self.compiled = compiled
        #: a parameter's bind processing (None: taken as it is)
        self.binds: dict[str, Callable[[Any], Any] | None] = {
            key: bind.type.dialect_impl(dialect).bind_processor(dialect)
            for key, bind in compiled.binds.items()
        }
        names = [c.name for c in stmt.selected_columns]
        self.formats: dict[str, str] = {}
        self.processors: list[Callable[[Any], Any] | None] = []
        for name, column in zip(names, stmt.selected_columns):
            impl = column.type.dialect_impl(dialect)
            if isinstance(impl, Text):  # decoded by the client: no processing per value here
                self.formats[name] = 'string'
                self.processors.append(None)
            else:
                self.processors.append(impl.result_processor(dialect, None))
        self.width = len(names)

    @staticmethod
    def possible(stmt: sa.Select[Any], dialect: sa.Dialect) -> bool:
        """Whether a statement can be run this way: its selected names are distinct (the client
        formats columns by name). One whose parameters SQLAlchemy expands when it runs (an
        ``IN`` list) is found once compiled (see :func:`compiled_for`)."""
        names = [c.name for c in stmt.selected_columns]
        return len(set(names)) == len(names)

    def run(self, client: Any, params: dict[str, Any] | None) -> list[list[Any]]:
        """The rows of the statement, a list of values per column."""
        values = self.compiled.construct_params(params)
        for key, process in self.binds.items():
            if process is not None and key in values:
                values[key] = process(values[key])
        sql = self.sql if values else self.sql.replace('%%', '%')  # as the DB-API cursor does
        result = client.query(
            sql, parameters=values or None, query_formats=QUERY_FORMATS, column_formats=self.formats
        )
        columns = result.result_columns
        if not columns:
            return [[] for _ in range(self.width)]
        return [
            list(values) if process is None else list(map(process, values))
            for process, values in zip(self.processors, columns)
        ]


def compiled_for(
    cache: dict[int, tuple[sa.Select[Any], ColumnQuery | None]], stmt: sa.Select[Any], dialect: sa.Dialect
) -> ColumnQuery | None:
    """``stmt``'s :class:`ColumnQuery` from ``cache`` (by identity; the statement is kept with it,
    so its id is not reused), made if missing; None: this statement is read as rows."""
    found = cache.get(id(stmt))
    if found is not None and found[0] is stmt:
        return found[1]
    query: ColumnQuery | None = None
    if ColumnQuery.possible(stmt, dialect):
        query = ColumnQuery(stmt, dialect)
        if '__[POSTCOMPILE' in query.sql:  # an expanded parameter: SQLAlchemy renders it
            query = None
    if len(cache) >= _KEPT:
        cache.clear()
    cache[id(stmt)] = (stmt, query)
    return query
