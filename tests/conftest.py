"""Shared fixtures: ``db`` runs a test body on every backend.

Backends: sqlite and duckdb (files in a temporary directory), postgres
(127.0.0.1:5432, database ``test``), mysql (MariaDB 127.0.0.1:3306, database
``test``) and mongodb (mongomock, or a real server when
``SUPERDUPERDB_TEST_MONGODB_URI`` is set, e.g. ``mongodb://localhost:27017``).

Each test gets a fresh metadata store and artifact store; tables it creates
are dropped afterwards. On the servers, a test run (each pytest-xdist worker of
it) uses its own schema (PostgreSQL) or database (MariaDB), dropped when the run
ends, and one engine per server for set-up and clean-up. A known gap is declared with
``@pytest.mark.notimpl(['mysql'], raises=SomeError, reason='...')``: on those
backends the test must fail with that error (a strict xfail), so a gap that
closes is noticed.
"""

from __future__ import annotations

import contextlib
import os
import shutil

# Models load from installed packages only; nothing is downloaded during tests.
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
import uuid
from collections.abc import Iterator
from typing import Any

#: Each test run works in a private PostgreSQL schema (inside database ``test``) and a
#: private MariaDB database, made on first use and dropped when the session ends, so two
#: runs (a developer's and CI's, or parallel helpers) never touch each other's tables.
# (in the environment: tests that `import tests.conftest` get a second module object)
_RUN_ID = os.environ.setdefault('SUPERDUPERDB_TEST_RUN_ID', f'sdtest_{os.getpid()}_{uuid.uuid4().hex[:6]}')
# Under pytest-xdist each worker inherits the controller's id: a worker works in its own
# schema and database (and its processes inherit that), so workers never share tables.
_WORKER = os.environ.get('PYTEST_XDIST_WORKER')
if _WORKER and not _RUN_ID.endswith(f'_{_WORKER}'):
    if os.environ.get('SUPERDUPERDB_INTERNAL_SCHEMA') == f'{_RUN_ID}_own':  # the controller's
        del os.environ['SUPERDUPERDB_INTERNAL_SCHEMA']
    _RUN_ID = os.environ['SUPERDUPERDB_TEST_RUN_ID'] = f'{_RUN_ID}_{_WORKER}'
#: superduperdb's own objects on PostgreSQL go to a schema of their own (by default one named
#: ``superduperdb``, which two runs would share): one per run, emptied after each test. Set
#: before superduperdb is imported, so that processes the tests start use it too.
INTERNAL_SCHEMA = os.environ.setdefault('SUPERDUPERDB_INTERNAL_SCHEMA', f'{_RUN_ID}_own')

import pytest  # noqa: E402

from superduperdb import CFG, superduper  # noqa: E402
from tests.helpers import OtherApp, minilm_path  # noqa: E402

BACKENDS = ('sqlite', 'duckdb', 'postgres', 'mysql', 'mongodb', 'lake', 'chdb')
#: The test modules whose ``db`` tests also run on chdb (embedded ClickHouse); elsewhere its
#: parameter is deselected (not skipped): docs/warehouses.md lists what runs where.
CHDB_MODULES = frozenset(
    {
        'test_datalayer',
        'test_warehouse',
        'test_encoders',
        'test_watchers',
        'test_vector_search',
        'test_models',
        'test_cdc',
        'test_frames',
        'test_vector_index',
    }
)
#: A ClickHouse server for the ``clickhouse`` backend (none runs here: those tests are skipped)
CLICKHOUSE_URI = os.environ.get('SUPERDUPERDB_TEST_CLICKHOUSE_URI')
#: The backends that speak SQL through SQLAlchemy (the ``sql_db`` fixture's).
SQL_BACKENDS = ('sqlite', 'duckdb', 'postgres', 'mysql')
POSTGRES_URI = os.environ.get('SUPERDUPERDB_TEST_POSTGRES_URI', 'postgresql://postgres@127.0.0.1:5432/test')
MYSQL_URI = os.environ.get('SUPERDUPERDB_TEST_MYSQL_URI', 'mysql://root@127.0.0.1:3306/test')
MONGODB_URI = os.environ.get('SUPERDUPERDB_TEST_MONGODB_URI')


_PRIVATE: dict[str, str] = {}


def _admin(backend: str, statement: str) -> None:
    """Run one statement on the server's ``test`` database (outside the private schema)."""
    import sqlalchemy as sa

    with _connected(POSTGRES_URI if backend == 'postgres' else MYSQL_URI) as engine, engine.begin() as conn:
        conn.execute(sa.text(statement))


