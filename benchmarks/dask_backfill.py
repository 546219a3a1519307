"""A watcher's backfill split into partitions on a Dask LocalCluster: the speedup per worker.

N rows of a text and a ``float32[384]`` vector in PostgreSQL (a schema of the run's own). For
each worker count W: a LocalCluster of W single-threaded worker processes, a watcher with
``cluster.backfill_partitions = W``, timed from ``db.add(watcher)`` until its ``predict_parts``
job is done; then every row is checked to have exactly one output. The model is a scikit-learn
``LogisticRegression`` on the vector (cheap: reading and writing rows dominate), or with
``--model mlp`` a model whose compute dominates. Speedup = time
with one worker / time with W (the first count's time, times its worker count, when it is not 1).

    python benchmarks/dask_backfill.py --n 200000 --workers 1 2 3
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from pg_schema import private_schema

DIM = 384
CHUNK = 5000


def make_model(kind: str = 'cheap'):
    """``cheap``: a LogisticRegression (reading and writing rows dominate); ``mlp``: a
    scikit-learn MLP with two hidden layers of 512 (~0.5 MFLOP a row: the model dominates, as an
    embedding model's would)."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((500, DIM), dtype=np.float32)
    y = (X[:, 0] > 0).astype(int)
    if kind == 'mlp':
        from sklearn.neural_network import MLPClassifier

        return MLPClassifier(hidden_layer_sizes=(512, 512), max_iter=5).fit(X, y)
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=200).fit(X, y)


def fill(db, table: str, n: int) -> None:
    from superduperdb import Collection
    from superduperdb.encoders.numpy import array

    vec = array('float32', DIM)
    coll = Collection(table)
    for lo in range(0, n, CHUNK):
        rng = np.random.default_rng(lo)
        vectors = rng.standard_normal((min(CHUNK, n - lo), DIM), dtype=np.float32)
        db.execute(
            coll.insert_many([{'text': f'doc {lo + i}', 'vec': vec(v)} for i, v in enumerate(vectors)])
        )


def run(uri: str, table: str, n: int, workers: int, artifacts: str, kind: str) -> float:
    from distributed import Client, LocalCluster

    from superduperdb import CFG, Collection, Watcher, superduper
    from superduperdb.jobs.dask import DaskExecutor

    env = {'SUPERDUPERDB_ARTIFACT_STORE': artifacts, 'OPENBLAS_NUM_THREADS': '1'}
    with (
        LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=':0', env=env
        ) as cluster,
        Client(cluster) as client,
    ):
        client.run(lambda: __import__('superduperdb.predict.jobs'))  # imports out of the timing
        db = superduper(uri)
        db.executor = DaskExecutor(client)
        model = superduper(make_model(kind), identifier=f'{kind}-{workers}')
        overrides = {'cluster.backfill_partitions': workers, 'cluster.backfill_partition_rows': 1000}
        start = time.perf_counter()
        with CFG.override(**overrides):
            watcher = db.add(Watcher(model=model, key='vec', select=Collection(table).find()))
        job = watcher.backfill_
        assert job is not None
        job.wait(timeout=3600)
        seconds = time.perf_counter() - start
        out = db.outputs.register(table, 'vec', model.identifier)
        stored = db.databackend.count(out, {})
        assert stored == n and job.result['computed'] == n, (stored, job.result)
        db.close()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--n', type=int, default=100_000)
    parser.add_argument('--workers', type=int, nargs='+', default=[1, 2])
    parser.add_argument('--model', choices=['cheap', 'mlp'], default='cheap', help=make_model.__doc__)
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(__file__))
    import tempfile

    from superduperdb import CFG, superduper

    artifacts = f'filesystem://{tempfile.mkdtemp(prefix="dask-bench-")}/artifacts'
    with CFG.override(artifact_store=artifacts), private_schema('bench_dask') as uri:
        db = superduper(uri)
        fill(db, 'rows', args.n)
        db.close()
        load = '/'.join(f'{x:.1f}' for x in os.getloadavg())
        print(f'N = {args.n:,} rows on PostgreSQL, model {args.model} on the vector, load {load}')
        print(f'{"workers":>7} {"seconds":>8} {"rows/s":>9} {"speedup":>7}')
        first = None
        for workers in args.workers:
            seconds = run(uri, 'rows', args.n, workers, artifacts, args.model)
            if first is None:
                first = (
                    seconds * workers
                )  # the speedup is against one worker's time (the first count, scaled)
            print(f'{workers:>7} {seconds:8.2f} {args.n / seconds:9,.0f} {first / seconds:7.2f}', flush=True)


if __name__ == '__main__':
    main()
