"""Fault suite for change capture: a change is done only when its outputs are committed or its
failure is in the ledger; failed changes are retried with backoff; a reconcile (on every backend,
PostgreSQL included) finds rows without current outputs and no live job.

Real parts: the shared PostgreSQL and SQLite files, another application writing through its own
driver (``OtherApp``), writer processes killed with SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from superduperdb import CFG, Collection, Watcher, superduper
from superduperdb.base.exceptions import ConfigError
from superduperdb.store.outputs import output_table
from tests.helpers import OtherApp, wait_for

pytestmark = pytest.mark.slow


def flaky_model(flag: str, failure: str):
    """A model that fails until the file ``flag`` exists: per row (a RuntimeError, which goes to
    the failure ledger) or as a set-up error (a ConfigError, as a missing API key: the job fails)."""

    def flaky(x):
        if not os.path.exists(flag):
            if failure == 'setup':
                raise ConfigError('no API key in this process (set OPENAI_API_KEY)')
            raise RuntimeError('the model service is down')
        return 2 * x

    return superduper(flaky, identifier='flaky')


def output_rows(db, table: str, model: str) -> list[tuple]:
    out = output_table(table, 'x', model)
    if not db.databackend.has_table(out):
        return []
    return [(r['_id'], r['output']) for chunk in db.databackend.find(out, {}) for r in chunk]


@pytest.mark.parametrize('failure', ['row', 'setup'])
@pytest.mark.parametrize('backend', ['postgres', 'sqlite', 'mysql'], indirect=True)
def test_rows_another_application_writes_while_the_model_fails_all_get_outputs_once_it_recovers(
    db, table_name, tmp_path, failure
):
    """Before (PostgreSQL): 0 of 100 outputs, ever; 'setup': the queue emptied, backlog 0 but
    status() backlog 100 for good; 'row': 100 rows in the ledger, never retried."""
    app = OtherApp(db, table_name)
    flag = str(tmp_path / 'model-is-back')
    try:
        app.create({})
        db.add(Watcher(model=flaky_model(flag, failure), key='x', select=Collection(table_name).find()))
        overrides = {'cdc.poll_interval': 0.1, 'cdc.reconcile_interval': 0.5, 'cdc.retry_backoff': 0.2}
        with CFG.override(**overrides):
            db.cdc.start()
            try:
                for lo in range(1, 101, 10):  # 100 rows, 10 transactions, while the model fails
                    app.insert({i: i for i in range(lo, lo + 10)})
                time.sleep(1.5)  # a few passes and reconciles while it still fails
                assert output_rows(db, table_name, 'flaky') == []
                (status,) = db.status()
                assert status['current'] == 0 and status['failed'] + status['backlog'] >= 100, status
                open(flag, 'w').close()  # the model recovers
                wait_for(lambda: len(output_rows(db, table_name, 'flaky')) >= 100, '100 outputs', every=0.1)
                time.sleep(1.0)  # later passes must not add anything
            finally:
                db.cdc.stop()
        rows = output_rows(db, table_name, 'flaky')
        keys = [str(key) for key, _ in rows]
        assert len(rows) == 100 and len(set(keys)) == 100  # none missing, none duplicated
        assert sorted(int(k) for k in keys) == list(range(1, 101))
        assert all(value == 2 * int(key) for key, value in rows)
        (status,) = db.status()
        assert (status['current'], status['failed'], status['backlog']) == (100, 0, 0), status
        assert db.cdc.backlog() == {table_name: 0}
    finally:
        app.close()


_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    from superduperdb import Collection, superduper
    from superduperdb.datalayer.datalayer import Datalayer
    uri, table, how = sys.argv[1:4]
    db = superduper(uri)
    if how == 'before-jobs':  # killed between the commit and recording its jobs
        Datalayer.submit_jobs = lambda self, jobs: os.kill(os.getpid(), signal.SIGKILL)
    db.execute(Collection(table).insert_many([{'x': i} for i in range(1, 101)]))
    print('not killed', flush=True)
    """
)


def slow_double(x):
    time.sleep(float(os.environ.get('SD_TEST_SLOW', '0')))
    return 2 * x


