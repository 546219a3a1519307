"""Fault suite for writes (issue 13, items 1, 3, 4 and 5): forked writers, outputs that cannot be
stored, a first insert that fails or is killed half-way, and processes starting together.

Everything here runs real processes (multiprocessing with the fork and the spawn start methods,
and ``subprocess`` children killed with SIGKILL) against real databases.
"""

from __future__ import annotations

import multiprocessing
import os
import uuid

import pytest

from superduperdb import CFG, Collection, superduper
from tests.conftest import backend_uri

# ----- item 1: ids stay unique across forks --------------------------------------------------


def _forked_writer(uri: str, table: str, artifacts: str, batches: int, per_batch: int, results) -> None:
    """Insert ``batches`` x ``per_batch`` documents; report how many batches failed and why."""
    failed: list[str] = []
    with CFG.override(artifact_store=artifacts, metadata_store=None):
        db = superduper(uri)
        try:
            for b in range(batches):
                try:
                    docs = [{'n': b * per_batch + i} for i in range(per_batch)]
                    db.execute(Collection(table).insert_many(docs))
                except Exception as exc:  # counted and reported to the parent, which asserts
                    failed.append(f'{type(exc).__name__}: {exc}')
        finally:
            db.close()
    results.put(failed)


@pytest.mark.parametrize(
    'backend',
    [pytest.param('sqlite', marks=pytest.mark.sqlite), pytest.param('postgres', marks=pytest.mark.postgres)],
)
def test_writers_forked_after_import_make_unique_ids(backend, db, table_name, tmp_path):
    """Issue 13.1: children forked after the parent made ids continue no shared sequence.

    Before the fix: 3 of 4 forked writers failed (``UNIQUE constraint failed: <table>._id``).
    """
    table = table_name
    artifacts = f'filesystem://{tmp_path}/artifacts'
    uri = backend_uri(backend, tmp_path)
    db.execute(Collection(table).insert_one({'n': -1}))  # the parent makes an id before forking
    ctx = multiprocessing.get_context('fork')
    results = ctx.Queue()
    writers, batches, per_batch = 4, 5, 20  # 400 rows, and the parent's one
    procs = [
        ctx.Process(target=_forked_writer, args=(uri, table, artifacts, batches, per_batch, results))
        for _ in range(writers)
    ]
    for p in procs:
        p.start()
    failures = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    failed_writers, failed_batches = sum(1 for f in failures if f), sum(map(len, failures))
    ids = [doc['_id'] for doc in db.execute(Collection(table).find())]
    assert (failed_writers, failed_batches, len(ids), len(set(ids))) == (0, 0, 401, 401), failures


def test_new_id_is_reseeded_in_a_forked_child():
    """The random part of the id differs between a parent and a child forked after import."""
    from superduperdb.base.document import new_id

    parent = new_id()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next id and leave at once
        os.write(write, new_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 24
    assert child[8:18] != parent[8:18]  # the per-process random bytes


def _inherited_writer(db, table: str, start: int, results) -> None:
    """Use the Datalayer the parent opened before forking: read, insert (its watcher runs here)."""
    try:
        counts = []
        for i in range(20):
            counts.append(db.execute(Collection(table).count()))
            db.execute(Collection(table).insert_one({'x': start + i}))
        results.put(('ok', counts))
    except Exception as exc:  # reported to the parent, which asserts
        results.put(('failed', f'{type(exc).__name__}: {exc}'))


@pytest.mark.parametrize(
    'backend',
    [pytest.param(b, marks=getattr(pytest.mark, b)) for b in ('sqlite', 'postgres', 'mysql')],
)
def test_a_datalayer_opened_before_a_fork_works_in_parent_and_children(backend, db, table_name):
    """Children forked after the parent used its database (gunicorn --preload, Celery prefork,
    multiprocessing's fork) keep using the inherited ``db``, while the parent goes on using it.

    Before the fix, parent and children shared the pooled sockets: on PostgreSQL and MariaDB the
    children failed ("No row was found when one was required", "the connection is lost",
    "Lost connection to MySQL server") and so did the parent ("Command Out of Sync").
    """
    from superduperdb import Watcher

    coll = Collection(table_name)
    db.execute(coll.insert_many([{'x': i} for i in range(100)]))
    db.add(Watcher(model=superduper(lambda x: 2 * x, identifier='double'), key='x', select=coll.find()))
    assert db.execute(coll.count()) == 100  # the pool holds a connection the children inherit
    ctx = multiprocessing.get_context('fork')
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_inherited_writer, args=(db, table_name, 1000 * (k + 1), results))
        for k in range(3)
    ]
    for p in procs:
        p.start()
    parent_counts = []
    for i in range(20):  # the parent reads and writes at the same time
        parent_counts.append(db.execute(coll.count()))
        db.execute(coll.insert_one({'x': 5000 + i}))
    reports = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert [kind for kind, _ in reports] == ['ok'] * 3, reports
    for counts in [parent_counts] + [c for _, c in reports]:
        assert counts == sorted(counts) and counts[0] >= 100 and counts[-1] < 180  # each count a real one
    docs = list(db.execute(coll.find()))
    assert len(docs) == 180
    assert all(d['_outputs']['x']['double'] == 2 * d['x'] for d in docs)  # the children's watchers ran
    assert {j.status for j in db.jobs()} == {'success'}


