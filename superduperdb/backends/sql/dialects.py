"""What differs between the SQL databases the backend speaks to, one entry per dialect.

The backend reads these facts (:func:`of`) instead of asking which database it is at each
step: the server's clock, the schema-change lock, what DDL commits, which names take a
schema, what reflection needs. A database not listed here gets the defaults (an embedded
database without any of these). What only one database has lives here too: PostgreSQL's
internal schema and session mark, MariaDB's reflected JSON columns.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from superduperdb.backends.sql import schema
from superduperdb.base.exceptions import BackendError, ConfigError

logger = logging.getLogger(__name__)


def _nothing(conn: sa.Connection) -> None:
    """No schema-change lock to take or release (DuckDB: a file has one writing process)."""


@dataclass(frozen=True)
class Dialect:
    """The facts the SQL backend needs about one kind of database (defaults: none of them)."""

    #: ``postgresql``, ``mysql`` (MariaDB too), ``sqlite``, ``duckdb``, ...
    name: str
    #: SQL that reads the server's time in seconds since the epoch; None: an embedded database
    clock: str | None = None
    #: whether a table may be named with its schema, ``shop.items`` (MySQL: its database)
    schemas: bool = False
    #: whether DDL commits by itself, so a CREATE TABLE cannot share a transaction (MySQL/MariaDB)
    ddl_commits: bool = False
    #: whether one process at a time may write (a DuckDB file)
    single_writer: bool = False
    #: whether SQLAlchemy's inspector can reflect tables (duckdb-engine's cannot: see
    #: schema.reflect_duckdb)
    inspects: bool = True
    #: whether superduperdb's sessions carry :data:`ORIGIN_SETTING` (PostgreSQL's triggers read it)
    marks_origin: bool = False
    #: whether reads run in autocommit mode (PostgreSQL: no BEGIN and ROLLBACK round trips)
    autocommit_reads: bool = False
    #: whether a dropped table takes what depends on it (``DROP TABLE ... CASCADE``)
    drop_cascade: bool = False
    #: whether an index on TEXT columns takes a prefix length (MySQL/MariaDB)
    index_prefix: bool = False
    #: whether a column of instants is marked by a comment (MySQL/MariaDB: see schema.INSTANT_COMMENT)
    instant_comment: bool = False
    #: the SQL function that measures a stored value in bytes
    byte_length: str = 'octet_length'
    #: take this database's schema-change lock on a connection (see SQLBackend._ddl)
    lock_ddl: Callable[[sa.Connection], None] = _nothing
    #: release it, where the end of the transaction does not
    unlock_ddl: Callable[[sa.Connection], None] = _nothing
    #: correct a reflected table's column types, on the connection that reflected it
    fix_reflected: Callable[[sa.Connection, sa.Table], None] | None = None
    #: prepare a new engine (statements made for it)
    prepare_engine: Callable[[sa.Engine], None] | None = None
    #: drop superduperdb's code in the database (triggers, functions) with this prefix; what
    #: was dropped, described
    drop_code: Callable[[sa.Connection, str, Callable[[str], str]], list[str]] | None = None
    #: whether the database returns the keys it generates (INSERT ... RETURNING)
    returning: bool = True
    #: whether it has a JSON column type (nested values, lists)
    json_columns: bool = True
    #: reflect a table where SQLAlchemy's inspector cannot (DuckDB; information_schema for a
    #: detected dialect whose inspector fails); None: DuckDB's own catalog
    reflect: Callable[[sa.Connection, sa.MetaData, str], sa.Table | None] | None = None
    #: whether these facts were detected from an unknown dialect (backends/sql/generic.py)
    detected: bool = False
    #: the CREATE TABLE for a table superduperdb makes (its engine, its own types: ClickHouse);
    #: None: SQLAlchemy's
    create_table: Callable[[sa.Table, Any], str] | None = None
    #: one column of an ALTER TABLE ADD COLUMN, from its name, kind and the quoting function;
    #: None: SQLAlchemy's type for the kind
    add_column: Callable[..., str] | None = None


def name_of(engine: sa.Engine) -> str:
    """The dialect's name as the backend knows it: MariaDB is ``mysql``."""
    dialect = engine.dialect.name
    return 'mysql' if dialect in ('mysql', 'mariadb') else dialect


