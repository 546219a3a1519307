"""superduperdb's own objects: made on the first write, never on a look; all removed by
``db.drop_superduperdb()`` / ``superduperdb uninstall``; on PostgreSQL in a schema of their own.

What is compared is the database's own catalog, read by another connection (every table, view,
trigger, function and schema; every collection; every file of a lake), not superduperdb's records.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from superduperdb import CFG, Collection, VectorIndex, Watcher, superduper
from superduperdb.encoders.numpy import array
from superduperdb.models.function import FunctionModel
from tests.conftest import BACKENDS, POSTGRES_URI, backend_uri

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings('ignore::DeprecationWarning')


def _catalog_sql(uri: str) -> set[str]:
    """Every object of the database ``uri`` names, from a connection of its own (no search path
    of superduperdb's): tables, views, triggers, functions and schemas."""
    url = sa.engine.make_url(uri)
    if url.drivername.startswith('duckdb'):
        import duckdb

        conn = duckdb.connect(url.database, read_only=True)
        try:
            rows = conn.execute(_DUCKDB_CATALOG).fetchall()
        finally:
            conn.close()
        return {r[0] for r in rows}
    if url.drivername.startswith('postgres'):
        engine = sa.create_engine(POSTGRES_URI)
        query = """
            SELECT 'relation ' || n.nspname || '.' || c.relname FROM pg_class c
              JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'v', 'm', 'S') AND n.nspname LIKE :like
            UNION ALL SELECT 'trigger ' || t.tgname || ' on ' || c.relname FROM pg_trigger t
              JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE NOT t.tgisinternal AND n.nspname LIKE :like
            UNION ALL SELECT 'function ' || n.nspname || '.' || p.proname FROM pg_proc p
              JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname LIKE :like
            UNION ALL SELECT 'schema ' || nspname FROM pg_namespace WHERE nspname LIKE :like"""
        params = {'like': f'{os.environ["SUPERDUPERDB_TEST_RUN_ID"]}%'}
    elif url.drivername.startswith('mysql'):
        engine = sa.create_engine(_driver(uri))
        query = """
            SELECT CONCAT('relation ', table_name) FROM information_schema.tables
             WHERE table_schema = DATABASE()
            UNION ALL SELECT CONCAT('trigger ', trigger_name) FROM information_schema.triggers
             WHERE trigger_schema = DATABASE()
            UNION ALL SELECT CONCAT('routine ', routine_name) FROM information_schema.routines
             WHERE routine_schema = DATABASE()"""
        params = {}
    else:
        engine = sa.create_engine(uri)
        query = "SELECT type || ' ' || name FROM sqlite_master"
        params = {}
    try:
        with engine.connect() as conn:
            return set(conn.execute(sa.text(query), params).scalars())
    finally:
        engine.dispose()


def catalog(backend: str, uri: str, tmp_path: Path, db=None) -> set[str]:
    """What exists: the database's catalog, the collections of a MongoDB database, the files of a
    lake, and the files superduperdb keeps beside a database file. ``db``: a Datalayer open on a
    DuckDB file (one process opens it: its catalog is read through that connection)."""
    if backend == 'duckdb' and db is not None:
        with db.databackend.engine.connect() as conn:
            found = set(conn.execute(sa.text(_DUCKDB_CATALOG)).scalars())
        return found | _beside(tmp_path)
    if backend == 'mongodb':
        from superduperdb.backends.uri import backend_from

        found = {f'collection {name}' for name in backend_from(uri).list_tables()}
    elif backend == 'lake':
        root = Path(uri.removeprefix('file://'))
        found = {f'file {p.relative_to(root)}' for p in root.rglob('*')} if root.exists() else set()
    else:
        found = (
            _catalog_sql(uri)
            if backend in ('postgres', 'mysql') or Path(uri.split(':///')[1]).exists()
            else set()
        )
    return found | _beside(tmp_path)


def _beside(tmp_path: Path) -> set[str]:
    # (a SQLite file's -wal and -shm files are an open connection's, gone when the last closes)
    beside = {
        p.name
        for p in tmp_path.iterdir()
        if p.name != 'artifacts' and not p.name.endswith(('-wal', '-shm', '.wal'))
    }
    return {f'file {name}' for name in beside}


_DUCKDB_CATALOG = (
    "SELECT 'table ' || table_name FROM duckdb_tables() "
    "UNION ALL SELECT 'view ' || view_name FROM duckdb_views() WHERE NOT internal"
)


def _driver(uri: str) -> str:
    return uri.replace('mysql://', 'mysql+pymysql://', 1)


def _opened(backend: str, tmp_path: Path):
    """The test's database, without any of superduperdb's objects in it."""
    from tests.conftest import _drop_superduper_tables

    uri = backend_uri(backend, tmp_path)
    if backend in ('postgres', 'mysql'):
        _drop_superduper_tables(uri)
    return uri


def _mongo_catalog_with_fields(uri: str, table: str) -> list[dict]:
    from superduperdb.backends.uri import backend_from

    return sorted((d for chunk in backend_from(uri).find(table, {}) for d in chunk), key=lambda d: d['n'])


@pytest.mark.parametrize('backend', [pytest.param(b, marks=getattr(pytest.mark, b)) for b in BACKENDS])
def test_a_look_creates_nothing_and_the_first_write_makes_superduperdbs_tables(backend, tmp_path):
    """A newcomer's `superduperdb info --uri mysql://...` made 8 `_superduper_*` tables; so did
    `superduper(uri)` alone. Now connecting, show, status, find, info and jobs leave the database
    as it was; the first write makes them, and a process that looked before sees them after."""
    with CFG.override(artifact_store=None, metadata_store=None):
        uri = _opened(backend, tmp_path)
        if backend in ('sqlite', 'duckdb'):
            uri += '?create=true' if backend == 'sqlite' else ''
        if backend == 'lake':
            Path(uri.removeprefix('file://')).mkdir()
        table = f'sdt_{uuid.uuid4().hex[:8]}'
        if backend in ('postgres', 'mysql', 'sqlite', 'duckdb'):  # the user's table, made by another program
            engine = sa.create_engine(_driver(uri.split('?create')[0]))
            with engine.begin() as conn:
                conn.execute(sa.text(f'CREATE TABLE {table} (id INTEGER PRIMARY KEY, n INTEGER)'))
                conn.execute(sa.text(f'INSERT INTO {table} (id, n) VALUES (1, 10)'))
            engine.dispose()
        before = catalog(backend, uri.split('?create')[0], tmp_path)
        cli_uri = uri.split('?create')[0]
        for command in (['info'], ['jobs'], ['status']):  # (first: a DuckDB file has one process)
            done = subprocess.run(
                [sys.executable, '-m', 'superduperdb', *command, '--uri', cli_uri],
                capture_output=True,
                text=True,
                cwd=tmp_path,
                env={**os.environ, 'SUPERDUPERDB_ARTIFACT_STORE': ''},
                timeout=120,
            )
            assert done.returncode == 0, (command, done.stdout, done.stderr)
        looking = superduper(uri)
        assert looking.show() == {} and looking.status() == [] and looking.jobs() == []
        if backend in ('postgres', 'mysql', 'sqlite', 'duckdb'):
            assert [d['n'] for d in looking.execute(Collection(table).find())] == [10]
        assert catalog(backend, cli_uri, tmp_path, looking) == before  # nothing was made

        writer = superduper(uri)
        writer.execute(Collection('notes').insert_many([{'n': 1}, {'n': 2}]))
        writer.add(FunctionModel(identifier='double', object=lambda x: 2 * x))
        made = catalog(backend, cli_uri, tmp_path, writer) - before
        assert made, 'the first write made nothing'
        assert any('_superduper_components' in what for what in made) or backend == 'lake', made
        CFG_look = looking.metadata.LOOK_EVERY
        looking.metadata._looked_at -= CFG_look  # as if a second had passed
        assert looking.show() == {'model': ['double']}  # the looker sees the other's install
        assert looking.metadata.created_table('notes')
        writer.drop_superduperdb()
        writer.close()
        looking.close()
        left = catalog(backend, cli_uri, tmp_path) - before
        assert {what for what in left if '_superduper' in what and 'metadata.db' not in what} == set(), left
        _drop_users_tables(backend, cli_uri, [table, 'notes'])


def _ours(found: set[str]) -> set[str]:
    return {what for what in found if '_superduper' in what or '__n__' in what}


@pytest.mark.parametrize('backend', [pytest.param(b, marks=getattr(pytest.mark, b)) for b in BACKENDS])
def test_uninstall_removes_every_object_it_made_and_keeps_the_users_rows(backend, tmp_path):
    """Outputs, views, change-capture triggers and functions (PostgreSQL), vector indexes with
    their LanceDB files, failures, jobs, artifacts: after drop_superduperdb() the catalog is what
    it was before superduperdb came, the user's rows are unchanged, and a write installs again."""
    with CFG.override(artifact_store=None, metadata_store=None, **{'vector_search.path': None}):
        uri = _opened(backend, tmp_path)
        if backend == 'lake':
            Path(uri.removeprefix('file://')).mkdir()
        plain = uri
        if backend == 'sqlite':
            uri += '?create=true'
        table = f'sdt_{uuid.uuid4().hex[:8]}'
        if backend != 'lake' and backend != 'mongodb':
            engine = sa.create_engine(_driver(plain))
            with engine.begin() as conn:
                conn.execute(sa.text(f'CREATE TABLE {table} (id INTEGER PRIMARY KEY, n INTEGER)'))
                conn.execute(sa.text(f'INSERT INTO {table} (id, n) VALUES (1, 1), (2, 2), (3, 3)'))
            engine.dispose()
        before = catalog(backend, plain, tmp_path)
        db = superduper(uri)
        before = catalog(
            backend, plain, tmp_path, db
        )  # (a DuckDB file: its catalog as its connection sees it)
        if backend in ('lake', 'mongodb'):
            db.execute(Collection(table).insert_many([{'id': i, 'n': i} for i in (1, 2, 3)]))
        rows_before = sorted(d['n'] for d in db.execute(Collection(table).find()))
        vec = FunctionModel(
            identifier='vec',
            object=lambda n: np.array([n, 1.0], dtype='float32'),
            encoder=array('float32', (2,)),
        )
        db.add(
            Watcher(
                model=FunctionModel(identifier='double', object=lambda n: 2 * n),
                key='n',
                select=Collection(table).find(),
            )
        )
        db.add(
            VectorIndex(
                identifier='near',
                indexing_watcher=Watcher(model=vec, key='n', select=Collection(table).find()),
                engine='lancedb',
            )
        )
        assert [d['id'] for d in db.execute(Collection(table).like({'n': 2}, 'near', n=1))] == [2]
        if backend == 'postgres':
            db.cdc.poll_once()  # installs the change-capture queue, triggers and functions
        during = catalog(backend, plain, tmp_path, db)
        assert _ours(during - before), 'superduperdb made nothing to remove'
        vectors = db.vectors.files_of('near', 'lancedb')
        assert vectors is not None and Path(vectors).exists()

        report = db.drop_superduperdb()
        after = catalog(backend, plain, tmp_path, db)
        # what is left beyond the catalog before: the user's table (made by an insert on a lake
        # and on MongoDB, by another program elsewhere), nothing else
        assert {what for what in after - before if table not in what} == set(), sorted(after - before)
        assert before - after == set(), sorted(before - after)
        assert not Path(vectors).exists()
        assert any('table _superduper_components' in line for line in report.removed), report
        if backend == 'postgres':
            assert any(line.startswith('trigger _superduper_cdc') for line in report.removed), report
            assert any(line.startswith('function _superduper_cdc') for line in report.removed), report
            assert any(line.startswith('schema ') for line in report.removed), report
        if backend not in ('mongodb', 'lake'):
            assert any(line.startswith('view ') for line in report.removed), report
        rows_after = db.execute(Collection(table).find())
        assert sorted(d['n'] for d in rows_after) == rows_before
        if backend == 'mongodb':
            assert all('_outputs' not in d for d in _mongo_catalog_with_fields(plain, table))
        # the db goes on: the next write installs superduperdb again, empty
        assert db.show() == {}
        db.add(FunctionModel(identifier='again', object=lambda n: n))
        assert db.show() == {'model': ['again']}
        db.drop_superduperdb()
        db.close()
        _drop_users_tables(backend, plain, [table])


def _drop_users_tables(backend: str, uri: str, tables: list[str]) -> None:
    """The test's own tables on the shared servers (the next tests' catalogs start clean)."""
    if backend in ('postgres', 'mysql'):
        from tests.conftest import _drop_tables

        _drop_tables(uri, tables)


@pytest.mark.sqlite
def test_the_uninstall_command_asks_first_and_says_what_it_removed(tmp_path):
    uri = f'sqlite:///{tmp_path}/shop.db'
    with CFG.override(artifact_store=None):
        db = superduper(uri + '?create=true')
        db.execute(Collection('orders').insert_many([{'qty': i} for i in range(3)]))
        db.add(
            Watcher(
                model=FunctionModel(identifier='double', object=lambda x: 2 * x),
                key='qty',
                select=Collection('orders').find(),
            )
        )
        db.close()
    env = {**os.environ}
    env.pop('SUPERDUPERDB_ARTIFACT_STORE', None)
    command = [sys.executable, '-m', 'superduperdb', 'uninstall', '--uri', uri]
    no = subprocess.run(command, input='n\n', capture_output=True, text=True, env=env, timeout=120)
    assert no.returncode == 1 and 'nothing removed' in no.stdout
    assert '_superduper_components' in _catalog_sql(uri).__str__()
    yes = subprocess.run([*command, '--yes'], capture_output=True, text=True, env=env, timeout=120)
    assert yes.returncode == 0, yes.stderr
    assert 'table _superduper_components' in yes.stdout and 'view orders__qty__double' in yes.stdout
    assert 'table orders (made by an insert: your data)' in yes.stdout
    assert {what for what in _catalog_sql(uri) if what.startswith(('table', 'view'))} == {'table orders'}
    assert not Path(f'{tmp_path}/shop.db.artifacts').exists()


# ----- item 7: PostgreSQL, a schema of superduperdb's own ---------------------------------------
@pytest.fixture
def fresh_postgres_database():
    """A PostgreSQL database of this test's own: the default schema's name (superduperdb) is one
    per database, and another test run's would share it in database ``test``."""
    name = f'sdtest_db_{uuid.uuid4().hex[:8]}'
    admin = sa.create_engine(POSTGRES_URI, isolation_level='AUTOCOMMIT')
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE {name}'))
    try:
        yield POSTGRES_URI.rsplit('/', 1)[0] + '/' + name
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS {name} WITH (FORCE)'))
        admin.dispose()


def _schemas_of(uri: str) -> dict[str, set[str]]:
    engine = sa.create_engine(uri)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    'SELECT n.nspname, c.relname FROM pg_class c '
                    'JOIN pg_namespace n ON n.oid = c.relnamespace '
                    "WHERE c.relkind IN ('r', 'v') AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
                    "AND n.nspname NOT LIKE 'pg_toast%'"
                )
            ).all()
    finally:
        engine.dispose()
    found: dict[str, set[str]] = {}
    for schema, name in rows:
        found.setdefault(schema, set()).add(name)
    return found


