"""Watch latency: from a committed insert to its output being readable, p50 and p95.

Modes (each with a cheap model: scikit-learn LogisticRegression on a 16-float vector):

- ``local``: a Watcher, the local executor; the row is inserted with ``db.execute`` and
  its job runs in the foreground (in-process trigger).
- ``dask``: the same, with jobs sent to a Dask LocalCluster (2 worker processes).
- ``cdc``: the row is inserted with the raw driver by "another application"; change
  capture (``db.cdc.start()``, in-process thread) picks it up.
- ``hand``: the baseline, a hand-written loop doing the same work in one process:
  insert the row, read it back, predict, write the output, commit.

Latency is measured by the inserting side: from just before the insert until a read of
the row returns its output (polling every 2 ms where the work is asynchronous).

    python benchmarks/watch_latency.py --backend postgres --n 200 --modes hand local dask cdc
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
import uuid

import numpy as np
from pg_schema import PG, private_schema

DIM = 16


def make_model():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(1)
    X = rng.normal(size=(200, DIM))
    return LogisticRegression().fit(X, (X[:, 0] > 0).astype(int))


def percentiles(latencies: list[float]) -> tuple[float, float]:
    ms = np.array(latencies) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))


def wait_for_output(db, coll, n: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        doc = db.execute(coll.find_one({'n': n}))
        if doc is not None and 'lr' in doc.get('_outputs', {}).get('x', {}):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f'no output for row {n} after {timeout} s')
        time.sleep(0.002)


def run_superduperdb(mode: str, backend: str, uri: str, n: int) -> list[float]:
    import json

    import sqlalchemy as sa

    from superduperdb import Collection, Watcher, superduper
    from superduperdb.base.document import new_id

    db = superduper(uri)
    coll = Collection(f'bench_latency_{uuid.uuid4().hex[:8]}')
    cluster = client = None
    try:
        db.execute(coll.insert_one({'n': -1, 'x': [0.0] * DIM}))
        if mode == 'dask':
            from distributed import Client, LocalCluster

            from superduperdb.jobs.dask import DaskExecutor

            cluster = LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None)
            client = Client(cluster)
            db.executor = DaskExecutor(client)
        db.add(Watcher(model=superduper(make_model(), identifier='lr'), key='x', select=coll.find()))
        for job in db.jobs('pending') + db.jobs('running'):
            job.wait(60)
        if mode == 'cdc':
            db.cdc.start()
        rng = np.random.default_rng(0)
        # "another application": its own engine (superduperdb's connections are marked as ours)
        engine = sa.create_engine(db.databackend.engine.url) if mode == 'cdc' else None
        value = 'CAST(:x AS JSON)' if backend == 'postgres' else ':x'
        insert_sql = sa.text(f'INSERT INTO {coll.name} (_id, n, x) VALUES (:id, :n, {value})')
        latencies = []
        for i in range(n):
            x = rng.normal(size=DIM).tolist()
            start = time.perf_counter()
            if mode == 'cdc':
                with engine.begin() as conn:
                    conn.execute(insert_sql, {'id': new_id(), 'n': i, 'x': json.dumps(x)})
                wait_for_output(db, coll, i)
            else:
                db.execute(coll.insert_one({'n': i, 'x': x}))
                wait_for_output(db, coll, i)
            latencies.append(time.perf_counter() - start)
        return latencies
    finally:
        if mode == 'cdc':
            db.cdc.stop()
        for identifier in db.show('watcher'):
            db.remove('watcher', identifier, force=True)
        db.drop_table(coll.name)
        db.close()
        if client is not None:
            client.close()
            cluster.close()


def run_hand(backend: str, workdir: str, n: int) -> list[float]:
    """Insert, read back, predict, write the output, commit: one process, the raw driver."""
    import json
    import sqlite3

    model = make_model()
    table = f'bench_latency_hand_{uuid.uuid4().hex[:8]}'
    if backend == 'postgres':
        import psycopg

        conn = psycopg.connect(PG, autocommit=False)
        ph = '%s'
        json_type = 'JSONB'
    else:
        conn = sqlite3.connect(f'{workdir}/hand.sqlite')
        ph = '?'
        json_type = 'TEXT'
    cur = conn.cursor()
    cur.execute(f'CREATE TABLE {table} (id TEXT PRIMARY KEY, n BIGINT, x {json_type})')
    cur.execute(f'CREATE TABLE {table}_out (id TEXT PRIMARY KEY, output BIGINT)')
    conn.commit()
    rng = np.random.default_rng(0)
    latencies = []
    try:
        for i in range(n):
            x = rng.normal(size=DIM).tolist()
            start = time.perf_counter()
            row_id = uuid.uuid4().hex[:24]
            cur.execute(
                f'INSERT INTO {table} (id, n, x) VALUES ({ph}, {ph}, {ph})', (row_id, i, json.dumps(x))
            )
            conn.commit()
            cur.execute(f'SELECT id, x FROM {table} WHERE id = {ph}', (row_id,))
            rid, stored = cur.fetchone()
            vector = stored if isinstance(stored, list) else json.loads(stored)
            y = int(model.predict(np.asarray([vector]))[0])
            cur.execute(f'INSERT INTO {table}_out (id, output) VALUES ({ph}, {ph})', (rid, y))
            conn.commit()
            cur.execute(f'SELECT output FROM {table}_out WHERE id = {ph}', (rid,))
            cur.fetchone()
            latencies.append(time.perf_counter() - start)
    finally:
        cur.execute(f'DROP TABLE {table}')
        cur.execute(f'DROP TABLE {table}_out')
        conn.commit()
        conn.close()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument('--backend', default='postgres', choices=['postgres', 'sqlite'])
    parser.add_argument('--n', type=int, default=200)
    parser.add_argument('--modes', nargs='+', default=['hand', 'local', 'dask', 'cdc'])
    args = parser.parse_args()
    os.environ.setdefault('SUPERDUPERDB_LOG_LEVEL', 'ERROR')
    print(f'{"backend":10} {"mode":6} {"n":>5} {"p50 ms":>8} {"p95 ms":>8}')
    with tempfile.TemporaryDirectory() as workdir, contextlib.ExitStack() as stack:
        uri = f'sqlite:///{workdir}/latency.sqlite'
        if args.backend == 'postgres':  # superduperdb's metadata, queue and triggers go with it
            uri = stack.enter_context(private_schema('bench_latency'))
        os.environ['SUPERDUPERDB_ARTIFACT_STORE'] = f'filesystem://{workdir}/artifacts'
        from superduperdb import CFG

        CFG.artifact_store = os.environ['SUPERDUPERDB_ARTIFACT_STORE']
        CFG.cdc.poll_interval = 0.05
        for mode in args.modes:
            if mode == 'hand':
                latencies = run_hand(args.backend, workdir, args.n)
            else:
                latencies = run_superduperdb(mode, args.backend, uri, args.n)
            p50, p95 = percentiles(latencies)
            print(f'{args.backend:10} {mode:6} {args.n:5d} {p50:8.2f} {p95:8.2f}', flush=True)


if __name__ == '__main__':
    main()