@pytest.mark.parametrize('backend', [pytest.param('sqlite', marks=pytest.mark.sqlite)])
def test_a_child_forked_mid_heartbeat_neither_deadlocks_nor_beats_for_its_parents_jobs(backend, db):
    """A fork while the heartbeat thread holds its lock, with a job running: the child can run
    jobs of its own (a copy of the held lock would never be released there) and does not claim
    the parent's running job as its own."""
    from superduperdb.jobs import job as jobs

    with jobs._heartbeat(db, 'parents-job', jobs._Captured()), jobs._running_lock:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report, then leave at once
            free = jobs._running_lock.acquire(timeout=2)
            os.write(write, f'{free} {sorted(jobs._running)}'.encode())
            os._exit(0)
    os.close(write)
    reported = os.read(read, 200).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert reported == 'True []'


def _count_and_insert(db, table: str, x: int) -> tuple[int, int]:
    """A pool task given the parent's Datalayer: (this process's id for the db object, count)."""
    db.execute(Collection(table).insert_one({'x': x}))
    return id(db), db.execute(Collection(table).count())


@pytest.mark.parametrize(
    'backend',
    [pytest.param(b, marks=getattr(pytest.mark, b)) for b in ('sqlite', 'postgres', 'mongodb')],
)
def test_a_datalayer_sent_to_spawned_processes_opens_the_same_database(backend, db, table_name):
    """multiprocessing's spawn (and forkserver, Python 3.14's default on Linux) pickles task
    arguments: a Datalayer travels as its spec and is opened once per process there. One that
    no other process can open (mongomock, in memory) says so instead of an obscure pickling error.
    """
    import pickle

    from superduperdb import Watcher

    coll = Collection(table_name)
    db.execute(coll.insert_many([{'x': i} for i in range(10)]))
    if db.spec is None:  # mongomock: in this process only
        with pytest.raises(TypeError, match='cannot be sent to another process.*superduper\\(uri\\)'):
            pickle.dumps(db)
        return
    db.add(Watcher(model=superduper(lambda x: 2 * x, identifier='double'), key='x', select=coll.find()))
    ctx = multiprocessing.get_context('spawn')
    with ctx.Pool(2) as pool:
        answers = pool.starmap(_count_and_insert, [(db, table_name, 100 + i) for i in range(8)])
    assert len({process_db for process_db, _ in answers}) <= 2  # opened once per process, not per task
    assert all(10 < count <= 18 for _, count in answers)
    docs = list(db.execute(coll.find()))
    assert sorted(d['x'] for d in docs) == list(range(10)) + list(range(100, 108))
    assert all(d['_outputs']['x']['double'] == 2 * d['x'] for d in docs)  # the watcher ran there too


