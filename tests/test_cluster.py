"""Jobs on a real Dask cluster (a LocalCluster with 2 worker processes) and concurrent writers,
against PostgreSQL: nothing lost, nothing twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import cloudpickle
import pytest

from superduperdb import CFG, Collection, Watcher, superduper
from superduperdb.base.exceptions import ConfigError, JobFailed
from superduperdb.store.outputs import output_table
from tests.helpers import wait_for

pytestmark = pytest.mark.slow

# Models defined here are stored by value, so worker processes can load them without this file.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def slow_double(x):
    time.sleep(0.0003)
    return 2 * x


@pytest.fixture(scope='module')
def client():
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=':0') as cluster,
        Client(cluster) as client,
    ):
        yield client


@pytest.fixture
def dask_db(db, client):
    from superduperdb.jobs.dask import DaskExecutor

    db.executor = DaskExecutor(client)
    yield db


def output_ids(db, table):
    out = output_table(table, 'x', 'double')
    return [row['_id'] for chunk in db.databackend.find(out, {}, projection={'_id': 1}) for row in chunk]


@pytest.mark.parametrize('backend', ['postgres'], indirect=True)
def test_watcher_jobs_run_on_the_cluster(dask_db, table_name):
    db = dask_db
    coll = Collection(table_name)
    db.execute(coll.insert_many([{'n': i, 'x': i} for i in range(500)]))
    watcher = db.add(Watcher(model=superduper(slow_double, identifier='double'), key='x', select=coll.find()))
    plus = superduper(lambda x: x + 1, identifier='plus')
    chained = db.add(Watcher(model=plus, key='x', select=coll.find(), features={'x': 'double'}))
    backfill = watcher.jobs_[0].wait(timeout=120)
    assert backfill.result['computed'] == 500 and backfill.worker != f'{os.uname().nodename}:{os.getpid()}'
    assert chained.jobs_[0].dependencies == [backfill.id]  # it waited for double's backfill
    assert chained.jobs_[0].wait(timeout=120).result['computed'] == 500

    result = db.execute(coll.insert_many([{'n': 1000, 'x': 1000}]))
    for job in result.jobs:
        job.wait(timeout=120)
    doc = db.execute(coll.find_one({'n': 1000}))
    assert doc['_outputs']['x'] == {'double': 2000, 'plus': 2001}


@pytest.mark.parametrize('backend', ['postgres'], indirect=True)
def test_an_error_on_a_worker_reaches_the_caller_with_its_traceback(dask_db, table_name):
    db = dask_db
    model = db.add(superduper(slow_double, identifier='double'))
    select = Collection(table_name).find()  # no such table: fit has nothing to train on
    job = db.submit_job(
        'fit', {'model': ['model', 'double', model.version], 'X': 'x', 'select': select.to_dict()}
    )
    with pytest.raises(JobFailed, match='selects no rows|does not exist') as info:
        job.wait(timeout=60)
    assert 'fit_over_query' in info.value.remote_traceback
    assert job.status == 'failed' and job.worker != f'{os.uname().nodename}:{os.getpid()}'


@pytest.mark.parametrize('backend', ['postgres'], indirect=True)
def test_killing_a_worker_mid_backfill_loses_and_duplicates_nothing(dask_db, table_name):
    db = dask_db
    coll = Collection(table_name)
    n = 20_000
    for lo in range(0, n, 5000):
        db.execute(coll.insert_many([{'n': i, 'x': i} for i in range(lo, lo + 5000)]))
    watcher = db.add(Watcher(model=superduper(slow_double, identifier='double'), key='x', select=coll.find()))
    job = watcher.jobs_[0]
    deadline = time.monotonic() + 60
    while job.refresh().done < 3000:
        assert time.monotonic() < deadline, f'backfill made no progress: {job}'
        time.sleep(0.05)
    victim = int(job.worker.rsplit(':', 1)[1])
    os.kill(victim, signal.SIGKILL)
    job.wait(timeout=240)
    assert job.attempts >= 2 and job.status == 'success'
    ids = output_ids(db, table_name)
    assert len(ids) == n and len(set(ids)) == n
    assert db.execute(coll.count({})) == n


@pytest.mark.parametrize('backend', ['duckdb'], indirect=True)
def test_the_dask_executor_refuses_a_single_writer_database(dask_db, table_name):
    with pytest.raises(ConfigError, match='one writing process'):
        dask_db.submit_job('noop')


def test_the_dask_executor_refuses_an_in_process_database(client):
    from superduperdb.jobs.dask import DaskExecutor

    db = superduper('sqlite:///:memory:')
    db.executor = DaskExecutor(client)
    with pytest.raises(ConfigError, match='lives only in this process'):
        db.submit_job('noop')


def test_the_dask_executor_needs_a_scheduler():
    with CFG.override(**{'cluster.executor': 'dask', 'cluster.dask_scheduler': None}):
        db = superduper('sqlite:///:memory:')
        with pytest.raises(ConfigError, match='dask_scheduler'):
            db.submit_job('noop')


_WRITER = textwrap.dedent(
    """
    import sys
    from superduperdb import Collection, superduper
    uri, table, first = sys.argv[1], sys.argv[2], int(sys.argv[3])
    db = superduper(uri)
    coll = Collection(table)
    for lo in range(first, first + 5000, 250):
        result = db.execute(coll.insert_many([{'n': i, 'x': i} for i in range(lo, lo + 250)]))
        assert all(job.status == 'success' for job in result.jobs), result.jobs
    """
)


@pytest.mark.parametrize('backend', ['postgres', 'sqlite', 'mysql'], indirect=True)
def test_four_processes_writing_at_once_get_one_output_per_row(db, table_name, tmp_path):
    coll = Collection(table_name)
    db.execute(coll.insert_one({'n': -1, 'x': -1}))
    db.add(Watcher(model=superduper(lambda x: 2 * x, identifier='double'), key='x', select=coll.find()))
    env = {**os.environ, 'SUPERDUPERDB_ARTIFACT_STORE': CFG.artifact_store}
    uri = db.spec['data_backend']
    writers = [
        subprocess.Popen([sys.executable, '-c', _WRITER, uri, table_name, str(k * 5000)], env=env)
        for k in range(4)
    ]
    for writer in writers:
        assert writer.wait(timeout=300) == 0
    ids = output_ids(db, table_name)
    assert len(ids) == 20_001 and len(set(ids)) == 20_001
    docs = list(db.execute(coll.find({'n': {'$gte': 0}})))
    assert len(docs) == 20_000 and all(d['_outputs']['x']['double'] == 2 * d['x'] for d in docs)


def sleepy_double(x):
    time.sleep(0.01)
    return 2 * x


@pytest.mark.parametrize('backend', ['postgres'], indirect=True)
def test_a_pending_job_is_cancelled_on_the_cluster_and_a_running_one_is_refused(dask_db, table_name):
    from superduperdb.base.exceptions import QueryError

    db = dask_db
    coll = Collection(table_name)
    double = db.add(
        Watcher(model=superduper(sleepy_double, identifier='double'), key='x', select=coll.find())
    )
    plus = db.add(
        Watcher(
            model=superduper(lambda x: x + 1, identifier='plus'),
            key='x',
            select=coll.find(),
            features={'x': 'double'},
        )
    )
    for backfill in double.jobs_ + plus.jobs_:  # else a backfill still queued may do the insert's work
        backfill.wait(timeout=120)
    first, second = db.execute(coll.insert_many([{'x': i} for i in range(300)])).jobs
    assert second.dependencies == [first.id]
    deadline = time.monotonic() + 60
    while first.refresh().status != 'running':
        assert time.monotonic() < deadline
        time.sleep(0.05)
    with pytest.raises(QueryError, match='Dask cannot stop a running task'):
        db.cancel_job(first.id)
    cancelled = db.cancel_job(second.id)
    assert (cancelled.status, cancelled.error) == ('failed', 'Cancelled.')
    assert first.wait(timeout=120).result['computed'] == 300
    time.sleep(1)  # a cancelled task never runs: the job stays as cancelled, no outputs of 'plus'
    assert db.job(second.id).error == 'Cancelled.'
    assert db.execute(coll.find_one({'x': 3}))['_outputs']['x'] == {'double': 6}
    with pytest.raises(QueryError, match='already ended'):
        db.cancel_job(second.id)


@pytest.fixture(scope='module')
def three_workers():
    from distributed import Client, LocalCluster

    with (
        LocalCluster(n_workers=3, threads_per_worker=1, processes=True, dashboard_address=':0') as cluster,
        Client(cluster) as client,
    ):
        yield client


@pytest.mark.parametrize('backend', ['postgres', 'sqlite'], indirect=True)
def test_a_partitioned_backfill_runs_on_several_workers_and_computes_each_row_once(
    db, three_workers, table_name
):
    from superduperdb.jobs.dask import DaskExecutor

    db.executor = DaskExecutor(three_workers)
    coll = Collection(table_name)
    n = 6000
    for lo in range(0, n, 2000):
        db.execute(coll.insert_many([{'n': i, 'x': i} for i in range(lo, lo + 2000)]))
    with CFG.override(**{'cluster.backfill_partitions': 3, 'cluster.backfill_partition_rows': 1000}):
        watcher = db.add(
            Watcher(model=superduper(slow_double, identifier='double'), key='x', select=coll.find())
        )
    *parts, done = watcher.jobs_
    assert len(parts) == 3 and done.method == 'predict_parts' and done.dependencies == [p.id for p in parts]
    done.wait(timeout=240)
    assert done.result['computed'] == n and done.result['partitions'] == 3
    computed = [part.refresh().result['computed'] for part in parts]
    assert sum(computed) == n and all(c > 0 for c in computed), computed  # disjoint ranges, each busy
    assert all(worker != f'{os.uname().nodename}:{os.getpid()}' for worker in done.result['workers'])
    ids = output_ids(db, table_name)
    assert len(ids) == n and len(set(ids)) == n
    docs = list(db.execute(coll.find()))
    assert all(d['_outputs']['x']['double'] == 2 * d['x'] for d in docs)
    # rerun: every partition finds its rows current, nothing is written twice
    again = superduper(slow_double, identifier='double').predict(X='x', db=db, select=coll.find())
    assert again.computed == 0 and again.skipped == n


def bag_of_words(texts):
    """A deterministic embedder (hashed words), stored by value with this module."""
    import zlib

    import numpy as np

    vectors = np.zeros((len(texts), 16), dtype='float32')
    for i, text in enumerate(texts):
        for word in text.lower().split():
            vectors[i, zlib.crc32(word.strip('.').encode()) % 16] += 1.0
    return list(vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9))


@pytest.mark.parametrize('backend', ['postgres'], indirect=True)
def test_chunks_are_made_and_embedded_on_the_cluster(dask_db, table_name):
    from superduperdb import VectorIndex
    from superduperdb.encoders.numpy import array
    from superduperdb.models.chunkers import SentenceChunker
    from superduperdb.models.function import FunctionModel

    db = dask_db
    coll = Collection(table_name)
    body = lambda d, i: '\n\n'.join(f'Part {p} of document {d}, edit {i}.' for p in range(6))  # noqa: E731
    db.execute(coll.insert_many([{'n': d, 'body': body(d, 0)} for d in range(20)]))
    chunks = coll.chunks('body', 'sentences')
    embed = FunctionModel('bag', object=bag_of_words, batched=True, encoder=array('float32', 16))
    db.add(
        VectorIndex('chunk-index', indexing_watcher=Watcher(model=embed, key='text', select=chunks.find()))
    )
    watcher = db.add(
        Watcher(model=SentenceChunker('sentences', max_chars=200), key='body', select=coll.find())
    )
    backfill = watcher.jobs_[-1].wait(timeout=120)
    assert backfill.worker != f'{os.uname().nodename}:{os.getpid()}'  # chunked on a worker

    def embedded() -> tuple[int, int]:
        row = {s['watcher']: s for s in db.status()}[f'bag@{chunks.name}.text']
        return row['rows'], row['current']

    wait_for(lambda: embedded() == (120, 120), 'every chunk embedded by the cluster', timeout=120)
    one = db.execute(coll.find_one({'n': 3}))
    edited = one['body'].replace('Part 2 of document 3, edit 0.', 'Part 2 of document 3 was rewritten.')
    for job in db.execute(coll.update_one({'_id': one['_id']}, {'$set': {'body': edited}})).jobs:
        job.wait(timeout=120)
    wait_for(lambda: embedded() == (120, 120), 'the new chunk embedded', timeout=120)
    texts = sorted(c['text'] for c in db.execute(chunks.find({'parent': one['_id']})))
    assert 'Part 2 of document 3 was rewritten.' in texts and len(texts) == 6
    found = list(db.execute(coll.like({'text': 'document 3 was rewritten'}, 'chunk-index', n=1)))
    assert found[0]['n'] == 3 and found[0]['_chunks'][0]['text'] == 'Part 2 of document 3 was rewritten.'


@pytest.mark.parametrize('backend', ['postgres'], indirect=True)
def test_keyword_indexes_follow_texts_copied_on_the_cluster(dask_db, table_name):
    """The text copy is computed on a worker; the database's own index (native) has it at once,
    and this process's BM25 engine applies the worker's update from the index's journal."""
    from superduperdb import KeywordIndex

    db = dask_db
    coll = Collection(table_name)
    db.execute(coll.insert_many([{'n': i, 'body': f'ticket {i} about the printer'} for i in range(50)]))
    indexes = [
        db.add(KeywordIndex('kw-native', key='body', select=coll.find())),
        db.add(KeywordIndex('kw-bm25', key='body', select=coll.find(), engine='bm25')),
    ]
    for index in indexes:
        for job in index.jobs_:
            assert job.wait(timeout=120).status == 'success'

    def found(words: str, index: str) -> list[int]:
        return [d['n'] for d in db.execute(coll.match({'body': words}, index, n=3))]

    assert found('ticket 7', 'kw-native')[0] == found('ticket 7', 'kw-bm25')[0] == 7
    result = db.execute(coll.insert_one({'n': 99, 'body': 'fax machine out of toner'}))
    assert result.jobs
    for job in result.jobs:
        assert job.wait(timeout=120).status == 'success'
        assert job.method != 'predict' or job.worker != f'{os.uname().nodename}:{os.getpid()}'
    assert found('toner', 'kw-native') == found('toner', 'kw-bm25') == [99]