@pytest.mark.parametrize('how', ['before-jobs', 'mid-job'])
@pytest.mark.parametrize('backend', ['postgres', 'sqlite', 'mysql'], indirect=True)
def test_rows_whose_writer_was_killed_after_commit_are_recovered_by_the_reconcile(db, table_name, how):
    """Before (PostgreSQL): the 100 committed rows never got outputs (cdc --once: nothing to do)."""
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the writer loads it by value
    coll = Collection(table_name)
    db.execute(coll.insert_one({'x': 0}))
    db.add(Watcher(model=superduper(slow_double, identifier='double'), key='x', select=coll.find()))
    assert len(output_rows(db, table_name, 'double')) == 1
    db.cdc.poll_once()  # change capture follows the table already (its catch-up is done)
    env = {
        **os.environ,
        'SUPERDUPERDB_ARTIFACT_STORE': CFG.artifact_store,
        'SUPERDUPERDB_CLUSTER__HEARTBEAT': '0.2',
        'SD_TEST_SLOW': '0.05' if how == 'mid-job' else '0',
    }
    writer = subprocess.Popen(
        [sys.executable, '-c', _WRITER, db.spec['data_backend'], table_name, how],
        env=env,
    )
    try:
        if how == 'mid-job':  # kill it while its job runs (the job writes its one chunk at the end)
            running = {'status': 'running', 'worker': {'$ne': ''}}
            wait_for(lambda: db.metadata.jobs(running), 'the writer to start its job', every=0.1)
            time.sleep(1.0)
            writer.send_signal(signal.SIGKILL)
        assert writer.wait(timeout=120) == -signal.SIGKILL
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert db.execute(coll.count()) == 101  # committed
    before = len(output_rows(db, table_name, 'double'))
    assert before < 101
    with CFG.override(**{'cluster.heartbeat': 0.2}):
        time.sleep(0.8)  # the killed job's heartbeat is now 3 beats old: it reads as failed
        db.cdc.poll_once()  # the reconcile: rows without current outputs and no live job
    rows = output_rows(db, table_name, 'double')
    keys = [str(key) for key, _ in rows]
    assert len(rows) == 101 and len(set(keys)) == 101, (before, len(rows))
    docs = db.execute(coll.find()).to_list()
    assert all(d['_outputs']['x']['double'] == 2 * d['x'] for d in docs)


def slow_plus_one(x):
    time.sleep(0.01)
    return x + 1


@pytest.mark.postgres
def test_change_capture_survives_its_database_killed_mid_capture(private_postgres, tmp_path):
    """A private PostgreSQL is SIGKILLed while change capture handles another application's
    writes, and restarted: every row gets exactly one output."""
    import psycopg

    server = private_postgres
    with CFG.override(
        **{
            'artifact_store': f'filesystem://{tmp_path}/artifacts',
            'cdc.poll_interval': 0.1,
            'cdc.reconcile_interval': 1.0,
            'cdc.retry_backoff': 0.2,
        }
    ):
        db = superduper(server.uri)
        other = psycopg.connect(server.uri, autocommit=True)
        other.execute('CREATE TABLE orders (id INTEGER PRIMARY KEY, x INTEGER)')
        db.add(
            Watcher(
                model=superduper(slow_plus_one, identifier='plus'),
                key='x',
                select=Collection('orders').find(),
            )
        )
        db.cdc.start()
        try:
            for lo in range(1, 101, 10):
                other.execute(
                    'INSERT INTO orders (id, x) VALUES '
                    + ', '.join(f'({i}, {i})' for i in range(lo, lo + 10))
                )
            wait_for(lambda: len(output_rows(db, 'orders', 'plus')) >= 10, 'the first outputs', every=0.1)
            other.close()
            server.kill()  # mid-capture: queued changes in hand, a predict running
            time.sleep(1.0)
            server.start()
            other = psycopg.connect(server.uri, autocommit=True)
            other.execute(
                'INSERT INTO orders (id, x) VALUES ' + ', '.join(f'({i}, {i})' for i in range(101, 121))
            )
            wait_for(
                lambda: len(output_rows(db, 'orders', 'plus')) >= 120, '120 outputs', timeout=90, every=0.1
            )
            time.sleep(1.5)  # a reconcile later: still one output per row
        finally:
            db.cdc.stop()
            other.close()
        rows = output_rows(db, 'orders', 'plus')
        assert len(rows) == 120 and len({key for key, _ in rows}) == 120
        assert all(value == int(key) + 1 for key, value in rows)
        assert db.cdc.backlog() == {'orders': 0}
        db.close()
