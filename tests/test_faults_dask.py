"""Fault suite for the Dask executor: a cluster named in config (not a default client), and
jobs whose submitting script exits right after its insert, without ``db.close()``.

Real parts: a Dask LocalCluster with worker processes, a writer process, PostgreSQL and SQLite.
Unlike tests/test_cluster.py, this process never makes a default Dask client: the executor's
own client is the only one, as in a script configured with ``cluster.executor = "dask"``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import cloudpickle
import pytest

from superduperdb import CFG, Collection, Watcher, superduper
from superduperdb.store.outputs import output_table

pytestmark = pytest.mark.slow

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers load the model by value


def triple(x):
    return 3 * x


@pytest.fixture(scope='module')
def scheduler():
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=':0') as cluster:
        yield cluster.scheduler_address


def output_ids(db, table):
    out = output_table(table, 'x', 'triple')
    if not db.databackend.has_table(out):
        return []
    return [row['_id'] for chunk in db.databackend.find(out, {}, projection={'_id': 1}) for row in chunk]


@pytest.mark.parametrize('backend', ['postgres', 'sqlite'], indirect=True)
def test_job_wait_works_when_the_cluster_comes_from_config(db, table_name, scheduler):
    """Before: ValueError: No clients found (the executor's client is not the default client)."""
    from distributed import default_client

    coll = Collection(table_name)
    db.execute(coll.insert_many([{'x': i} for i in range(50)]))
    with CFG.override(**{'cluster.executor': 'dask', 'cluster.dask_scheduler': scheduler}):
        dask_db = superduper(db.spec['data_backend'])
        try:
            model = superduper(triple, identifier='triple')
            watcher = dask_db.add(Watcher(model=model, key='x', select=coll.find()))
            (job,) = watcher.jobs_
            assert job.wait(timeout=120).status == 'success'
            with pytest.raises(ValueError, match='No clients found'):
                default_client()  # there really is no default client to fall back on
            result = dask_db.execute(coll.insert_many([{'x': i} for i in range(50, 60)]))
            assert [j.wait(timeout=120).status for j in result.jobs] == ['success']
        finally:
            dask_db.close()
    ids = output_ids(db, table_name)
    assert len(ids) == 60 and len(set(ids)) == 60


_SCRIPT = textwrap.dedent(
    """
    import sys
    from superduperdb import Collection, superduper
    uri, table = sys.argv[1:3]
    db = superduper(uri)
    result = db.execute(Collection(table).insert_many([{'x': i} for i in range(1000, 1100)]))
    print(' '.join(job.id for job in result.jobs), flush=True)
    # the script ends here: no db.close(), no wait
    """
)


@pytest.mark.parametrize('backend', ['postgres', 'sqlite'], indirect=True)
def test_jobs_of_a_script_that_exits_right_after_its_insert_still_complete(db, table_name, scheduler):
    """Before: the job stayed 'pending' for good and its 100 rows never got outputs."""
    coll = Collection(table_name)
    db.execute(coll.insert_one({'x': 0}))
    db.add(Watcher(model=superduper(triple, identifier='triple'), key='x', select=coll.find()))
    env = {
        **os.environ,
        'SUPERDUPERDB_ARTIFACT_STORE': CFG.artifact_store,
        'SUPERDUPERDB_CLUSTER__EXECUTOR': 'dask',
        'SUPERDUPERDB_CLUSTER__DASK_SCHEDULER': scheduler,
    }
    done = subprocess.run(
        [sys.executable, '-c', _SCRIPT, db.spec['data_backend'], table_name],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    (job_id,) = done.stdout.split()
    deadline = time.monotonic() + 120
    while not db.job(job_id).finished:
        assert time.monotonic() < deadline, f'job {job_id} still {db.job(job_id).status}'
        time.sleep(0.2)
    assert db.job(job_id).status == 'success'
    ids = output_ids(db, table_name)
    assert len(ids) == 101 and len(set(ids)) == 101
    docs = db.execute(coll.find()).to_list()
    assert all(d['_outputs']['x']['triple'] == 3 * d['x'] for d in docs)


_DIES_BEFORE_HANDING_OVER = textwrap.dedent(
    """
    import os, signal, sys
    from superduperdb import Collection, superduper
    from superduperdb.jobs.dask import DaskExecutor
    uri, table = sys.argv[1:3]
    DaskExecutor._hand_over = lambda self, db, spec, jobs: os.kill(os.getpid(), signal.SIGKILL)
    db = superduper(uri)
    db.execute(Collection(table).insert_many([{'x': i} for i in range(1000, 1100)]))
    """
)


@pytest.mark.parametrize('backend', ['postgres', 'sqlite'], indirect=True)
def test_a_job_whose_submitter_died_before_handing_it_over_is_picked_up(db, table_name, scheduler):
    """The submitter records its job, then is killed (SIGKILL) before the scheduler has it: the
    change-capture process picks the orphan up. Before: it stayed 'pending' for good."""
    coll = Collection(table_name)
    db.execute(coll.insert_one({'x': 0}))
    db.add(Watcher(model=superduper(triple, identifier='triple'), key='x', select=coll.find()))
    env = {
        **os.environ,
        'SUPERDUPERDB_ARTIFACT_STORE': CFG.artifact_store,
        'SUPERDUPERDB_CLUSTER__EXECUTOR': 'dask',
        'SUPERDUPERDB_CLUSTER__DASK_SCHEDULER': scheduler,
    }
    done = subprocess.run(
        [sys.executable, '-c', _DIES_BEFORE_HANDING_OVER, db.spec['data_backend'], table_name],
        env=env,
        timeout=120,
    )
    assert done.returncode == -9
    (job,) = db.jobs('pending')
    assert job.component.startswith('watcher/triple') and job.worker and not job.orphaned
    with CFG.override(**{'cluster.heartbeat': 0.2}):
        time.sleep(0.8)  # three heartbeats without the submitter
        assert db.job(job.id).orphaned
        db.cdc.poll_once()  # the change-capture process: picks it up, then reconciles
    assert db.job(job.id).status == 'success'
    ids = output_ids(db, table_name)
    assert len(ids) == 101 and len(set(ids)) == 101
