"""What ClickHouse does its own way, for the SQL backend (see :mod:`superduperdb.backends.sql.dialects`).

The SQL backend speaks to ClickHouse through clickhouse-connect's SQLAlchemy dialect
(``clickhousedb``): queries, filters, inserts, lightweight ``UPDATE`` and ``DELETE`` compile
as on the other SQL databases. What differs is here:

- tables: ``ENGINE = MergeTree ORDER BY <key>``, so a lookup by key (the joins that read
  outputs back) reads one granule; columns are ``Nullable`` (ClickHouse's are not by default);
  lightweight updates need the block-number columns, switched on for the tables superduperdb
  makes (:func:`create_table_sql`);
- types: ClickHouse has one ``String`` type for text and bytes, so every string is read as
  bytes (:data:`QUERY_FORMATS`) and decoded as text unless its column comment says it holds
  bytes or JSON (:func:`fix_reflected`); the ``ORDER BY`` key is the table's primary key;
- no transactions: each statement stands alone (``ddl_commits``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import sqlalchemy as sa

from superduperdb.backends.sql.dialects import Dialect
from superduperdb.backends.sql.schema import Instant

#: Every ``String`` column read as bytes: text is decoded by its column's type (:class:`Text`),
#: bytes (encoded arrays, pickles) stay bytes.
QUERY_FORMATS = {'String': 'bytes', 'FixedString': 'bytes'}
#: The comments that mark what a ``String`` column holds (the type cannot say).
BYTES_COMMENT = 'superduperdb: bytes'
JSON_COMMENT = 'superduperdb: json'
#: Lightweight ``UPDATE`` needs these on a MergeTree table (ClickHouse 25.7 and newer).
UPDATABLE = 'enable_block_number_column = 1, enable_block_offset_column = 1'

#: ClickHouse column types by superduperdb's column kinds (COLUMN_TYPES, and datetime)
_TYPES = {
    'str': 'String',
    'bytes': 'String',
    'json': 'String',
    'int': 'Int64',
    'float': 'Float64',
    'bool': 'Bool',
    'datetime': "DateTime64(6, 'UTC')",
}
_COMMENTS = {'bytes': BYTES_COMMENT, 'json': JSON_COMMENT}


class Text(sa.String):
    """A ``String`` column holding text: read as bytes (see :data:`QUERY_FORMATS`), decoded."""

    def result_processor(self, dialect: sa.Dialect, coltype: Any) -> Any:
        def process(value: Any) -> Any:
            return value.decode() if isinstance(value, bytes) else value

        return process


def kind_of(column: sa.Column[Any]) -> str:
    """superduperdb's kind of a ``sa.Column`` it is about to create."""
    from superduperdb.backends.sql import schema

    for kind in ('json', 'bytes', 'bool', 'int', 'float', 'datetime'):
        if isinstance(column.type, type(schema.sql_type(kind))):
            return kind
    if isinstance(column.type, sa.Integer):
        return 'int'
    return 'str'


def column_sql(name: str, kind: str, quote: Any, *, key: bool = False) -> str:
    """One column of a CREATE TABLE or ADD COLUMN: ``Nullable`` unless it is the key."""
    ch = _TYPES.get(kind, 'String')
    text = f'{quote(name)} {ch if key else f"Nullable({ch})"}'
    comment = _COMMENTS.get(kind)
    return f"{text} COMMENT '{comment}'" if comment else text


def create_table_sql(table: sa.Table, preparer: Any) -> str:
    """``CREATE TABLE`` for a table superduperdb makes: a MergeTree ordered by its key."""
    keys = [c.name for c in table.primary_key.columns]
    columns = ', '.join(
        column_sql(c.name, kind_of(c), preparer.quote, key=c.name in keys) for c in table.columns
    )
    order = ', '.join(preparer.quote(k) for k in keys) or 'tuple()'
    return (
        f'CREATE TABLE {preparer.format_table(table)} ({columns}) '
        f'ENGINE = MergeTree ORDER BY ({order}) SETTINGS {UPDATABLE}'
    )


def fix_reflected(conn: sa.Connection, table: sa.Table) -> None:
    """Give a reflected table its primary key (the MergeTree's) and the types of its strings."""
    found = conn.execute(
        sa.text('SELECT primary_key FROM system.tables WHERE database = currentDatabase() AND name = :name'),
        {'name': table.name},
    ).scalar()
    key = found.decode() if isinstance(found, bytes) else (found or '')
    names = [k.strip().strip('`"') for k in key.strip('()').split(',') if k.strip()]
    for column in table.c:
        spec = str(column.type).upper()
        if column.comment == JSON_COMMENT:
            column.type = sa.JSON()
        elif column.comment == BYTES_COMMENT:
            column.type = sa.LargeBinary()
        elif 'STRING' in spec and 'ARRAY' not in spec and 'MAP' not in spec:
            column.type = Text()
        elif 'DATETIME64' in spec:
            column.type = Instant()
        elif 'FLOAT' in spec:
            column.type = sa.Double()
        elif spec.startswith('BOOL') or 'BOOL)' in spec:
            column.type = sa.Boolean()
        elif 'INT' in spec and 'ARRAY' not in spec:
            column.type = sa.BigInteger()
    keys = [table.c[n] for n in names if n in table.c]
    if keys:
        for column in keys:
            column.primary_key = True
            column.nullable = False
        table.primary_key._reload(keys)


#: ClickHouse: an embedded engine (chdb, one process at a time) or a server (``clock``).
CHDB = Dialect(
    'clickhousedb',
    ddl_commits=True,
    single_writer=True,
    byte_length='length',
    fix_reflected=fix_reflected,
    create_table=create_table_sql,
    add_column=column_sql,
)
SERVER = dataclasses.replace(
    CHDB, single_writer=False, clock='SELECT toUnixTimestamp64Micro(now64(6)) / 1000000.0'
)
