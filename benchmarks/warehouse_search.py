"""Exact vector search inside ClickHouse (``vector_search.in_database``) vs the in-memory engine.

A chdb table of ``--n`` rows, each a float32[``--dim``] vector and a group number (0-9), the
vectors stored through a watcher (identity model) and indexed by an ``inmemory`` VectorIndex;
all made before any clock starts. Then, through ``db.execute(coll.like(...))`` (``--top``
results, rows read back included), the best of ``--repeat`` searches each way: with no
filter, with a filter applied first that keeps 10% of the rows, and one that keeps 90%. The
engine's side also reports what its copy costs: loading it from the stored vectors (seconds)
and its size. Prints a markdown table.

    python benchmarks/warehouse_search.py --n 100000 --dim 384
    python benchmarks/warehouse_search.py --n 1000000 --dim 384 --repeat 3
    python benchmarks/warehouse_search.py --n 2000 --dim 16 --repeat 1   # the smoke test's size
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

import numpy as np


def setup(path: str, n: int, dim: int) -> None:
    """The table (written in large batches by the client), then the index (untimed)."""
    import clickhouse_connect

    from superduperdb import Collection, Document, VectorIndex, Watcher, superduper
    from superduperdb.encoders.numpy import array

    vec = array('float32', dim)
    db = superduper(f'chdb://{path}')
    db.execute(
        Collection('docs').insert_one(Document({'_id': 'first', 'g': 0, 'v': vec(np.zeros(dim, 'float32'))}))
    )
    db.close()
    client = clickhouse_connect.get_client(dsn=f'chdb://{path}')
    rng = np.random.default_rng(0)
    for lo in range(0, n - 1, 50_000):
        hi = min(n - 1, lo + 50_000)
        vectors = rng.normal(size=(hi - lo, dim)).astype('float32')
        columns = [
            [f'{i:08d}' for i in range(lo, hi)],
            [i % 10 for i in range(lo, hi)],
            [v.tobytes() for v in vectors],
        ]
        client.insert('docs', columns, column_names=['_id', 'g', 'v'], column_oriented=True)
    client.close()
    db = superduper(f'chdb://{path}')
    identity = superduper(lambda x: x, identifier='identity', encoder=vec)
    db.add(
        VectorIndex(
            'search', indexing_watcher=Watcher(model=identity, key='v', select=Collection('docs').find())
        )
    )
    db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--n', type=int, default=100_000)
    parser.add_argument('--dim', type=int, default=384)
    parser.add_argument('--top', type=int, default=10)
    parser.add_argument('--repeat', type=int, default=3)
    args = parser.parse_args()
    from superduperdb import CFG, Collection, superduper

    workdir = tempfile.mkdtemp(prefix='sddb-warehouse-search-')
    path = os.path.join(workdir, 'wh')
    try:
        started = time.perf_counter()
        setup(path, args.n, args.dim)
        made = time.perf_counter() - started
        print(f'table and index of {args.n} x {args.dim} made in {made:.1f} s (untimed)')
        db = superduper(f'chdb://{path}')
        coll = Collection('docs')
        query = np.random.default_rng(5).normal(size=args.dim).astype('float32')
        searches = {
            'no filter': coll.like(query, 'search', n=args.top).find(),
            'filter first, 10% of rows': coll.find({'g': 3}).like(query, 'search', n=args.top),
            'filter first, 90% of rows': coll.find({'g': {'$ne': 3}}).like(query, 'search', n=args.top),
        }
        db.vectors.unload('search')
        started = time.perf_counter()
        state = db.vectors.loaded(db.vectors.get('search'))
        load = time.perf_counter() - started
        size = len(state.engine) * args.dim * 4 / 1e6 if state.engine is not None else 0.0
        print(f"the engine's copy: loaded in {load:.2f} s, {size:.0f} MB of vectors\n")
        print('| rows | search | in ClickHouse ms | in-memory engine ms | same results |')
        print('|---:|---|---:|---:|---|')
        for name, q in searches.items():
            timings, found = {}, {}
            for inside in (True, False):
                with CFG.override(**{'vector_search.in_database': inside}):
                    best = float('inf')
                    for _ in range(args.repeat):
                        began = time.perf_counter()
                        found[inside] = [d['_id'] for d in db.execute(q)]
                        best = min(best, time.perf_counter() - began)
                    timings[inside] = best * 1000
            same = 'yes' if found[True] == found[False] else 'no'
            print(f'| {args.n} | {name} | {timings[True]:.0f} | {timings[False]:.0f} | {same} |', flush=True)
        db.close()
        one, five, fifteen = os.getloadavg()
        print(f'\nload average: {one:.2f} {five:.2f} {fifteen:.2f}; best of {args.repeat} each')
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == '__main__':
    main()
