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


def arrow_table(
    backend: Any,
    t: sa.Table,
    pk: sa.Column[Any],
    where: Any,
    order: list[Any],
    limit: int | None,
    skip: int,
    outputs: list[tuple[sa.Table, str]],
) -> Any:
    """The rows as ClickHouse's Arrow output (see ``ClickHouseBackend.find_arrow``): text columns
    as strings, the others as the database types them; None for a JSON column (its values are
    parsed into Python objects on the row path, which decides their types)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    joined: Any = t
    selected: list[Any] = [c.label(c.name) for c in t.c]  # (joined: named as they are, unqualified)
    for i, (o, name) in enumerate(outputs):
        alias = o.alias(f'sddb_out_{i}')
        joined = joined.outerjoin(alias, alias.c['_id'] == pk)
        selected.append(alias.c.output.label(name))
    stmt = sa.select(*selected).select_from(joined).where(where).order_by(*order)
    if limit is not None:
        stmt = stmt.limit(limit)
    if skip:
        stmt = stmt.offset(skip)
    dialect = backend.engine.dialect
    text = []
    for column in stmt.selected_columns:
        impl = column.type.dialect_impl(dialect)
        if isinstance(impl, sa.JSON):
            return None
        text.append(isinstance(impl, Text))
    compiled = stmt.compile(dialect=dialect, compile_kwargs={'render_postcompile': True})
    values = compiled.construct_params()
    for key in list(values):
        bind = compiled.binds.get(key)
        if bind is None:  # one value of an IN list: ``<name>_<n>``
            bind = compiled.binds.get(key.rpartition('_')[0])
        process = None if bind is None else bind.type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            values[key] = process(values[key])
    sql = compiled.string if values else compiled.string.replace('%%', '%')

    def run(conn: sa.Connection) -> Any:
        client = conn.connection.driver_connection.client  # type: ignore[union-attr]
        settings = {'join_use_nulls': 1}  # no output: NULL, not the type's default value
        return client.query_arrow(sql, parameters=values or None, settings=settings, use_strings=False)

    table = backend._read(run)
    for at, is_text in enumerate(text):
        if is_text:
            field = table.schema.field(at)
            table = table.set_column(
                at, pa.field(field.name, pa.string()), pc.cast(table.column(at), pa.string())
            )
    return table
