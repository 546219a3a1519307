"""SQL column types: inferred from documents for new tables, reflected for existing ones."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from superduperdb.base.exceptions import QueryError

# MariaDB/MySQL: BLOB and TEXT cap at 64 KB, FLOAT is single precision.
_BYTES = sa.LargeBinary().with_variant(mysql.LONGBLOB(), 'mysql', 'mariadb')
_TEXT = sa.Text().with_variant(mysql.LONGTEXT(), 'mysql', 'mariadb')

_BY_NAME: dict[str, sa.types.TypeEngine[Any]] = {
    'str': _TEXT,
    'int': sa.BigInteger(),
    'float': sa.Double(),
    'bool': sa.Boolean(),
    'bytes': _BYTES,
    'json': sa.JSON(),
    'datetime': sa.DateTime(timezone=True),
}


def sql_type(name: str) -> sa.types.TypeEngine[Any]:
    return _BY_NAME[name]


def type_name_of(value: Any) -> str | None:
    """The column type name a Python value needs, or None for None."""
    if value is None:
        return None
    if isinstance(value, bool):
        return 'bool'
    if isinstance(value, int):
        return 'int'
    if isinstance(value, float):
        return 'float'
    if isinstance(value, str):
        return 'str'
    if isinstance(value, (bytes, bytearray, memoryview)):
        return 'bytes'
    if isinstance(value, datetime.datetime):
        return 'datetime'
    if isinstance(value, (dict, list)):
        return 'json'
    raise QueryError(f'Cannot store a {type(value).__name__} in a SQL column.')


def infer_columns(documents: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[str, str]:
    """Column type names for ``keys``, from the first non-null value of each.

    A column whose values are all null becomes JSON, which can hold any later value.
    """
    found: dict[str, str] = {}
    for key in keys:
        for doc in documents:
            name = type_name_of(doc.get(key))
            if name is not None:
                found[key] = name
                break
        else:
            found[key] = 'json'
    return found


def primary_key_column(name: str, sample: Any) -> sa.Column[Any]:
    if isinstance(sample, int) and not isinstance(sample, bool):
        return sa.Column(name, sa.BigInteger(), primary_key=True, autoincrement=False)
    return sa.Column(name, sa.String(255), primary_key=True)


_DUCKDB_TYPES: dict[str, sa.types.TypeEngine[Any]] = {
    'BIGINT': sa.BigInteger(),
    'INTEGER': sa.Integer(),
    'SMALLINT': sa.SmallInteger(),
    'TINYINT': sa.SmallInteger(),
    'HUGEINT': sa.BigInteger(),
    'UBIGINT': sa.BigInteger(),
    'UINTEGER': sa.BigInteger(),
    'DOUBLE': sa.Double(),
    'FLOAT': sa.Float(),
    'REAL': sa.Float(),
    'BOOLEAN': sa.Boolean(),
    'VARCHAR': sa.Text(),
    'TEXT': sa.Text(),
    'BLOB': sa.LargeBinary(),
    'JSON': sa.JSON(),
    'DATE': sa.Date(),
    'TIMESTAMP': sa.DateTime(),
    'TIMESTAMP WITH TIME ZONE': sa.DateTime(timezone=True),
}


def reflect_duckdb(conn: sa.Connection, metadata: sa.MetaData, name: str) -> sa.Table | None:
    """Reflect a DuckDB table from information_schema.

    duckdb-engine's reflection queries pg_catalog tables that DuckDB lacks
    under SQLAlchemy >= 2.0.45, so read DuckDB's own catalog instead.
    """
    rows = conn.execute(
        sa.text(
            'SELECT column_name, data_type FROM information_schema.columns '
            'WHERE table_name = :name AND table_schema = current_schema() ORDER BY ordinal_position'
        ),
        {'name': name},
    ).all()
    if not rows:
        return None
    keys = conn.execute(
        sa.text(
            'SELECT constraint_column_names FROM duckdb_constraints() '
            "WHERE table_name = :name AND constraint_type = 'PRIMARY KEY'"
        ),
        {'name': name},
    ).all()
    primary = set(keys[0][0]) if keys else set()
    columns = []
    for column_name, data_type in rows:
        base = data_type.split('(')[0].upper()
        column_type = _DUCKDB_TYPES.get(base, sa.Text())
        if base.startswith('DECIMAL'):
            column_type = sa.Numeric()
        columns.append(sa.Column(column_name, column_type, primary_key=column_name in primary))
    return sa.Table(name, metadata, *columns)