def _private_uri(backend: str) -> str:
    if backend not in _PRIVATE:
        if backend == 'postgres':
            _admin(backend, f'CREATE SCHEMA IF NOT EXISTS {_RUN_ID}')
            _PRIVATE[backend] = f'{POSTGRES_URI}?options=-csearch_path%3D{_RUN_ID}'
        else:
            _admin(backend, f'CREATE DATABASE IF NOT EXISTS {_RUN_ID}')
            _PRIVATE[backend] = f'{MYSQL_URI.rsplit("/", 1)[0]}/{_RUN_ID}'
    return _PRIVATE[backend]


def pytest_sessionfinish(session, exitstatus) -> None:
    for backend in list(_PRIVATE):
        kind = 'SCHEMA' if backend == 'postgres' else 'DATABASE'
        _admin(backend, f'DROP {kind} IF EXISTS {_RUN_ID}' + (' CASCADE' if backend == 'postgres' else ''))
        if backend == 'postgres':
            _admin(backend, f'DROP SCHEMA IF EXISTS {INTERNAL_SCHEMA} CASCADE')
        del _PRIVATE[backend]
    for engine in _ENGINES.values():
        engine.dispose()
    _ENGINES.clear()


def backend_uri(backend: str, tmp_path) -> str:
    if backend == 'sqlite':
        return f'sqlite:///{tmp_path}/test.sqlite'
    if backend == 'duckdb':
        return f'duckdb:///{tmp_path}/test.duckdb'
    if backend in ('postgres', 'mysql'):
        return _private_uri(backend)
    if backend == 'lake':  # a folder of Parquet tables; its metadata in SQLite inside it
        return f'file://{tmp_path}/lake'
    if backend == 'chdb':  # embedded ClickHouse; its metadata in SQLite inside its folder
        return f'chdb://{tmp_path}/chdb'
    name = f'sdtest_{uuid.uuid4().hex[:8]}'
    if MONGODB_URI:
        return f'{MONGODB_URI.rstrip("/")}/{name}'
    return f'mongomock://{name}'


def _open(backend: str, tmp_path) -> Iterator:
    with CFG.override(artifact_store=f'filesystem://{tmp_path}/artifacts', metadata_store=None):
        uri = backend_uri(backend, tmp_path)
        server = backend in ('postgres', 'mysql')
        before = set(_tables(uri)) if server else set()
        views = set(_views(uri)) if backend == 'mysql' else set()
        db = superduper(uri)
        try:
            yield db
        finally:
            db.close()
            if server:  # the test's tables, and superduperdb's own (made again by the next test)
                if backend == 'mysql':  # its output views (PostgreSQL's go with the internal schema)
                    _drop_views(uri, [v for v in _views(uri) if v not in views])
                _drop_tables(uri, [t for t in _tables(uri) if t not in before or t.startswith('_superduper')])
                if backend == 'postgres':
                    _admin(backend, f'DROP SCHEMA IF EXISTS {INTERNAL_SCHEMA} CASCADE')
            elif backend == 'mongodb':
                database = db.databackend.database
                database.client.drop_database(database.name)


#: The servers' engines, one per URI for the whole run (an engine made and disposed of for each
#: look cost two or three connections a test: 0.3 s a test on MariaDB)
_ENGINES: dict[str, Any] = {}


def _forget_engines_in_child() -> None:
    """A forked child leaves the parent's pooled connections alone (closing them would end
    the parent's sessions); it opens its own if it needs one."""
    for engine in _ENGINES.values():
        engine.dispose(close=False)
    _ENGINES.clear()


os.register_at_fork(after_in_child=_forget_engines_in_child)


@contextlib.contextmanager
def _connected(uri: str) -> Iterator[Any]:
    """An engine for ``uri``: the run's own for a server; a file's opened and disposed of here
    (DuckDB locks its file while an engine holds it)."""
    from superduperdb.backends.uri import backend_from

    if uri.startswith(('postgres', 'mysql')):
        if uri not in _ENGINES:
            _ENGINES[uri] = backend_from(uri).engine
        yield _ENGINES[uri]
        return
    engine = backend_from(uri).engine
    try:
        yield engine
    finally:
        engine.dispose()


def _tables(uri: str) -> list[str]:
    import sqlalchemy as sa

    with _connected(uri) as engine:
        return sa.inspect(engine).get_table_names()


