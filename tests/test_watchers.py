"""Watchers and jobs on every backend: backfill, writes through db.execute, chains, failures."""

from __future__ import annotations

import time

import pytest

from superduperdb import Collection, Watcher, superduper
from superduperdb.base.exceptions import (
    ComponentError,
    ComponentNotFound,
    JobFailed,
    NotSupported,
    QueryError,
)
from superduperdb.jobs.job import Job
from superduperdb.store.outputs import output_table


def outputs_of(db, coll, key='x', model='double'):
    """``{row x: output}`` for every row that has an output."""
    found = {}
    for doc in db.execute(coll.find()):
        out = doc.get('_outputs', {}).get(key, {}).get(model)
        if out is not None:
            found[doc['n']] = out
    return found


@pytest.mark.notimpl(
    ['lake'], raises=NotSupported, reason='lake tables are append-only: updates and deletes are refused'
)
def test_watcher_backfills_then_follows_inserts_updates_and_deletes(db, table_name):
    coll = Collection(table_name)
    db.execute(coll.insert_many([{'n': i, 'x': i, 'other': 0} for i in range(20)]))
    calls: list[int] = []

    def double(x):
        calls.append(x)
        return 2 * x

    model = superduper(double, identifier='double')
    watcher = db.add(Watcher(model=model, key='x', select=coll.find()))
    (backfill,) = watcher.jobs_
    assert backfill.status == 'success' and backfill.result['computed'] == 20
    assert backfill.done == 20 and backfill.total == 20
    assert outputs_of(db, coll) == {i: 2 * i for i in range(20)}

    calls.clear()
    result = db.execute(coll.insert_many([{'n': 100 + i, 'x': 100 + i, 'other': 0} for i in range(3)]))
    (job,) = result.jobs
    assert job.status == 'success' and job.component == watcher.unique_id
    assert sorted(calls) == [100, 101, 102]  # only the new rows
    assert outputs_of(db, coll)[101] == 202

    calls.clear()
    result = db.execute(coll.update_many({'n': {'$in': [1, 2]}}, {'$set': {'x': 50}}))
    assert result.jobs[0].status == 'success'
    assert calls == [50, 50]
    assert outputs_of(db, coll)[1] == 100

    calls.clear()
    result = db.execute(coll.update_many({'n': 3}, {'$set': {'other': 7}}))  # not the watched key
    assert result.jobs == [] and calls == []  # no job started: its output stands

    db.execute(coll.delete_many({'n': {'$in': [0, 101]}}))
    outputs = outputs_of(db, coll)
    assert 0 not in outputs and 101 not in outputs and len(outputs) == 21
    if not db.databackend.self_describing:  # the output rows themselves are gone
        out = output_table(table_name, 'x', 'double')
        assert db.databackend.count(out, {}) == 21


def test_watcher_only_follows_its_selection(db, table_name):
    coll = Collection(table_name)
    model = superduper(lambda x: x + 1, identifier='plus')
    db.add(Watcher(model=model, key='x', select=coll.find({'kind': 'a'})))
    db.execute(coll.insert_many([{'n': 1, 'x': 1, 'kind': 'a'}, {'n': 2, 'x': 2, 'kind': 'b'}]))
    assert outputs_of(db, coll, model='plus') == {1: 2}
    # a write to a table nobody watches starts nothing
    assert db.execute(Collection(table_name + '_other').insert_one({'x': 1})).jobs == []


