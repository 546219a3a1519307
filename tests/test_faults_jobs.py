"""Fault suite: job records when the database dies mid-job (a private PostgreSQL, SIGKILL, restart).

The server is the test's own (``tests/faults.py``): killing it never touches the shared servers.
"""

from __future__ import annotations

import threading
import time

import pytest
import sqlalchemy as sa
from faults import PrivatePostgres

from superduperdb import CFG, Collection, Watcher, superduper
from superduperdb.store.outputs import output_table

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def test_the_private_server_survives_sigkill_and_restarts(private_postgres: PrivatePostgres) -> None:
    server = private_postgres
    engine = sa.create_engine(server.uri, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        conn.execute(sa.text('CREATE TABLE t (id INT PRIMARY KEY)'))
        conn.execute(sa.text('INSERT INTO t SELECT generate_series(1, 100)'))
    started = time.monotonic()
    server.kill()
    with pytest.raises(sa.exc.OperationalError), engine.connect():
        pass
    server.start()
    restarted = time.monotonic() - started
    with engine.connect() as conn:
        assert conn.execute(sa.text('SELECT count(*) FROM t')).scalar() == 100  # committed rows survive
    assert restarted < 15, f'a kill and restart took {restarted:.1f} s'


def slow_double(x):
    time.sleep(0.002)
    return 2 * x


def test_a_backfill_whose_database_dies_ends_failed_with_the_real_cause(
    private_postgres: PrivatePostgres, tmp_path
) -> None:
    """Item 6 of issue 13. Before: db.add returned with the job 'running', error None, and after
    3 heartbeats the record said 'no heartbeat' while this (live) process ran it."""
    server = private_postgres
    with CFG.override(**{'cluster.heartbeat': 0.2, 'artifact_store': f'filesystem://{tmp_path}/a'}):
        db = superduper(server.uri)
        db.chunk_size = 50
        coll = Collection('docs')
        db.execute(coll.insert_many([{'x': i} for i in range(2000)]))
        out = output_table('docs', 'x', 'double')

        def kill_mid_way() -> None:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # wait until some outputs are committed
                try:
                    if db.databackend.has_table(out) and db.databackend.count(out, {}) >= 100:
                        break
                except Exception:
                    pass
                time.sleep(0.02)
            server.kill()
            time.sleep(1.5)  # the database stays away for a while
            server.start()

        killer = threading.Thread(target=kill_mid_way)
        killer.start()
        double = superduper(slow_double, identifier='double')
        watcher = db.add(Watcher(model=double, key='x', select=coll.find()))
        killer.join()
        (job,) = watcher.jobs_
        assert job.status == 'failed', f'db.add left the job {job.status}'
        assert 'OperationalError' in (job.error or '') or 'BackendError' in (job.error or ''), job.error
        time.sleep(4 * CFG.cluster.heartbeat)  # long past the point where a silent job counts as dead
        stored = db.job(job.id)
        assert stored.status == 'failed'
        assert stored.error is not None
        assert 'no heartbeat' not in stored.error
        assert 'OperationalError' in stored.error or 'BackendError' in stored.error, stored.error
        done = db.databackend.count(out, {})
        assert 100 <= done < 2000  # it really died mid-way
        # and a rerun resumes: every row gets exactly one output
        db.submit_job('predict', job.args, component=job.component).wait(60)
        assert db.databackend.count(out, {}) == 2000
        ids = [r['_id'] for chunk in db.databackend.find(out, {}, projection={'_id': 1}) for r in chunk]
        assert len(set(ids)) == 2000
        db.close()
