"""Open a database: URIs, SQLAlchemy engines and (py|mongo)mock databases become backends.

One URL form for every SQL database, the same as SQLAlchemy's: ``sqlite:///relative.db``,
``sqlite:////absolute.db``, ``duckdb:///file.duckdb``, ``postgresql://user@host/db``,
``mysql://user@host/db``; ClickHouse, ``chdb://path`` (embedded) or ``clickhouse://host``;
plus ``mongodb://host/db`` and ``mongomock://name``; and lakes:
``file:///data/lake``, ``s3://bucket/lake`` or any fsspec URL (a folder of tables), with
``delta:///data/lake`` / ``delta+s3://bucket/lake`` making new tables Delta tables.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from superduperdb.base._deps import require
from superduperdb.base.config import CFG
from superduperdb.base.exceptions import ConfigError, ConnectionFailed
from superduperdb.base.masking import mask_secrets

if TYPE_CHECKING:
    from superduperdb.backends.base import DataBackend

_SQL_DRIVERS = {
    # scheme: (SQLAlchemy driver URL scheme, module to require, extra)
    'sqlite': ('sqlite', 'sqlite3', 'sqlite'),
    'duckdb': ('duckdb', 'duckdb_engine', 'duckdb'),
    'postgresql': ('postgresql+psycopg', 'psycopg', 'postgres'),
    'postgres': ('postgresql+psycopg', 'psycopg', 'postgres'),
    'mysql': ('mysql+pymysql', 'pymysql', 'mysql'),
    'mariadb': ('mysql+pymysql', 'pymysql', 'mysql'),
}
_MOCK_CLIENTS: dict[str, Any] = {}


def backend_from(target: Any, *, create: bool = False) -> DataBackend:
    """A DataBackend for a URI, an SQLAlchemy Engine, or a pymongo/mongomock Database.

    ``create``: make the missing folder of a SQLite/DuckDB file or a local lake (superduperdb's
    own files); a user's URI asks for it with ``?create=true`` (see :func:`_parent_folder`).
    """
    if target is None:
        target = CFG.data_backend
    if isinstance(target, str):
        return _from_uri(target, create)
    module = type(target).__module__.split('.')[0]
    if module == 'sqlalchemy':
        from superduperdb.backends.sql.backend import SQLBackend

        if hasattr(target, 'connect') and hasattr(target, 'dialect'):
            log_statements(target)
            return SQLBackend(target)
    if module in ('pymongo', 'mongomock') and hasattr(target, 'list_collection_names'):
        from superduperdb.backends.mongodb.backend import MongoBackend

        return MongoBackend(target)
    raise ConfigError(
        f'Cannot connect to a {type(target).__name__}: pass a URI such as "sqlite:///my.db" or '
        '"postgresql://user@host/db", an SQLAlchemy Engine, or a pymongo Database '
        '(client["name"]).'
    )


def _from_uri(uri: str, create: bool = False) -> DataBackend:
    scheme = uri.split(':', 1)[0].lower() if ':' in uri else ''
    base = scheme.split('+')[0]
    if base in _SQL_DRIVERS:
        return _sql(uri, base, create)
    if base in ('chdb', 'clickhouse', 'clickhouses'):
        from superduperdb.backends.clickhouse.backend import open_clickhouse

        return open_clickhouse(uri)
    if base in ('mongodb', 'mongodb+srv'):
        return _mongodb(uri)
    if base == 'mongomock':
        return _mongomock(uri)
    if _is_lake(scheme):
        return _lake(uri, scheme, create)
    from superduperdb.backends.sql import generic

    if scheme.startswith(generic.PREFIX) or (scheme and generic.has_dialect(scheme)):
        return _generic(uri.removeprefix(generic.PREFIX))
    raise ConfigError(
        f'Unknown database URI scheme {scheme!r} in {mask_secrets(uri)!r}. Use one of: sqlite:///path, '
        'duckdb:///path, postgresql://user@host/db, mysql://user@host/db, chdb:///path, '
        'clickhouse://host, mongodb://host/db, mongomock://name, a lake: file:///path/lake, '
        f's3://bucket/lake, or any SQLAlchemy URL whose dialect is installed: '
        f'{generic.missing_dialect(scheme)}.'
    )


def _generic(uri: str) -> DataBackend:
    """A database with an installed SQLAlchemy dialect that superduperdb has no facts for: the
    SQL backend with its abilities detected (see :mod:`superduperdb.backends.sql.generic`)."""
    import sqlalchemy as sa

    from superduperdb.backends.sql import generic
    from superduperdb.backends.sql.backend import SQLBackend

    scheme = uri.split(':', 1)[0]
    if not generic.has_dialect(scheme):
        raise ConfigError(
            f'No SQLAlchemy dialect for {scheme!r} is installed: {generic.missing_dialect(scheme)}.'
        )
    try:
        engine = sa.create_engine(uri)
    except (sa.exc.ArgumentError, ValueError) as exc:
        raise ConfigError(f'Invalid database URI {mask_secrets(uri)!r}: {exc}') from exc
    except ImportError as exc:  # the dialect is SQLAlchemy's own (oracle, mssql), its driver is missing
        package = generic.DIALECT_PACKAGES.get(scheme.split('+')[0], exc.name or '?')
        raise ConfigError(
            f'Connecting to {mask_secrets(uri)!r} needs the driver {exc.name!r} of the SQLAlchemy '
            f'dialect {scheme!r}, which is not installed: pip install {package!r}, then connect again.'
        ) from exc
    log_statements(engine)
    try:
        with engine.connect():
            pass
    except sa.exc.SQLAlchemyError as exc:
        reason = str(getattr(exc, 'orig', exc)).strip().splitlines()[0]
        raise ConnectionFailed(
            f'Could not connect to {engine.dialect.name} ({mask_secrets(uri)}): {reason}',
            host=engine.url.host,
            port=engine.url.port,
        ) from exc
    return SQLBackend(engine, facts=generic.detect(engine))


#: URL schemes of object stores and file systems that open a lake (besides any fsspec protocol)
_LAKE_SCHEMES = ('file', 's3', 's3a', 'gs', 'gcs', 'az', 'abfs', 'abfss', 'memory', 'delta', 'lake')


def _is_lake(scheme: str) -> bool:
    base = scheme.split('+')[-1]
    if scheme.split('+')[0] in ('delta', 'lake'):
        return True
    if base in _LAKE_SCHEMES:
        return True
    if base in ('http', 'https', ''):
        return False
    try:
        import fsspec
    except ImportError:
        return False
    return base in fsspec.available_protocols()


def _lake(uri: str, scheme: str, create: bool = False) -> DataBackend:
    """A lake: ``file:///dir``, ``s3://bucket/prefix``; ``delta:///dir`` or ``delta+s3://...``
    for a lake whose new tables are Delta tables (``lake+...`` names Parquet explicitly)."""
    from superduperdb.backends.lake.backend import LakeBackend

    given = uri
    uri, asked = _create_option(uri)
    head, _, rest = uri.partition('://')
    prefix, plus, protocol = scheme.partition('+')
    table_format = 'parquet'
    if prefix in ('delta', 'lake'):
        table_format = 'delta' if prefix == 'delta' else 'parquet'
        protocol = protocol if plus else 'file'
        uri = f'{protocol}://{rest}'
    path = uri.split('://', 1)[1]
    if path.split('?')[0].rstrip('/').endswith('.parquet'):
        raise ConfigError(
            f'{uri!r} names a Parquet file; a lake is a folder of tables, each a folder of Parquet '
            f'files. Open the folder above it, with the file in a folder of its own named after the '
            f'table: file:///data/lake with /data/lake/events/part-0.parquet is the table "events".'
        )
    if uri.split('://', 1)[0].lower() in ('file', 'local'):
        # the lake's own folder is made on first use; the folder it sits in must be there
        _parent_folder(Path(path.split('?')[0]).expanduser(), given, create or asked)
    return LakeBackend(uri, table_format=table_format)


#: The folder superduperdb keeps its embedded database in (``CFG.data_backend``'s default):
#: made when missing, as a first ``superduper()`` needs it.
_HOME_FOLDER = '.superduperdb'


def _create_option(uri: str) -> tuple[str, bool]:
    """``uri`` without a ``create=true`` query parameter, and whether it had one: the user's
    way to ask for a missing folder to be made (the drivers would reject the parameter)."""
    head, sep, query = uri.partition('?')
    if not sep:
        return uri, False
    kept, create = [], False
    for part in query.split('&'):
        name, _, value = part.partition('=')
        if name == 'create':
            if value.lower() not in ('true', '1', 'yes', 'false', '0', 'no'):
                raise ConfigError(
                    f'create={value!r} in {mask_secrets(uri)!r}: use create=true or create=false.'
                )
            create = value.lower() in ('true', '1', 'yes')
        elif part:
            kept.append(part)
    return (f'{head}?{"&".join(kept)}' if kept else head), create


def _parent_folder(path: Path, uri: str, create: bool) -> None:
    """Check that the folder ``path`` (a database file, a lake) goes in exists.

    A missing folder is most often a typo (``sqlite:///nodir/x.db``): making it would leave
    the data in a new, empty database nobody looks at. So it is made only when asked
    (``create``: ``?create=true`` on the URI, superduperdb's own files) or when it is
    superduperdb's home folder (the default embedded database, ``./.superduperdb``).
    """
    parent = path.parent
    if parent.is_dir():
        return
    if create or _HOME_FOLDER in parent.parts:
        parent.mkdir(parents=True, exist_ok=True)
        return
    if parent.exists():
        raise ConfigError(f'{parent} is not a folder ({mask_secrets(uri)!r}).')
    raise ConfigError(
        f'The folder {parent} does not exist ({mask_secrets(uri)!r}). Check the path for a typo, '
        f'create the folder (mkdir -p {parent}), or add ?create=true to the URI to have it made.'
    )


def _sql(uri: str, base: str, create: bool = False) -> DataBackend:
    driver_scheme, module, extra = _SQL_DRIVERS[base]
    if base != 'sqlite':  # sqlite3 is in the standard library
        require(module, extra=extra, what=f'Connecting to {base}')
    import sqlalchemy as sa

    from superduperdb.backends.sql.backend import SQLBackend

    given = uri  # as the user wrote it, for messages
    uri, asked = _create_option(uri)
    create = create or asked
    rest = uri.split(':', 1)[1]
    if '+' not in uri.split(':', 1)[0]:
        uri = f'{driver_scheme}:{rest}'
    timeout = CFG.connect_timeout
    kwargs: dict[str, Any] = {}
    if base in ('sqlite', 'duckdb'):
        path = rest.removeprefix('///')
        if base == 'sqlite' and _sqlite_file(path):  # in memory: one connection per thread, no queue
            kwargs.update(pool_options())
        if path and path != ':memory:' and not path.startswith('?'):
            _parent_folder(Path(path.split('?')[0]).expanduser(), given, create)
        if base == 'sqlite':
            kwargs['connect_args'] = {'timeout': 30}
    elif base in ('postgresql', 'postgres'):
        kwargs['connect_args'] = {'connect_timeout': max(1, math.ceil(timeout))}
        kwargs.update(pool_options())
    else:
        kwargs['connect_args'] = {'connect_timeout': timeout, 'charset': 'utf8mb4'}
        kwargs.update(pool_options())
    try:
        engine = sa.create_engine(uri, **kwargs)
    except (sa.exc.ArgumentError, ValueError) as exc:
        raise ConfigError(f'Invalid database URI {mask_secrets(given)!r}: {exc}') from exc
    _check_host(engine.url, given)
    log_statements(engine)
    if base == 'sqlite':
        _sqlite_pragmas(engine)
    elif base != 'duckdb':
        _ping_when_idle(engine)
    _share_tls_context(engine)
    try:
        if base in ('mysql', 'mariadb'):
            # pymysql's connect_timeout covers the TCP connect only, not the server's
            # greeting: probe once with a read timeout so a hung server fails fast.
            args = {**kwargs['connect_args'], 'read_timeout': timeout, 'write_timeout': timeout}
            probe = sa.create_engine(uri, connect_args=args, poolclass=sa.pool.NullPool)
            _share_tls_context(probe)
            with probe.connect():
                pass
        with engine.connect():
            pass
    except sa.exc.SQLAlchemyError as exc:
        url = engine.url
        reason = str(getattr(exc, 'orig', exc)).strip().splitlines()[0]
        where = f'{url.host or "localhost"}:{url.port or _DEFAULT_PORTS.get(base, "")}'
        if base in ('sqlite', 'duckdb'):
            where = url.database or ':memory:'
        raise ConnectionFailed(
            f'Could not connect to {base} at {where}: {reason}. Is the server running and '
            'reachable, and are the user, password and database right?',
            host=url.host,
            port=url.port,
        ) from exc
    return SQLBackend(engine, internal_schema=CFG.internal_schema)


#: Connections a server keeps for work beside its requests: job heartbeats, change capture,
#: the session-revocation lookups of the dashboard.
BACKGROUND_CONNECTIONS = 4
#: Connections one request may hold at once: a vector search pins one for its lookups and may
#: open a second inside it (a table's definition read on first use).
CONNECTIONS_PER_REQUEST = 2


def pool_options() -> dict[str, Any]:
    """SQLAlchemy pool settings from CFG: ``pool_size`` connections, all kept once opened
    (a server under load would otherwise open and close connections, each a new backend
    process on PostgreSQL), and ``pool_timeout`` seconds of waiting for one.

    SQLAlchemy's default (5 kept, 10 more, 30 s wait) sat under the server's 40 request
    threads: 50 clients on a cold server exhausted it, requests waited 30 s each for a
    connection, and failed (see :func:`connections_needed`).
    """
    return {'pool_size': CFG.pool_size, 'max_overflow': 0, 'pool_timeout': CFG.pool_timeout}


def _sqlite_file(path: str) -> bool:
    database = path.split('?')[0]
    return bool(database) and database != ':memory:' and 'mode=memory' not in path


def connections_needed(concurrency: int) -> int:
    """Pooled connections a server handling ``concurrency`` requests at once needs, so that no
    request ever waits for one: requests hold theirs while they wait for each other (for an
    engine being built, a model being loaded), so a pool any smaller can run dry with every
    holder waiting on one that needs a connection more."""
    return concurrency * CONNECTIONS_PER_REQUEST + BACKGROUND_CONNECTIONS


def pool_capacity(backend: Any) -> int | None:
    """How many connections ``backend``'s pool hands out at once; None: no such bound here
    (MongoDB's driver, a lake, an embedded database that serves one thread at a time)."""
    engine = backend.engine
    pool = getattr(engine, 'pool', None)
    size = getattr(pool, 'size', None)
    overflow = getattr(pool, '_max_overflow', None)  # QueuePool's only record of it
    if not callable(size) or not isinstance(overflow, int) or overflow < 0:
        return None  # unbounded overflow (-1), or not a QueuePool
    return int(size()) + overflow


def _share_tls_context(engine: Any) -> None:
    """PyMySQL connections share one TLS context instead of building one each.

    Given no TLS option, PyMySQL tries TLS and falls back to plain (its "preferred" mode),
    building a new ``ssl.SSLContext`` for every connection and loading the system's CA
    certificates into it: 20 ms a connection, most of the time it takes to open a MariaDB
    database, and again for each connection a pool adds. The shared context is built once,
    the same way (an SSLContext is safe to share between connections and threads); explicit
    TLS options in the URI are left to PyMySQL.
    """
    if engine.dialect.driver != 'pymysql':
        return
    import sqlalchemy as sa

    connection = _pymysql_sharing_tls()

    @sa.event.listens_for(engine, 'do_connect')
    def connect(dialect: Any, record: Any, cargs: Any, cparams: dict[str, Any]) -> Any:
        return connection(*cargs, **cparams)


@functools.cache
def _pymysql_sharing_tls() -> type:
    from pymysql.connections import Connection

    class SharingTls(Connection):  # type: ignore[misc]
        def _create_ssl_ctx(self, sslp: Any) -> Any:
            if isinstance(sslp, dict) and not sslp:  # preferred mode: no option of the user's
                return _preferred_tls_context(self)
            return super()._create_ssl_ctx(sslp)

    return SharingTls


_TLS_CONTEXT: list[Any] = []  # the shared one, once built


def _preferred_tls_context(connection: Any) -> Any:
    """The context PyMySQL builds for preferred mode, built once (by the first connection)."""
    if not _TLS_CONTEXT:  # two threads may both build one: the first kept is used by all
        from pymysql.connections import Connection

        _TLS_CONTEXT.append(Connection._create_ssl_ctx(connection, {}))
    return _TLS_CONTEXT[0]


#: A pooled connection unused for this long is pinged before it is handed out again: shorter
#: than any restart of a server takes, so a connection that outlived one is always pinged.
IDLE_PING_S = 0.25


def _ping_when_idle(engine: Any) -> None:
    """Ping a server's pooled connection before use when it sat idle in the pool.

    A database restarted (or a connection dropped by a proxy) while a connection sat in the
    pool would fail the next statement; a ping finds that first, and the pool opens a new
    connection instead. SQLAlchemy's ``pool_pre_ping`` pings at every checkout: a round trip
    per statement (0.2 ms of a 2 ms vector search on PostgreSQL here). A connection back in
    the pool for less than ``IDLE_PING_S`` skips it: a server cannot have gone down and come
    back up in that time. A connection dropped by the server without a restart
    (``pg_terminate_backend``, a proxy) fails its next statement; a read is then retried once
    on a new connection (``SQLBackend._read``), and a write fails with its error.
    """
    import sqlalchemy as sa

    @sa.event.listens_for(engine, 'checkin')
    def _returned(dbapi_connection: Any, record: Any) -> None:
        record.info['sddb_returned'] = time.monotonic()

    @sa.event.listens_for(engine, 'checkout')
    def _checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        returned = record.info.get('sddb_returned')
        if returned is None or time.monotonic() - returned < IDLE_PING_S:
            return  # new, or in steady use
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            raise sa.exc.DisconnectionError(f'ping failed: {exc}') from exc
        if not alive:
            raise sa.exc.DisconnectionError('ping failed')


def _check_host(url: Any, uri: str) -> None:
    """Refuse a server URI whose host or database came out holding an ``@``: its password
    holds one (``postgresql://u:p@ss@host/db``, ``u:p@ss/w@host``), SQLAlchemy ends the
    password at the first ``@``, and the rest of it would be shown as the host in every error
    about the connection (or sent to a DNS server as one)."""
    if url.get_backend_name() in ('sqlite', 'duckdb'):
        return  # a file path may hold '@'
    if '@' in (url.host or '') or '@' in (url.database or ''):
        raise ConfigError(
            f'The database URI {mask_secrets(uri)!r} has an "@" in its user or password. '
            'Percent-encode those characters in the URI: "@" as %40, ":" as %3A, "/" as %2F '
            '(urllib.parse.quote(password, safe="")).'
        )


_DEFAULT_PORTS = {'postgresql': 5432, 'postgres': 5432, 'mysql': 3306, 'mariadb': 3306}


#: Logs each SQL statement at DEBUG (``SUPERDUPERDB_LOG_LEVEL=DEBUG``): its text, never its values.
_STATEMENTS = logging.getLogger('superduperdb.sql')
#: Characters of a statement shown in its log line (a multi-row INSERT can run to megabytes).
STATEMENT_LOG_CHARS = 400


def log_statements(engine: Any) -> None:
    """Log every statement ``engine`` runs at DEBUG: the SQL text with its placeholders (the
    bound values are data, and never logged) and, for a batch, how many rows it carries.
    Costs one level check per statement when DEBUG is off."""
    import sqlalchemy as sa

    if engine.dispatch.before_cursor_execute and any(
        getattr(f, '__name__', '') == '_log_statement' for f in engine.dispatch.before_cursor_execute
    ):
        return  # an engine passed twice

    @sa.event.listens_for(engine, 'before_cursor_execute')
    def _log_statement(
        conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        if not _STATEMENTS.isEnabledFor(logging.DEBUG):
            return
        text = ' '.join(statement.split())
        if len(text) > STATEMENT_LOG_CHARS:
            text = f'{text[:STATEMENT_LOG_CHARS]}... ({len(text)} characters)'
        rows = f' [{len(parameters)} rows]' if many and isinstance(parameters, (list, tuple)) else ''
        _STATEMENTS.debug('%s%s', text, rows)


def _sqlite_pragmas(engine: Any) -> None:
    from sqlalchemy import event

    @event.listens_for(engine, 'connect')
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            _wal(cursor)
            cursor.execute('PRAGMA synchronous=NORMAL')
        finally:
            cursor.close()
        # what a filter on _fold compiles to (backends/sql/compiler.py): SQLite has no MD5
        dbapi_connection.create_function('superduper_md5', 1, _md5_hex, deterministic=True)


def _md5_hex(text: Any) -> str | None:
    from superduperdb.base.folds import md5_hex

    return None if text is None else md5_hex(str(text))


def _wal(cursor: Any, wait: float = 30.0) -> None:
    """Put the database in WAL mode: readers do not block the writer, so watchers and readers
    run side by side. WAL is a property of the file, set once; switching needs a lock that
    another process starting at the same moment may hold, and SQLite answers "database is
    locked" at once there (no busy wait): try again for up to ``wait`` seconds.
    """
    import sqlite3

    deadline, delay = time.monotonic() + wait, 0.005
    while True:
        try:
            if cursor.execute('PRAGMA journal_mode').fetchone()[0] != 'wal':
                cursor.execute('PRAGMA journal_mode=WAL')
            return
        except sqlite3.OperationalError as exc:
            if 'locked' not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.25)


def _mongodb(uri: str) -> DataBackend:
    pymongo = require('pymongo', extra='mongodb', what='Connecting to MongoDB')
    from superduperdb.backends.mongodb.backend import MongoBackend

    name = urlsplit(uri).path.lstrip('/').split('?')[0]
    if not name:
        raise ConfigError(f'MongoDB URI {uri!r} names no database: use mongodb://host:27017/<database>.')
    timeout_ms = int(CFG.connect_timeout * 1000)
    client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms)
    try:
        client.admin.command('ping')
    except pymongo.errors.PyMongoError as exc:
        nodes = ', '.join(f'{h}:{p}' for h, p in client.topology_description.server_descriptions()) or uri
        client.close()
        raise ConnectionFailed(
            f'Could not connect to MongoDB at {nodes}: {str(exc).splitlines()[0][:200]}. '
            'Is the server running and reachable?',
            host=urlsplit(uri).hostname,
            port=urlsplit(uri).port,
        ) from exc
    return MongoBackend(client[name])


def _mongomock(uri: str) -> DataBackend:
    mongomock = require('mongomock', extra='mongodb', what='mongomock:// databases')
    from superduperdb.backends.mongodb.backend import MongoBackend

    name = uri.split('://', 1)[1].strip('/') or 'test'
    # one in-memory "server" per process, so two connections see the same data
    client = _MOCK_CLIENTS.setdefault('client', mongomock.MongoClient())
    return MongoBackend(client[name])