def _views(uri: str) -> list[str]:
    import sqlalchemy as sa

    with _connected(uri) as engine:
        return sa.inspect(engine).get_view_names()


def _drop_views(uri: str, views: list[str]) -> None:
    import sqlalchemy as sa

    if views:
        with _connected(uri) as engine, engine.begin() as conn:
            quote = engine.dialect.identifier_preparer.quote
            conn.execute(sa.text(f'DROP VIEW IF EXISTS {", ".join(map(quote, views))}'))


def _drop_tables(uri: str, tables: list[str]) -> None:
    import sqlalchemy as sa

    if not tables:
        return
    with _connected(uri) as engine, engine.begin() as conn:
        quote = engine.dialect.identifier_preparer.quote
        # CASCADE: PostgreSQL refuses to drop a table that views read (outputs have views)
        cascade = ' CASCADE' if engine.dialect.name == 'postgresql' else ''
        conn.execute(sa.text(f'DROP TABLE IF EXISTS {", ".join(map(quote, tables))}{cascade}'))


def _drop_superduper_tables(uri: str) -> None:
    if uri.startswith('postgres'):  # its schema, with the views, queue and trigger functions in it
        _admin('postgres', f'DROP SCHEMA IF EXISTS {INTERNAL_SCHEMA} CASCADE')
    _drop_tables(uri, [t for t in _tables(uri) if t.startswith('_superduper')])


@pytest.fixture(params=[pytest.param(b, marks=getattr(pytest.mark, b)) for b in BACKENDS])
def backend(request) -> str:
    return request.param


@pytest.fixture
def db(backend, tmp_path) -> Iterator:
    """A Datalayer on each backend, with fresh metadata, cleaned up afterwards."""
    yield from _open(backend, tmp_path)


@pytest.fixture
def table_name() -> str:
    """A unique table name for one test (dropped with the test's other tables)."""
    return f'sdt_{uuid.uuid4().hex[:10]}'


@pytest.fixture(params=[pytest.param(b, marks=getattr(pytest.mark, b)) for b in SQL_BACKENDS])
def sql_db(request, tmp_path) -> Iterator:
    """Like ``db``, on the SQL backends only."""
    yield from _open(request.param, tmp_path)


@pytest.fixture
def app(db, table_name) -> Iterator[OtherApp]:
    """Another program writing to ``table_name`` through a driver connection of its own."""
    other = OtherApp(db, table_name)
    yield other
    other.close()


#: Debian's chromium, which the dashboard's browser tests drive (.ci/run installs it)
CHROMIUM = shutil.which('chromium') or '/usr/bin/chromium'


@pytest.fixture(scope='module')
def shared_browser():
    """Chromium through playwright, once a module; the test skips, saying why, where it is missing."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(
            "the dashboard tests need Debian's chromium: apt-get install -y chromium (.ci/run installs it)"
        )
    playwright_api = pytest.importorskip('playwright.sync_api')
    with playwright_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=['--no-sandbox', '--disable-gpu'])
        yield launched
        launched.close()


@pytest.fixture
def browser(shared_browser):
    """The browser, with every page a test opened closed after it (pages poll the server)."""
    yield shared_browser
    for context in shared_browser.contexts:
        context.close()


@pytest.fixture(scope='module')
def sentence_transformer():
    """all-MiniLM-L6-v2, loaded once a module (importing sentence_transformers takes seconds)."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(minilm_path(), device='cpu')


def pytest_collection_modifyitems(config, items) -> None:
    """Turn ``notimpl`` marks into strict xfails on the backends they name; run chdb's
    parameter only in :data:`CHDB_MODULES`."""
    kept, dropped = [], []
    for item in items:
        params = getattr(getattr(item, 'callspec', None), 'params', {})
        chdb = params.get('backend') == 'chdb'
        (dropped if chdb and item.module.__name__.rpartition('.')[2] not in CHDB_MODULES else kept).append(
            item
        )
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
    for item in items:
        backend = getattr(getattr(item, 'callspec', None), 'params', {}).get('backend')
        for mark in item.iter_markers('notimpl'):
            if backend in mark.args[0]:
                item.add_marker(
                    pytest.mark.xfail(
                        raises=mark.kwargs['raises'],
                        strict=True,
                        reason=f'notimpl on {backend}: {mark.kwargs.get("reason", "")}',
                    )
                )


# The fault suite's private PostgreSQL server (tests/faults.py), for any test that asks for it.
from faults import _postgres_template, private_postgres  # noqa: E402, F401