@pytest.mark.postgres
def test_a_new_postgres_installation_keeps_superduperdb_in_a_schema_of_its_own(
    fresh_postgres_database, tmp_path
):
    uri = fresh_postgres_database
    with CFG.override(internal_schema=None, artifact_store=f'filesystem://{tmp_path}/artifacts'):
        db = superduper(uri)
        assert _schemas_of(uri) == {}  # connecting made no schema
        db.execute(Collection('items').insert_many([{'n': i} for i in range(3)]))
        db.add(
            Watcher(
                model=FunctionModel(identifier='double', object=lambda x: 2 * x),
                key='n',
                select=Collection('items').find(),
            )
        )
        found = _schemas_of(uri)
        assert found['public'] == {'items'}  # the user's table stays in the user's schema, alone
        assert {'_superduper_components', '_superduper_jobs', 'items__n__double'} <= found['superduperdb']
        assert db.execute(Collection('items').find_one({'n': 2}))['_outputs']['n']['double'] == 4
        db.close()
        again = superduper(uri)  # another process finds them there
        assert again.show('watcher') == ['double@items.n']
        report = again.drop_superduperdb()
        again.close()
        assert 'schema superduperdb' in report.removed
        assert _schemas_of(uri) == {'public': {'items'}}


@pytest.mark.postgres
def test_an_existing_postgres_installation_keeps_its_schema(fresh_postgres_database, tmp_path):
    uri = fresh_postgres_database
    with CFG.override(artifact_store=f'filesystem://{tmp_path}/artifacts'):
        with CFG.override(internal_schema='public'):  # installed beside the user's tables (as before)
            old = superduper(uri)
            old.execute(Collection('items').insert_many([{'n': 1}]))
            old.add(FunctionModel(identifier='double', object=lambda x: 2 * x))
            old.close()
        with CFG.override(internal_schema=None):  # the new default
            db = superduper(uri)
            assert db.show('model') == ['double']  # found where it was
            db.execute(Collection('more').insert_many([{'n': 1}]))
            found = _schemas_of(uri)
            assert set(found) == {'public'} and {'_superduper_components', 'items', 'more'} <= found['public']
            db.drop_superduperdb()
            db.close()
    with CFG.override(internal_schema='public', artifact_store=f'filesystem://{tmp_path}/artifacts'):
        named = superduper(uri)  # naming the connection's own schema: the same as ''
        named.add(FunctionModel(identifier='double', object=lambda x: 2 * x))
        assert set(_schemas_of(uri)) == {'public'}
        named.drop_superduperdb()
        named.close()


@pytest.mark.sqlite
def test_an_in_memory_database_gets_every_table_on_its_first_write():
    """An in-memory SQLite database has one connection per thread: a table's definition read
    through a second connection while its CREATE TABLE ran handed that connection back, which
    rolled the CREATE back (the first two of superduperdb's tables were missing)."""
    db = superduper('sqlite:///:memory:')
    db.execute(Collection('notes').insert_one({'text': 'hi'}))
    names = set(db.databackend.list_tables())
    assert {'_superduper_components', '_superduper_columns', '_superduper_tables', 'notes'} <= names
    assert db.metadata.created_table('notes')
    db.add(FunctionModel(identifier='same', object=lambda x: x))
    assert db.show('model') == ['same']
    db.close()