@pytest.mark.notimpl(['lake'], raises=NotSupported, reason='lake tables are append-only: updates are refused')
def test_an_update_starts_only_the_watchers_that_read_what_it_changed(db, table_name):
    coll = Collection(table_name)
    rows = [{'n': i, 'x': i, 'kind': 'a' if i < 3 else 'b', 'note': ''} for i in range(6)]
    db.execute(coll.insert_many(rows))
    double = superduper(lambda x: 2 * x, identifier='double')
    plus = superduper(lambda x: x + 1, identifier='plus')
    db.add(Watcher(model=double, key='x', select=coll.find({'kind': 'a'})))
    db.add(Watcher(model=plus, key='x', select=coll.find({'kind': 'a'}), features={'x': 'double'}))
    assert outputs_of(db, coll, model='plus') == {0: 1, 1: 3, 2: 5}

    # a field nobody reads: no job at all
    assert db.execute(coll.update_many({}, {'$set': {'note': 'seen'}})).jobs == []
    # the field a select filters on: row 4 enters the selection, both watchers run for it
    result = db.execute(coll.update_one({'n': 4}, {'$set': {'kind': 'a'}}))
    assert [job.args['model'][1] for job in result.jobs] == ['double', 'plus']
    assert outputs_of(db, coll, model='plus') == {0: 1, 1: 3, 2: 5, 4: 9}
    # the key (through $inc, a dotted path's top field counts too): double, then plus reading it
    result = db.execute(coll.update_one({'n': 1}, {'$inc': {'x': 10}}))
    assert [job.args['model'][1] for job in result.jobs] == ['double', 'plus']
    assert outputs_of(db, coll, model='plus')[1] == 23


def test_predict_watch_true_returns_the_backfill_job(db, table_name):
    coll = Collection(table_name)
    db.execute(coll.insert_many([{'n': i, 'x': i} for i in range(5)]))
    model = superduper(lambda x: 2 * x, identifier='double')
    job = model.predict(X='x', db=db, select=coll.find(), watch=True)
    assert isinstance(job, Job) and job.wait().result['computed'] == 5
    db.execute(coll.insert_one({'n': 9, 'x': 9}))
    assert outputs_of(db, coll)[9] == 18
    assert db.show('watcher') == [f'double@{table_name}.x']


def test_watchers_reading_other_outputs_run_after_them(db, table_name):
    coll = Collection(table_name)
    double = superduper(lambda x: 2 * x, identifier='double')
    plus = superduper(lambda x: x + 1, identifier='plus')
    # added in the "wrong" order on purpose: plus reads double's outputs
    db.execute(coll.insert_many([{'n': 1, 'x': 1}]))
    db.add(Watcher(model=double, key='x', select=coll.find()))
    db.add(Watcher(model=plus, key='x', select=coll.find(), features={'x': 'double'}))
    assert outputs_of(db, coll, model='plus') == {1: 3}
    result = db.execute(coll.insert_one({'n': 5, 'x': 5}))
    first, second = result.jobs
    assert first.args['model'][1] == 'double' and second.dependencies == [first.id]
    assert outputs_of(db, coll, model='plus')[5] == 11


def test_a_failing_row_does_not_fail_the_job_but_a_broken_job_is_reported(db, table_name):
    coll = Collection(table_name)

    def picky(x):
        if x == 13:
            raise ValueError('unlucky')
        return x

    db.add(Watcher(model=superduper(picky, identifier='picky'), key='x', select=coll.find()))
    result = db.execute(coll.insert_many([{'n': i, 'x': i} for i in (12, 13)]))
    (job,) = result.jobs
    assert job.status == 'success' and job.result['failed'] == 1 and job.result['computed'] == 1

    job = db.submit_job('fit', {'model': ['model', 'picky', 0], 'X': 'x', 'select': coll.find().to_dict()})
    assert job.status == 'failed' and 'cannot be trained' in job.error
    with pytest.raises(JobFailed, match='cannot be trained') as info:
        job.wait()
    assert 'Traceback' in info.value.remote_traceback


def test_the_failure_ledger_is_read_and_retried_on_every_backend(db, table_name):
    coll = Collection(table_name)
    broken = {'on': True}

    def picky(x):
        if x == 13 and broken['on']:
            raise ValueError('unlucky')
        return x

    db.add(Watcher(model=superduper(picky, identifier='picky'), key='x', select=coll.find()))
    db.execute(coll.insert_many([{'n': i, 'x': i} for i in (12, 13)]))
    watcher = f'picky@{table_name}.x'
    ((row, error, attempts),) = [(f['row'], f['error'], f['attempts']) for f in db.failures(watcher)]
    assert row == str(db.execute(coll.find_one({'x': 13}))['_id']) and (error, attempts) == ('ValueError', 1)
    again = db.retry_failed(watcher)
    assert again.result['failed'] == 1 and db.failures(watcher)[0]['attempts'] == 2
    broken['on'] = False
    fixed = db.retry_failed(watcher)
    assert fixed.result['computed'] == 1 and db.failures(watcher) == []
    # jobs by component prefix: the watcher's own, newest first
    mine = db.jobs(component=f'watcher/{watcher}/')
    assert [j.id for j in mine[:2]] == [fixed.id, again.id] and len(mine) == 4
    assert db.jobs(component='vector_index/') == [] and len(db.jobs(component='watcher/')) == 4
    with pytest.raises(ComponentNotFound, match='No watcher'):
        db.failures('nope')