# ----- item 4: a failed or killed first insert leaves a table superduperdb can extend ------------

SQL_BACKENDS = [
    pytest.param(b, marks=getattr(pytest.mark, b)) for b in ('sqlite', 'duckdb', 'postgres', 'mysql')
]


@pytest.mark.parametrize('backend', SQL_BACKENDS)
def test_a_failed_first_insert_leaves_a_table_that_can_be_extended(backend, db, table_name, tmp_path):
    """Issue 13.4: a duplicate key in the first insert; the next inserts add fields.

    Before the fix: the table was created (committed) but never recorded, so the next insert
    with a new field was refused (QueryError: superduperdb does not alter tables it did not create).
    """
    from superduperdb.base.exceptions import WriteFailed

    with pytest.raises(WriteFailed, match='rolled back'):
        db.execute(Collection(table_name).insert_many([{'_id': 'a', 'x': 1}, {'_id': 'a', 'x': 2}]))
    # where DDL is transactional the table went with the insert; on MariaDB it stays, recorded
    left = db.databackend.has_table(table_name)
    db.execute(Collection(table_name).insert_one({'_id': 'b', 'x': 3, 'added': 'yes'}))
    other = superduper(backend_uri(backend, tmp_path))  # a process that never saw the failure
    try:
        other.execute(Collection(table_name).insert_one({'_id': 'c', 'x': 4, 'also': 1.5}))
        found = other.execute(Collection(table_name).find())
        rows = sorted((d['_id'], d['x'], d.get('added'), d.get('also')) for d in found)
    finally:
        other.close()
    assert rows == [('b', 3, 'yes', None), ('c', 4, None, 1.5)]
    assert left is (backend == 'mysql')


_KILLER = r"""
import os, signal, sys
import sqlalchemy as sa
from superduperdb import CFG, Collection, superduper

uri, table, artifacts, point = sys.argv[1:5]
created = []

def kill_after(conn, cursor, statement, parameters, context, executemany):
    words = ' '.join(statement.split()).upper()
    if words.startswith('CREATE TABLE') and table.upper() in words:
        created.append(True)
    if words.startswith(point) and (table.upper() in words or point.endswith('_SUPERDUPER_TABLES')):
        os.kill(os.getpid(), signal.SIGKILL)  # after the database ran it, before anything else

def kill_at_commit(conn):
    if point == 'COMMIT' and created:  # the commit of the step that created the table
        os.kill(os.getpid(), signal.SIGKILL)

with CFG.override(artifact_store=artifacts, metadata_store=None):
    db = superduper(uri)
    sa.event.listen(sa.engine.Engine, 'after_cursor_execute', kill_after)
    sa.event.listen(sa.engine.Engine, 'commit', kill_at_commit)
    db.execute(Collection(table).insert_many([{'n': i} for i in range(10)]))
print('not killed', flush=True)
"""

#: where the first insert's process is killed: after these statements ran, or just before the
#: COMMIT of the step that creates the table (its rows written, by INSERT or COPY)
_KILL_POINTS = ('CREATE TABLE', 'INSERT INTO _SUPERDUPER_TABLES', 'COMMIT')