def of(name: str) -> Dialect:
    """The facts of the dialect ``name`` (see :func:`name_of`).

    >>> of('sqlite').clock is None, of('postgresql').schemas, of('oracle').inspects
    (True, True, True)
    """
    return _DIALECTS.get(name) or Dialect(name)


#: Seconds a process waits for another's schema change (a CREATE or ALTER TABLE) on MySQL/MariaDB.
DDL_LOCK_TIMEOUT = 60
# the lock's name: one per database, within GET_LOCK's 64 characters
_MYSQL_LOCK = "CONCAT('superduperdb.ddl.', SHA1(DATABASE()))"


def _lock_postgres(conn: sa.Connection) -> None:
    """A transaction-scoped advisory lock per schema."""
    conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('superduperdb.ddl.' || current_schema()))"))


def _lock_sqlite(conn: sa.Connection) -> None:
    """``BEGIN IMMEDIATE`` takes the database's write lock up front."""
    conn.exec_driver_sql('BEGIN IMMEDIATE')


def _lock_mysql(conn: sa.Connection) -> None:
    """A named ``GET_LOCK`` per database (DDL commits by itself there, so statements inside
    commit as they go); released by :func:`_unlock_mysql`."""
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


def _unlock_mysql(conn: sa.Connection) -> None:
    conn.execute(sa.text(f'SELECT RELEASE_LOCK({_MYSQL_LOCK})'))
    conn.commit()


#: A PostgreSQL session setting that marks superduperdb's own connections. Writes made
#: through them start their watchers' jobs directly, so change-capture triggers skip them.
ORIGIN_SETTING = 'superduperdb.origin'


#: Where superduperdb's own objects go on PostgreSQL in a database it has not been installed in
#: yet (``internal_schema`` unset); an installation that predates it keeps its schema.
DEFAULT_INTERNAL_SCHEMA = 'superduperdb'


def internal_schema(engine: sa.Engine, dialect: str, configured: str | None) -> str | None:
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


def use_internal_schema(engine: sa.Engine, dialect: str, internal: str) -> str:
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


def drop_postgres_code(conn: sa.Connection, prefix: str, quote: Callable[[str], str]) -> list[str]:
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


def mark_sessions(engine: sa.Engine) -> None:
    @sa.event.listens_for(engine, 'connect')
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"SET {ORIGIN_SETTING} = 'datalayer'")
        cursor.close()
        dbapi_connection.commit()

    engine.pool.dispose()  # connections opened before (a connect probe) get the mark too


def mark_mariadb_json(conn: sa.Connection, table: sa.Table) -> None:
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


_DIALECTS = {
    'postgresql': Dialect(
        'postgresql',
        clock='SELECT EXTRACT(EPOCH FROM clock_timestamp())',
        schemas=True,
        marks_origin=True,
        autocommit_reads=True,
        drop_cascade=True,
        lock_ddl=_lock_postgres,
        drop_code=drop_postgres_code,
    ),
    'mysql': Dialect(
        'mysql',
        clock='SELECT UNIX_TIMESTAMP(NOW(6))',
        schemas=True,
        ddl_commits=True,
        index_prefix=True,
        instant_comment=True,
        lock_ddl=_lock_mysql,
        unlock_ddl=_unlock_mysql,
        fix_reflected=mark_mariadb_json,
    ),
    'sqlite': Dialect('sqlite', byte_length='length', lock_ddl=_lock_sqlite),
    'duckdb': Dialect('duckdb', single_writer=True, inspects=False, prepare_engine=schema.quote_keywords),
}