def test_jobs_are_listed_newest_first_with_their_log(db, table_name):
    coll = Collection(table_name)
    db.execute(coll.insert_many([{'n': i, 'x': i} for i in range(3)]))
    model = superduper(lambda x: x, identifier='same')
    db.add(Watcher(model=model, key='x', select=coll.find()))
    db.execute(coll.insert_one({'n': 3, 'x': 3}))
    jobs = db.show('job')
    assert [j.method for j in jobs] == ['predict', 'predict']
    assert jobs[0].created_at >= jobs[1].created_at and jobs[1].result['computed'] == 3
    assert all(j.status == 'success' and j.ended_at >= j.started_at for j in jobs)
    assert '1 computed' in jobs[0].log
    assert db.job(jobs[0].id).id == jobs[0].id
    assert [j.id for j in db.jobs('success')] == [j.id for j in jobs]
    with pytest.raises(QueryError, match='status is one of'):
        db.jobs('done')
    with pytest.raises(QueryError, match='No job'):
        db.job('nope')


def test_a_job_record_takes_concurrent_writes_from_one_process(db):
    """A running job's record is written by the job's thread and by the heartbeat thread at
    once; neither write may fail (DuckDB failed the second of two concurrent row updates, which
    failed jobs at random in CI)."""
    import concurrent.futures

    job = db.new_job('noop')
    db.metadata.create_job(job.to_record())

    def write(who: str) -> None:
        for i in range(40):
            db.metadata.update_job(job.id, log=f'{who} {i}', heartbeat=time.time())

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        for done in [pool.submit(write, 'job'), pool.submit(write, 'heartbeat')]:
            done.result()  # raises what a write raised
    assert db.metadata.get_job(job.id)['log'] in {'job 39', 'heartbeat 39'}


def test_a_job_whose_worker_died_is_failed_not_running_forever(db):
    job = db.new_job('noop')
    record = job.to_record()
    record.update(status='running', started_at=time.time() - 600, heartbeat=time.time() - 600, worker='h:1')
    db.metadata.create_job(record)
    seen = db.job(job.id)
    assert seen.status == 'failed' and 'no heartbeat' in seen.error and 'h:1' in seen.error
    assert [j.id for j in db.jobs('failed')] == [job.id]
    with pytest.raises(JobFailed):
        seen.wait(timeout=1)


def test_watchers_are_seen_by_another_process(db, table_name):
    """A second Datalayer over the same database (as another process would be) triggers them too."""
    coll = Collection(table_name)
    db.add(Watcher(model=superduper(lambda x: 2 * x, identifier='double'), key='x', select=coll.find()))
    other = type(db)(db.databackend, db.metadata, db.artifact_store)
    result = other.execute(coll.insert_one({'n': 4, 'x': 4}))
    assert len(result.jobs) == 1 and outputs_of(db, coll) == {4: 8}


def test_bad_watchers_are_refused_with_a_clear_error():
    model = superduper(lambda x: x, identifier='same')
    with pytest.raises(ComponentError, match='remove .limit'):
        Watcher(model=model, key='x', select=Collection('t').find().limit(3))
    with pytest.raises(ComponentError, match='find query'):
        Watcher(model=model, key='x', select=Collection('t').find_one())
    with pytest.raises(ComponentError, match='takes a Model'):
        Watcher(model=lambda x: x, key='x', select=Collection('t').find())


