"""Defaults that hold for every process that opens the database (issue 14).

The artifact store defaults to the database itself for servers (PostgreSQL, MariaDB,
MongoDB) and to ``<file>.artifacts`` beside a SQLite/DuckDB file: a program started in
another directory sees the same models. A write whose jobs cannot start still returns.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from superduperdb import CFG, Collection, Watcher, superduper
from superduperdb.base.exceptions import ComponentError, NotSupported
from superduperdb.store.artifacts import (
    DatabaseArtifactStore,
    FileSystemArtifactStore,
    FsspecArtifactStore,
    artifact_store_from_uri,
)
from tests.conftest import _drop_superduper_tables, _drop_tables, _tables, backend_uri

ROOT = Path(__file__).resolve().parents[1]

SETUP = """
import numpy as np
from superduperdb import Collection, VectorIndex, Watcher, superduper
db = superduper({uri!r})
coll = Collection({table!r})
rng = np.random.default_rng(0)
db.execute(coll.insert_many([{{'n': i, 'v': rng.normal(size=4).tolist()}} for i in range(20)]))
model = superduper(lambda v: np.asarray(v, dtype='float32') * 2, identifier='double')
index = db.add(VectorIndex('vecs', indexing_watcher=Watcher(model=model, key='v', select=coll.find())))
assert [j.status for j in index.jobs_] == ['success'], [j.error for j in index.jobs_]
print(db.artifact_store.describe())
"""

ELSEWHERE = """
from superduperdb import Collection, superduper
db = superduper({uri!r})
coll = Collection({table!r})
result = db.execute(coll.insert_one({{'n': 100, 'v': [1.0, 2.0, 3.0, 4.0]}}))
assert [j.status for j in result.jobs] == ['success', 'success'], [j.error for j in result.jobs]
found = [d['n'] for d in db.execute(coll.like({{'v': [1.0, 2.0, 3.0, 4.0]}}, 'vecs', n=3))]
assert found[0] == 100, found
print('status', [(s['watcher'], s['current']) for s in db.status()])
"""


def run(script: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith('SUPERDUPERDB_')}
    env['PYTHONPATH'] = str(ROOT)
    env['HF_HUB_OFFLINE'] = '1'
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [sys.executable, '-c', textwrap.dedent(script)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


SHARED = ('sqlite', 'duckdb', 'postgres', 'mysql')  # mongomock lives in one process: see
# test_default_artifact_store_per_backend for MongoDB (a second connection sees the artifacts)


@pytest.fixture(params=[pytest.param(b, marks=getattr(pytest.mark, b)) for b in SHARED])
def shared_uri(request, tmp_path):
    """A database URI two processes can open (no artifact store configured), cleaned up after."""
    backend = request.param
    uri = backend_uri(backend, tmp_path)
    if backend in ('sqlite', 'duckdb'):  # a relative path, as a user would write it
        (tmp_path / 'a' / 'data').mkdir(parents=True)  # a file is made, its folder never is
        uri = f'{backend}:///data/{backend}.db'
        yield uri, tmp_path / 'a'
        return
    _drop_superduper_tables(uri)
    before = set(_tables(uri))
    yield uri, None
    _drop_tables(uri, [t for t in _tables(uri) if t not in before])
    _drop_superduper_tables(uri)


@pytest.mark.slow
def test_a_program_in_another_directory_sees_the_models(shared_uri, tmp_path, table_name):
    """Set up in one directory; insert (the watcher runs), like() and status from another."""
    uri, home = shared_uri
    first = run(SETUP.format(uri=uri, table=table_name), home or tmp_path / 'a')
    assert first.returncode == 0, first.stderr[-3000:]
    assert '.superduperdb' not in first.stdout  # nothing kept under the working directory
    # a file's path is relative to where the program runs: name the same file from there
    second_uri = uri if home is None else f'{uri.split(":///")[0]}:///{home / "data" / Path(uri).name}'
    second = run(ELSEWHERE.format(uri=second_uri, table=table_name), tmp_path / 'b')
    assert second.returncode == 0, second.stderr[-3000:]
    assert "('vecs', 21)" in second.stdout or 'status' in second.stdout
    assert not (tmp_path / 'a' / '.superduperdb').exists()
    assert not (tmp_path / 'b' / '.superduperdb').exists()


def test_default_artifact_store_per_backend(backend, tmp_path, monkeypatch):
    """Servers (and in-memory databases): in the database; files: beside the file, absolute."""
    monkeypatch.chdir(tmp_path)
    with CFG.override(artifact_store=None, metadata_store=None):
        if backend in ('sqlite', 'duckdb'):
            (tmp_path / 'sub').mkdir()
            db = superduper(f'{backend}:///sub/my.db')
            try:
                assert isinstance(db.artifact_store, FileSystemArtifactStore)
                assert db.artifact_store.root == tmp_path / 'sub' / 'my.db.artifacts'
                assert db.spec['artifact_store'] == f'filesystem://{tmp_path}/sub/my.db.artifacts'
            finally:
                db.close()
            return
        if backend == 'lake':  # inside the lake's own folder, absolute
            db = superduper(backend_uri(backend, tmp_path))
            try:
                assert isinstance(db.artifact_store, FileSystemArtifactStore)
                assert db.artifact_store.root == tmp_path / 'lake' / '_superduper' / 'artifacts'
                assert db.spec['artifact_store'] == f'filesystem://{tmp_path}/lake/_superduper/artifacts'
            finally:
                db.close()
            return
        if backend in ('postgres', 'mysql'):
            uri = backend_uri(backend, tmp_path)
            _drop_superduper_tables(uri)
        else:
            uri = backend_uri(backend, tmp_path)
        db = superduper(uri)
        try:
            assert isinstance(db.artifact_store, DatabaseArtifactStore)
            key = db.artifact_store.put(b'weights')
            other = superduper(uri)  # another connection
            assert other.artifact_store.get(key) == b'weights'
            other.close()
            if db.spec is not None:
                assert db.spec['artifact_store'] == 'database'
        finally:
            if backend in ('postgres', 'mysql'):
                _drop_superduper_tables(uri)
            db.close()


def test_in_memory_sqlite_keeps_artifacts_in_the_database(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with CFG.override(artifact_store=None):
        db = superduper('sqlite:///:memory:')
    assert isinstance(db.artifact_store, DatabaseArtifactStore)
    assert list(tmp_path.iterdir()) == []


def test_large_artifacts_are_chunked_in_the_database(db, monkeypatch):
    """Rows stay small (MongoDB's 16 MB documents, MariaDB's packets); the bytes come back whole."""
    store = DatabaseArtifactStore(db.metadata.backend)
    monkeypatch.setattr(DatabaseArtifactStore, 'CHUNK', 1000)
    data = np.random.default_rng(0).bytes(3500)
    key = store.put(data)
    assert store.put(data) == key  # stored once
    rows = [r for chunk in store.backend.find(store.TABLE, {}) for r in chunk]
    mine = [r for r in rows if r['_id'].startswith(key)]
    assert sorted(r['_id'] for r in mine) == sorted([key] + [f'{key}.{i}' for i in range(1, 5)])
    assert max(len(bytes(r['data'])) for r in mine) <= 1000
    assert store.get(key) == data
    small = store.put(b'x' * 10)
    assert store.get(small) == b'x' * 10
    store.delete(key)
    assert not store.exists(key)
    left = [r for chunk in store.backend.find(store.TABLE, {}) for r in chunk if r['_id'].startswith(key)]
    assert left == []
    with pytest.raises(ComponentError, match='not a content hash'):
        store.get(f'{small}.1')  # a chunk row is not an artifact key


def test_fsspec_and_path_artifact_stores(tmp_path):
    memory = artifact_store_from_uri('memory://sddb-test/artifacts', None)  # type: ignore[arg-type]
    assert isinstance(memory, FsspecArtifactStore)
    key = memory.put(b'weights')
    assert memory.get(key) == b'weights' and memory.exists(key)
    with pytest.raises(ComponentError, match='not a content hash'):
        memory.get('../../etc/passwd')
    memory.delete(key)
    with pytest.raises(ComponentError, match='missing'):
        memory.get(key)
    local = artifact_store_from_uri(str(tmp_path / 'store'), None)  # type: ignore[arg-type]
    assert isinstance(local, FileSystemArtifactStore)
    assert local.get(local.put(b'w')) == b'w'


def test_a_write_whose_watcher_cannot_load_still_returns(db, table_name, tmp_path):
    """The row is committed: the write returns it with a failed job, and a retry is not needed."""
    coll = Collection(table_name)
    db.execute(coll.insert_one({'x': 1}))
    db.add(Watcher(model=superduper(lambda x: x + 1, identifier='inc'), key='x', select=coll.find()))
    # another program whose artifact store lacks the model (the old cwd-relative default)
    other = type(db)(db.databackend, db.metadata, FileSystemArtifactStore(tmp_path / 'elsewhere'))
    result = other.execute(coll.insert_one({'x': 2}))
    assert len(result.ids) == 1
    assert [(j.method, j.status) for j in result.jobs] == [('predict', 'failed')]
    assert 'is missing' in result.jobs[0].error
    assert db.execute(coll.count()) == 2
    assert other.job(result.jobs[0].id).status == 'failed'  # recorded, visible in db.jobs()
    # run again where the model loads: the watcher's outputs for that row appear
    from superduperdb.jobs.job import run_job

    run_job(db, result.jobs[0].id)
    row = db.execute(coll.find_one({'x': 2}))
    assert row['_outputs']['x']['inc'] == 3


@pytest.mark.notimpl(
    ['lake'], raises=NotSupported, reason='lake tables are append-only: updates and deletes are refused'
)
def test_updates_and_deletes_whose_jobs_cannot_start_still_return(db, table_name, tmp_path):
    from superduperdb import VectorIndex

    coll = Collection(table_name)
    db.execute(coll.insert_many([{'n': i, 'v': [float(i), 1.0]} for i in range(3)]))
    model = superduper(lambda v: np.asarray(v, dtype='float32'), identifier='vec')
    db.add(VectorIndex('idx', indexing_watcher=Watcher(model=model, key='v', select=coll.find())))
    other = type(db)(db.databackend, db.metadata, FileSystemArtifactStore(tmp_path / 'elsewhere'))
    updated = other.execute(coll.update_many({'n': 1}, {'$set': {'v': [5.0, 5.0]}}))
    assert updated.count == 1
    methods = [(j.method, j.status) for j in updated.jobs]
    assert methods == [('predict', 'failed'), ('vector_update', 'failed')]
    assert 'is missing' in updated.jobs[0].error
    deleted = other.execute(coll.delete_one({'n': 2}))
    assert deleted.count == 1 and all(j.status in ('success', 'failed') for j in deleted.jobs)
    assert db.execute(coll.count()) == 2
    from superduperdb.jobs.job import run_job

    for job in [*updated.jobs, *(j for j in deleted.jobs if j.status == 'failed')]:
        run_job(db, job.id)  # where the model loads, they run
    found = [d['n'] for d in db.execute(coll.like({'v': [5.0, 5.0]}, 'idx', n=3))]
    assert found[0] == 1 and 2 not in found


def test_lancedb_files_live_beside_the_database_not_the_working_directory(tmp_path, monkeypatch):
    """LanceDB's default path (vector_search.path unset): ``<file>.vectors`` beside a SQLite
    file; a second program in another directory opens the same files."""
    pytest.importorskip('lancedb')
    from superduperdb import VectorIndex

    (tmp_path / 'a' / 'data').mkdir(parents=True)
    (tmp_path / 'b').mkdir()
    monkeypatch.chdir(tmp_path / 'a')
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(30, 4)).astype('float32')
    with CFG.override(**{'vector_search.path': None, 'vector_search.engine': 'lancedb'}):
        db = superduper('sqlite:///data/x.db')
        coll = Collection('vecs')
        db.execute(coll.insert_many([{'n': i, 'v': v.tolist()} for i, v in enumerate(vectors)]))
        model = superduper(lambda v: np.asarray(v, dtype='float32'), identifier='same')
        db.add(VectorIndex('vi', indexing_watcher=Watcher(model=model, key='v', select=coll.find())))
        assert [d['n'] for d in db.execute(coll.like({'v': vectors[7]}, 'vi', n=1))] == [7]
        files = tmp_path / 'a' / 'data' / 'x.db.vectors'
        assert (files / db.vectors.loaded(db.load('vector_index', 'vi')).engine.uri.split('/')[-1]).exists()
        assert not (tmp_path / 'a' / '.superduperdb').exists()
        db.close()

        monkeypatch.chdir(tmp_path / 'b')
        other = superduper(f'sqlite:///{tmp_path}/a/data/x.db')
        engine = other.vectors.loaded(other.load('vector_index', 'vi')).engine
        assert engine.path == str(files)  # the same files, not a new copy under b/
        assert [d['n'] for d in other.execute(coll.like({'v': vectors[3]}, 'vi', n=1))] == [3]
        assert list((tmp_path / 'b').iterdir()) == []
        other.close()


@pytest.mark.parametrize('backend', ['postgres'], indirect=True)
def test_lancedb_default_path_for_a_server_is_per_database(db):
    from superduperdb.vector_search.indexes import default_vectors_path

    path = Path(default_vectors_path(db.databackend))
    assert path.is_absolute() and path.parent == Path('~/.superduperdb/vectors').expanduser()
    assert path.name.startswith('postgresql-')
    from superduperdb.backends.uri import backend_from

    other = backend_from('postgresql://postgres@127.0.0.1:5432/postgres')  # opens nothing yet
    try:
        assert default_vectors_path(other) != str(path)  # another database, other files
    finally:
        other.close()
