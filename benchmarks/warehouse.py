"""Predict over a warehouse table: ``model.predict(X, db=db, select=...)`` on chdb vs a hand-written loop.

Both sides use the same driver (clickhouse-connect over chdb, the ClickHouse engine in
process) and the same plan: read the rows in keyset pages of ``--chunk`` rows ordered by the
key, run the model on the page, append the outputs to a MergeTree output table ordered by the
row key, one insert per page. superduperdb also stores, per output, the model version and
an XXH3-128 of the input (what makes a rerun incremental); the hand loop does not.

Models: ``length`` (``len(text)`` per row: the cost is all I/O and bookkeeping) and ``vector``
(a batched 32 -> 8 float projection of a stored float32[32] vector: decoding and encoding
arrays per row). The table is made before any clock starts; each side runs ``--repeat``
times on fresh output tables and the fastest run counts. Prints a markdown table.

    python benchmarks/warehouse.py --n 1000000 --repeat 3
    python benchmarks/warehouse.py --n 2000 --repeat 1          # the smoke test's size
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
import uuid

import numpy as np

DIM, OUT = 32, 8
WORDS = ['red', 'green', 'blue', 'shoe', 'shirt', 'coat', 'fast', 'slow', 'river', 'city']


def setup(path: str, n: int) -> None:
    """``items``: n rows of a text and a float32[32] vector, written in large batches (untimed)."""
    import clickhouse_connect

    from superduperdb import Collection, Document, superduper
    from superduperdb.encoders.numpy import array

    db = superduper(f'chdb://{path}')
    vec = array('float32', DIM)
    # the first row through superduperdb: the table and its column's encoder recorded
    db.execute(
        Collection('items').insert_one(
            Document({'_id': f'{0:08d}', 'text': 'red', 'vec': vec(np.zeros(DIM, 'float32'))})
        )
    )
    db.close()
    client = clickhouse_connect.get_client(dsn=f'chdb://{path}')
    rng = np.random.default_rng(0)
    step = 100_000
    for lo in range(1, n, step):
        hi = min(lo + step, n)
        vectors = rng.normal(size=(hi - lo, DIM)).astype('float32')
        words = rng.choice(WORDS, size=(hi - lo, 5))
        rows = [[f'{i:08d}', ' '.join(words[i - lo]), vectors[i - lo].tobytes()] for i in range(lo, hi)]
        client.insert('items', rows, column_names=['_id', 'text', 'vec'])
    client.close()


def projection() -> np.ndarray:
    return np.random.default_rng(1).normal(size=(DIM, OUT)).astype('float32')


def run_superduperdb(path: str, model: str, chunk: int) -> float:
    from superduperdb import Collection, superduper
    from superduperdb.encoders.numpy import array

    db = superduper(f'chdb://{path}')
    db.chunk_size = chunk
    name = f'bench-{model}-{uuid.uuid4().hex[:6]}'  # a new output table each round
    if model == 'length':
        wrapped, key = superduper(len, identifier=name), 'text'
    else:
        w = projection()
        wrapped = superduper(
            lambda batch: list(np.stack(batch) @ w),
            identifier=name,
            batched=True,
            encoder=array('float32', OUT),
        )
        key = 'vec'
    start = time.perf_counter()
    report = wrapped.predict(X=key, db=db, select=Collection('items').find())
    elapsed = time.perf_counter() - start
    assert report.failed == 0 and report.computed > 0, report
    db.close()
    return elapsed


def run_hand_written(path: str, model: str, chunk: int) -> float:
    import clickhouse_connect

    client = clickhouse_connect.get_client(dsn=f'chdb://{path}')
    out = f'hand_{model}_{uuid.uuid4().hex[:6]}'
    kind = 'Int64' if model == 'length' else 'String'
    client.command(f'CREATE TABLE {out} (_id String, output {kind}) ENGINE = MergeTree ORDER BY _id')
    w = projection()
    column = 'text' if model == 'length' else 'vec'
    start = time.perf_counter()
    last = ''
    while True:
        result = client.query(
            f'SELECT _id, {column} FROM items WHERE _id > %(last)s ORDER BY _id LIMIT {chunk}',
            parameters={'last': last},
            column_formats={'vec': 'bytes'},
        )
        rows = result.result_rows
        if not rows:
            break
        last = rows[-1][0]
        if model == 'length':
            values: list = [len(r[1]) for r in rows]
        else:
            X = np.frombuffer(b''.join(r[1] for r in rows), dtype='float32').reshape(len(rows), DIM)
            values = [v.tobytes() for v in X @ w]
        client.insert(out, [[r[0], v] for r, v in zip(rows, values)], column_names=['_id', 'output'])
    elapsed = time.perf_counter() - start
    client.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--n', type=int, default=1_000_000)
    parser.add_argument('--models', nargs='+', default=['length', 'vector'])
    parser.add_argument('--chunk', type=int, default=10_000)
    parser.add_argument('--repeat', type=int, default=3)
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix='sddb-warehouse-')
    path = os.path.join(workdir, 'wh')
    try:
        started = time.perf_counter()
        setup(path, args.n)
        print(f'table of {args.n} rows made in {time.perf_counter() - started:.1f} s (untimed)')
        print()
        print('| model | rows | superduperdb s | hand-written s | ratio |')
        print('|---|---:|---:|---:|---:|')
        for model in args.models:
            ours = min(run_superduperdb(path, model, args.chunk) for _ in range(args.repeat))
            hand = min(run_hand_written(path, model, args.chunk) for _ in range(args.repeat))
            print(f'| {model} | {args.n} | {ours:.2f} | {hand:.2f} | {ours / hand:.2f}x |', flush=True)
        load = os.getloadavg()
        print(f'\nload average: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; best of {args.repeat} rounds each')
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == '__main__':
    main()