@pytest.mark.parametrize('backend', SQL_BACKENDS)
def test_a_first_insert_killed_between_its_steps_leaves_a_table_that_can_be_extended(
    backend, db, table_name, tmp_path
):
    """Issue 13.4: SIGKILL after CREATE TABLE, after the record, before the COMMIT.

    Each time the next process inserts documents with a new field, and exactly its rows are
    there. Before the fix, on every backend, a kill after CREATE TABLE or after the INSERT left
    a table that refused the new field.
    """
    import subprocess
    import sys

    uri = backend_uri(backend, tmp_path)
    artifacts = f'filesystem://{tmp_path}/artifacts'
    outcomes = {}
    for i, point in enumerate(_KILL_POINTS):
        table = f'{table_name}_{i}'
        db.databackend.engine.dispose()  # a DuckDB file takes one process at a time
        child = subprocess.run(
            [sys.executable, '-c', _KILLER, uri, table, artifacts, point],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert child.returncode in (-9, 0), child.stderr[-2000:]
        nxt = superduper(uri)
        try:
            nxt.execute(Collection(table).insert_many([{'n': n, 'added': 'x'} for n in range(3)]))
            outcome = ('extended', nxt.execute(Collection(table).count()))
        except Exception as exc:  # recorded: the assertion below names what happened at each point
            outcome = (type(exc).__name__, None)
        finally:
            nxt.close()
        outcomes[point] = (child.returncode, *outcome)
        db.drop_table(table)
    assert outcomes == {point: (-9, 'extended', 3) for point in _KILL_POINTS}


# ----- item 5: processes starting together, and first inserts racing --------------------------


def _racer(uris: list[str], artifacts: str, table: str, barrier, results, per_batch: int) -> None:
    """For each brand-new database: open it when the others do, then insert two batches into a
    table none of them has created (the second batch with a new field) when the others do."""
    from superduperdb import CFG, Collection, superduper

    me = os.getpid()
    for uri in uris:
        outcome = None
        try:
            barrier.wait(timeout=120)  # every process imported: open the new database together
            with CFG.override(artifact_store=artifacts, metadata_store=None):
                db = superduper(uri)
                try:
                    barrier.wait(timeout=120)
                    db.execute(Collection(table).insert_many([{'w': me, 'i': i} for i in range(per_batch)]))
                    late = [{'w': me, 'i': per_batch + i, 'late': 1} for i in range(per_batch)]
                    db.execute(Collection(table).insert_many(late))
                finally:
                    db.close()
        except Exception as exc:  # reported to the parent, which counts and asserts
            outcome = f'{type(exc).__name__}: {str(exc)[:300]}'
        results.put(outcome)


def _fresh_database(backend: str, tmp_path, name: str) -> str:
    from tests.conftest import MYSQL_URI, POSTGRES_URI, _admin

    if backend == 'postgres':
        _admin(backend, f'CREATE SCHEMA {name}')
        return f'{POSTGRES_URI}?options=-csearch_path%3D{name}'
    if backend == 'mysql':
        _admin(backend, f'CREATE DATABASE {name}')
        return f'{MYSQL_URI.rsplit("/", 1)[0]}/{name}'
    return f'sqlite:///{tmp_path}/{name}.sqlite'


@pytest.mark.parametrize(
    'backend',
    [pytest.param(b, marks=getattr(pytest.mark, b)) for b in ('postgres', 'mysql', 'sqlite')],
)
def test_processes_starting_together_on_a_new_database_all_succeed_and_lose_no_batch(backend, tmp_path):
    """Issue 13.5: 4 processes (spawn) open a brand-new database at once, 3 times, then race
    their first inserts into a new table (and a new column). All succeed; no row is lost.

    Before the fix on PostgreSQL: start-ups failed with ``duplicate key value violates unique
    constraint "pg_type_typname_nsp_index"`` / ``relation ... already exists``, and a racing
    first insert lost its batch.
    """
    from superduperdb.backends.uri import backend_from
    from tests.conftest import INTERNAL_SCHEMA, _admin

    names = [f'sdrace_{uuid.uuid4().hex[:10]}' for _ in range(3)]
    uris = [_fresh_database(backend, tmp_path, name) for name in names]
    table, processes, per_batch = 'raced', 4, 25
    ctx = multiprocessing.get_context('spawn')
    barrier, results = ctx.Barrier(processes), ctx.Queue()
    artifacts = f'filesystem://{tmp_path}/artifacts'
    procs = [
        ctx.Process(target=_racer, args=(uris, artifacts, table, barrier, results, per_batch))
        for _ in range(processes)
    ]
    try:
        for p in procs:
            p.start()
        outcomes = [results.get(timeout=300) for _ in range(processes * len(uris))]
        for p in procs:
            p.join(timeout=60)
        counts = []
        for uri in uris:
            backend_ = backend_from(uri)
            try:
                rows, late = backend_.count(table, {}), backend_.count(table, {'late': 1})
                counts.append((rows, late, len(set(backend_.keys(table, {})))))
            finally:
                backend_.close()
        failures = [o for o in outcomes if o is not None]
        assert (len(failures), counts) == (0, [(200, 100, 200)] * len(uris)), failures
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
        if backend in ('postgres', 'mysql'):
            for name in names:
                drop = f'DROP SCHEMA IF EXISTS {name} CASCADE' if backend == 'postgres' else None
                _admin(backend, drop or f'DROP DATABASE IF EXISTS {name}')
        if backend == 'postgres':  # the racers made superduperdb's schema: a later test's tables
            # would be created in it (it comes first in the search path)
            _admin(backend, f'DROP SCHEMA IF EXISTS {INTERNAL_SCHEMA} CASCADE')


_raced: list[int] = []


def inc_raced(x):
    """x + 1; on its first call in a test, another Datalayer (as another process would) runs the
    same backfill to the end first: the outputs this run computes are then stored already."""
    if not _raced:
        _raced.append(1)
        other, select = _racer
        other.load('model', 'inc_raced').predict(X='x', db=other, select=select)
    return x + 1


@pytest.mark.parametrize(
    'backend',
    [pytest.param(b, marks=getattr(pytest.mark, b)) for b in ('sqlite', 'postgres', 'mysql')],
)
def test_two_runs_of_one_backfill_at_once_store_each_output_once_and_fail_nothing(
    backend, db, table_name, tmp_path
):
    """Replicas of an application that each ``db.add`` the same watcher at start-up run its
    backfill at the same time. Before the fix (4 processes, PostgreSQL): the losing runs stored
    nothing and recorded every row as failed ("duplicate key value violates unique constraint")
    although every output was there (status: current 50, failed 50), and a run whose failure
    ledger insert collided with another's ended ``failed``."""
    global _racer
    coll = Collection(table_name)
    db.execute(coll.insert_many([{'x': i} for i in range(50)]))
    model = superduper(inc_raced, identifier='inc_raced')
    db.add(model)
    other = superduper(backend_uri(backend, tmp_path))  # its own connections, as another process
    _racer, _raced[:] = (other, coll.find()), []
    try:
        report = model.predict(X='x', db=db, select=coll.find())
    finally:
        other.close()
    assert _raced == [1]  # the other run did happen first
    assert report.failed == 0, report
    out = db.execute(coll.find())
    assert sorted(d['_outputs']['x']['inc_raced'] for d in out) == list(range(1, 51))
    from superduperdb.store.outputs import output_table

    assert db.metadata.failures(output_table(table_name, 'x', 'inc_raced')) == []


@pytest.mark.parametrize(
    'backend',
    [pytest.param(b, marks=getattr(pytest.mark, b)) for b in ('sqlite', 'postgres', 'mysql')],
)
def test_failure_entries_another_process_records_meanwhile_are_bumped_not_a_failed_job(
    backend, db, tmp_path, monkeypatch
):
    """Two runs record the same failed row at once: between this run's read of the ledger and
    its insert, the other run's entry lands (forced here at that point). Before the fix the
    insert's duplicate key failed the whole job."""
    from superduperdb.store.metadata import FAILURES

    db.metadata.install()  # (a database with watchers: superduperdb's tables are there)
    other = superduper(backend_uri(backend, tmp_path))  # its own connections, as another process
    real_delete = db.metadata.backend.delete
    raced: list[int] = []

    def delete_then_race(table, *args, **kwargs):
        result = real_delete(table, *args, **kwargs)
        if table == FAILURES and not raced:
            raced.append(1)
            other.metadata.record_failures('out_t', {'r1': ValueError('theirs')})
        return result

    monkeypatch.setattr(db.metadata.backend, 'delete', delete_then_race)
    try:
        db.metadata.record_failures('out_t', {'r1': ValueError('mine'), 'r2': ValueError('mine too')})
    finally:
        other.close()
    entries = {e['source_id']: (e['attempts'], e['message']) for e in db.metadata.failures('out_t')}
    assert raced == [1]
    assert entries == {'r1': (2, 'mine'), 'r2': (1, 'mine too')}


# ----- item 3: one unstorable output fails its row, not the chunk ------------------------------


def _status_of(db, watcher_table: str) -> tuple[int, int, int]:
    (row,) = [s for s in db.status() if s['table'] == watcher_table]
    return row['current'], row['failed'], row['backlog']


def _predict_with_status(db, table_name, fn, n=100):
    """``fn`` as a watcher over ``n`` rows (ids 0..n-1), whose backfill computes them all in
    chunks of 40; then the report of a rerun, the ledger and the status."""
    from superduperdb import Watcher
    from superduperdb.store.outputs import output_table

    coll = Collection(table_name)
    db.execute(coll.insert_many([{'_id': i, 'n': i} for i in range(n)]))
    model = superduper(fn, identifier=fn.__name__)
    db.chunk_size = 40
    db.add(Watcher(model=model, key='n', select=coll.find()))  # the backfill runs here
    status = _status_of(db, table_name)
    report = model.predict(X='n', db=db, select=coll.find())  # a rerun: retries the failed rows only
    ledger = db.metadata.failures(output_table(table_name, 'n', fn.__name__))
    return report, ledger, status


def set_for_13(n):
    return {1, 2} if n == 13 else float(n)


@pytest.mark.parametrize('backend', [*SQL_BACKENDS, pytest.param('mongodb', marks=pytest.mark.mongodb)])
def test_an_output_that_cannot_be_encoded_fails_its_row_only(backend, db, table_name):
    """Issue 13.3: a model returns a ``set`` for one row of 100.

    Before: 0 of 100 outputs stored, the ledger empty, status current 0 / failed 0 / backlog 100.
    """
    report, ledger, status = _predict_with_status(db, table_name, set_for_13)
    assert (report.computed, report.skipped, report.failed) == (0, 99, 1)
    assert [(r['source_id'], r['error'], r['attempts']) for r in ledger] == [('13', 'EncodingError', 2)]
    assert 'row 13' in ledger[0]['message'] and 'set' in ledger[0]['message']
    assert status == (99, 1, 0)
    docs = list(db.execute(Collection(table_name).find()))
    stored = {d['_id']: d.get('_outputs', {}).get('n', {}).get('set_for_13') for d in docs}
    assert stored == {i: (None if i == 13 else float(i)) for i in range(100)}


def two_shapes(n):
    import numpy as np

    return np.zeros(4 if n in (50, 77) else 3, dtype='float32') + n


@pytest.mark.parametrize('backend', [*SQL_BACKENDS, pytest.param('mongodb', marks=pytest.mark.mongodb)])
def test_outputs_of_another_shape_than_the_first_stored_fail_their_rows_only(backend, db, table_name):
    """Issue 13.3: two rows of 100 give a 4-vector where the others give 3-vectors.

    The rule: the first stored output fixes the output's type (on MongoDB, where each value
    names its own encoder, every shape is stored). Before: 0 of 100 stored, ledger empty.
    """
    report, ledger, status = _predict_with_status(db, table_name, two_shapes)
    if backend == 'mongodb':
        assert (report.skipped, report.failed, status) == (100, 0, (100, 0, 0))
        return
    assert (report.computed, report.skipped, report.failed) == (0, 98, 2)
    assert sorted(r['source_id'] for r in ledger) == ['50', '77']
    assert all('numpy.float32[3]' in r['message'] and 'first stored output' in r['message'] for r in ledger)
    assert status == (98, 2, 0)
    docs = list(db.execute(Collection(table_name).find()))
    shapes = {d['_id']: d.get('_outputs', {}).get('n', {}).get('two_shapes') for d in docs}
    assert sorted(i for i, v in shapes.items() if v is None) == [50, 77]
    assert all(v.x.shape == (3,) and v.x[0] == i for i, v in shapes.items() if v is not None)


def nan_for_7(n):
    return float('nan') if n == 7 else n / 2


@pytest.mark.parametrize('backend', [*SQL_BACKENDS, pytest.param('mongodb', marks=pytest.mark.mongodb)])
def test_a_nan_output_fails_its_row_only(backend, db, table_name):
    """Issue 13.3: NaN for one row of 100 fails that row alone, on every backend (the value
    policy, docs/concepts.md: SQLite would read it back as None, MySQL/MariaDB refuse it).

    Before on MariaDB: 0 of 100 stored, ledger empty, status current 0 / failed 0 / backlog 100;
    on SQLite the NaN was stored as NULL and counted current.
    """
    report, ledger, status = _predict_with_status(db, table_name, nan_for_7)
    found = db.execute(Collection(table_name).find())
    docs = {d['_id']: d.get('_outputs', {}).get('n', {}).get('nan_for_7') for d in found}
    assert (report.skipped, report.failed, status) == (99, 1, (99, 1, 0))
    assert [(str(r['source_id']), r['error']) for r in ledger] == [('7', ledger[0]['error'])]
    assert ledger[0]['error'] in ('EncodingError', 'InvalidValue')
    assert 'nan' in ledger[0]['message'] and (
        'finite' in ledger[0]['message'] or 'None' in ledger[0]['message']
    )
    assert 7 not in docs or docs[7] is None
    assert all(docs[i] == i / 2 for i in range(100) if i != 7)


def bad_row_for_storage(n):
    return 'x' * 10 if n == 21 else n  # a string where the first stored outputs are ints


@pytest.mark.parametrize('backend', SQL_BACKENDS)
def test_an_output_of_another_plain_type_fails_its_row_only(backend, db, table_name):
    """A str among int outputs: refused by the type rule on every SQL backend (SQLite would
    otherwise keep a string in an integer column)."""
    report, ledger, status = _predict_with_status(db, table_name, bad_row_for_storage)
    assert (report.skipped, report.failed, status) == (99, 1, (99, 1, 0))
    assert [r['source_id'] for r in ledger] == ['21']


def test_bulk_write_failures_are_found_by_halving_with_few_extra_writes():
    """A bulk write that fails is retried in halves: the failing items are found, the others
    stored once, in about 2 log2(n) extra writes per failing item (none when nothing fails)."""
    from superduperdb.base.exceptions import WriteFailed
    from superduperdb.store.outputs import _isolating

    writes, stored = [], []

    def store(part):
        writes.append(len(part))
        if any(x in (3, 70) for x in part):
            raise WriteFailed('refused')
        stored.extend(part)

    failed = _isolating(store, list(range(100)), lambda x: x)
    assert sorted(failed) == [3, 70] and sorted(stored) == [x for x in range(100) if x not in (3, 70)]
    assert len(writes) <= 1 + 2 * 2 * 7
    writes.clear()
    assert _isolating(store, [1, 2], lambda x: x) == {} and writes == [2]


@pytest.mark.sqlite
def test_with_the_metadata_in_another_database_a_failed_first_insert_leaves_an_extendable_table(tmp_path):
    """Issue 13.4, where one transaction cannot hold both: the record is written first (an intent)."""
    from superduperdb.base.exceptions import WriteFailed

    with CFG.override(
        artifact_store=f'filesystem://{tmp_path}/a', metadata_store=f'sqlite:///{tmp_path}/meta.db'
    ):
        db = superduper(f'sqlite:///{tmp_path}/data.db')
        try:
            with pytest.raises(WriteFailed):
                db.execute(Collection('t').insert_many([{'_id': 'a', 'x': 1}, {'_id': 'a', 'x': 2}]))
            db.execute(Collection('t').insert_one({'_id': 'b', 'x': 3}))  # no new field: the table exists now
        finally:
            db.close()
        db = superduper(f'sqlite:///{tmp_path}/data.db')  # a process that never saw the failure
        try:
            db.execute(Collection('t').insert_one({'_id': 'c', 'x': 4, 'added': True}))
            rows = sorted((d['_id'], d.get('added')) for d in db.execute(Collection('t').find()))
        finally:
            db.close()
    assert rows == [('b', None), ('c', True)]
