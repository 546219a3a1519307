"""Any database with an installed SQLAlchemy dialect: the SQL backend, its abilities detected.

superduperdb knows SQLite, PostgreSQL, MySQL/MariaDB, DuckDB and ClickHouse in detail
(dialects.py, backends/clickhouse/). Any other URL whose dialect is installed (Snowflake,
BigQuery, Trino, Databricks, Redshift, Oracle, SQL Server...) connects here: the same backend,
with what the dialect says it can do read from SQLAlchemy instead of from superduperdb's
table of facts (:func:`detect`). What it cannot do is refused when asked for, by a
:class:`~superduperdb.base.exceptions.NotSupported` naming the ability. ``sqlalchemy+<url>``
takes this path for a database superduperdb knows too (``sqlalchemy+duckdb:///x.duckdb``):
how the generic path is tested.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from superduperdb.backends.sql.dialects import Dialect
from superduperdb.base.exceptions import ConfigError, NotSupported

#: The packages that bring the dialects asked for most, by URL scheme (the part before ``+``).
DIALECT_PACKAGES = {
    'snowflake': 'snowflake-sqlalchemy',
    'bigquery': 'sqlalchemy-bigquery',
    'trino': 'trino[sqlalchemy]',
    'databricks': 'databricks-sqlalchemy',
    'redshift': 'sqlalchemy-redshift',
    'presto': 'pyhive[presto]',
    'hive': 'pyhive[hive]',
    'oracle': 'oracledb',
    'mssql': 'pyodbc',
    'clickhousedb': 'clickhouse-connect',
    'crate': 'sqlalchemy-cratedb',
    'cockroachdb': 'sqlalchemy-cockroachdb',
}
#: The prefix that takes the generic path for any URL.
PREFIX = 'sqlalchemy+'


def has_dialect(scheme: str) -> bool:
    """Whether SQLAlchemy can load a dialect for ``scheme`` (``snowflake``, ``trino+rest``)."""
    from sqlalchemy.dialects import registry

    try:
        registry.load(scheme.replace('+', '.'))
    except sa.exc.NoSuchModuleError:
        return False
    except ImportError as exc:  # the dialect is there, its driver is not
        raise ConfigError(
            f'The SQLAlchemy dialect for {scheme!r} is installed but cannot load: {exc}. '
            f'Install its driver ({DIALECT_PACKAGES.get(scheme.split("+")[0], exc.name or "?")}).'
        ) from exc
    return True


def missing_dialect(scheme: str) -> str:
    """What to install for a URL scheme no installed dialect serves (for the error message)."""
    package = DIALECT_PACKAGES.get(scheme.split('+')[0])
    if package:
        return f'pip install {package!r} (its SQLAlchemy dialect), then connect again'
    return f'install the SQLAlchemy dialect package for {scheme!r}, then connect again'


def detect(engine: sa.Engine) -> Dialect:
    """The facts of a database superduperdb does not know, from what its dialect declares.

    Conservative where SQLAlchemy cannot say: DDL is taken to commit by itself (a table's
    record is written before it), names take no schema, the server's clock is not read.
    """
    dialect = engine.dialect
    return Dialect(
        dialect.name,
        ddl_commits=True,
        returning=bool(getattr(dialect, 'insert_returning', False)),
        json_columns=_compiles(dialect, sa.JSON()),
        detected=True,
        reflect=reflect_information_schema,
    )


def abilities(facts: Dialect) -> dict[str, bool]:
    """What a detected dialect can do, by name (shown by ``describe``, asked by ``require``)."""
    return {'json columns': facts.json_columns, 'returning': facts.returning}


def require(facts: Dialect, ability: str, what: str) -> None:
    """Raise NotSupported naming ``ability`` when ``facts`` lack it."""
    if not abilities(facts).get(ability, True):
        raise NotSupported(
            f'{what} needs {ability}, which the {facts.name!r} SQLAlchemy dialect does not have '
            f'(detected: {", ".join(k for k, v in abilities(facts).items() if v) or "none"}).'
        )


def _compiles(dialect: sa.Dialect, type_: Any) -> bool:
    try:
        type_.compile(dialect=dialect)
    except (sa.exc.CompileError, NotImplementedError):
        return False
    return True


#: SQL types by the names information_schema gives them (the SQL standard's and common ones)
_TYPES: dict[str, sa.types.TypeEngine[Any]] = {
    'BIGINT': sa.BigInteger(),
    'INTEGER': sa.Integer(),
    'INT': sa.Integer(),
    'SMALLINT': sa.SmallInteger(),
    'TINYINT': sa.SmallInteger(),
    'HUGEINT': sa.BigInteger(),
    'DOUBLE': sa.Double(),
    'DOUBLE PRECISION': sa.Double(),
    'FLOAT': sa.Double(),
    'REAL': sa.Float(),
    'BOOLEAN': sa.Boolean(),
    'VARCHAR': sa.Text(),
    'CHARACTER VARYING': sa.Text(),
    'TEXT': sa.Text(),
    'STRING': sa.Text(),
    'BLOB': sa.LargeBinary(),
    'BINARY': sa.LargeBinary(),
    'VARBINARY': sa.LargeBinary(),
    'BYTES': sa.LargeBinary(),
    'JSON': sa.JSON(),
    'DATE': sa.Date(),
    'TIMESTAMP': sa.DateTime(),
}


def reflect_information_schema(conn: sa.Connection, metadata: sa.MetaData, name: str) -> sa.Table | None:
    """A table's columns and primary key from the SQL standard's information_schema."""
    rows = conn.execute(
        sa.text(
            'SELECT column_name, data_type FROM information_schema.columns '
            'WHERE table_name = :name ORDER BY ordinal_position'
        ),
        {'name': name},
    ).all()
    if not rows:
        return None
    try:
        keys = set(
            conn.execute(
                sa.text(
                    'SELECT k.column_name FROM information_schema.table_constraints c '
                    'JOIN information_schema.key_column_usage k ON k.constraint_name = c.constraint_name '
                    'AND k.table_name = c.table_name '
                    "WHERE c.table_name = :name AND c.constraint_type = 'PRIMARY KEY'"
                ),
                {'name': name},
            ).scalars()
        )
    except sa.exc.DBAPIError:  # no key_column_usage here: a table without a known key
        conn.rollback()
        keys = set()
    columns = []
    for column_name, data_type in rows:
        base = str(data_type).split('(')[0].strip().upper()
        column_type = _TYPES.get(
            base, sa.Numeric() if base in ('DECIMAL', 'NUMERIC', 'NUMBER') else sa.Text()
        )
        if base.startswith('TIMESTAMP') and 'ZONE' in base and 'WITHOUT' not in base:
            column_type = sa.DateTime(timezone=True)
        columns.append(sa.Column(column_name, column_type, primary_key=column_name in keys))
    return sa.Table(name, metadata, *columns)