def test_status_shows_backlog_failures_and_lag(db, table_name):
    coll = Collection(table_name)

    def picky(x):
        if x == 13:
            raise ValueError('unlucky')
        return x

    db.execute(coll.insert_many([{'n': i, 'x': i} for i in range(10, 15)]))
    model = db.add(superduper(picky, identifier='picky'))
    watcher = Watcher(model=model, key='x', select=coll.find(), active=False)  # not reacting to writes
    db.add(watcher)
    db.execute(coll.insert_many([{'n': 20, 'x': 20}, {'n': 21, 'x': 21}]))  # starts nothing
    (row,) = db.status()
    assert row['watcher'] == watcher.identifier and row['active'] is False
    assert (row['rows'], row['current'], row['failed'], row['backlog']) == (7, 4, 1, 2)
    # a job waiting for a worker shows as lag
    pending = db.new_job('predict', watcher.predict_args(coll.find()), component=watcher.unique_id)
    record = pending.to_record()
    record['created_at'] = time.time() - 30
    db.metadata.create_job(record)
    (row,) = db.status()
    assert row['jobs'] == 1 and 29 <= row['lag_s'] < 120


def test_a_backfill_splits_into_key_ranges_that_cover_each_row_once(db, table_name):
    from superduperdb import CFG, Collection, Watcher, superduper
    from superduperdb.predict.over_query import partition

    coll = Collection(table_name)
    db.execute(coll.insert_many([{'n': i, 'x': i} for i in range(1000)]))
    parts = partition(db, coll.find({'n': {'$gte': 100}}), 4, min_rows=100)
    assert len(parts) == 4
    seen = [d['n'] for part in parts for d in db.execute(part)]
    assert sorted(seen) == list(range(100, 1000))  # every selected row, once
    assert len(partition(db, coll.find(), 4, min_rows=400)) == 2  # at least min_rows each
    assert partition(db, coll.find().limit(10), 4) == [coll.find().limit(10)]  # a limit stays whole
    with CFG.override(**{'cluster.backfill_partitions': 3, 'cluster.backfill_partition_rows': 100}):
        watcher = db.add(
            Watcher(model=superduper(lambda x: 2 * x, identifier='double'), key='x', select=coll.find())
        )
    assert [job.method for job in watcher.jobs_] == ['predict'] * 3 + ['predict_parts']
    assert watcher.backfill_.status == 'success' and watcher.backfill_.result['computed'] == 1000
    docs = list(db.execute(coll.find()))
    assert all(d['_outputs']['x']['double'] == 2 * d['x'] for d in docs)


_WRITES = ('update_one', 'update_many', 'bulk_write', 'initialize_unordered_bulk_op', 'insert_many')


def _count_writes(monkeypatch, collection, calls: list[str]) -> None:
    """Record the write methods called on ``collection``: its class's own methods (mongomock's,
    or pymongo's on a server), wrapped for counting only; every call still runs them."""
    cls = type(collection)
    for name in _WRITES:
        original = getattr(cls, name, None)
        if original is None:
            continue

        def counted(self, *args, _name=name, _original=original, **kwargs):
            if self.full_name == collection.full_name:
                calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, name, counted)


@pytest.mark.parametrize('backend', ['mongodb'], indirect=True)
def test_mongodb_outputs_are_written_in_bulk_not_one_call_per_document(db, table_name, monkeypatch):
    """A backfill of 2,500 documents writes their outputs in a few bulk writes (one per chunk),
    not an update per document; the documents read back the same outputs. On mongomock, or on
    the server ``SUPERDUPERDB_TEST_MONGODB_URI`` names (one round trip per write there)."""
    coll = Collection(table_name)
    n = 2500
    db.execute(coll.insert_many([{'n': i, 'x': i} for i in range(n)]))
    calls: list[str] = []
    _count_writes(monkeypatch, db.databackend.database[table_name], calls)
    model = superduper(lambda x: 2 * x, identifier='double')
    watcher = db.add(Watcher(model=model, key='x', select=coll.find()))
    assert watcher.jobs_[-1].status == 'success'
    assert 'update_one' not in calls and 'update_many' not in calls
    chunks = -(-n // db.chunk_size)
    assert 1 <= len(calls) <= 2 * chunks, calls  # per chunk: a bulk write (and its builder)
    monkeypatch.undo()
    assert outputs_of(db, coll) == {i: 2 * i for i in range(n)}
