"""Bulk insert and read-back of rows with a 384-float vector: superduperdb vs a hand-written loop.

Both sides do the same work with the same driver: insert N rows (text + float32[384] vector as
bytes) in chunks of 1000 in one transaction each, then read every row back and rebuild the
numpy arrays. Prints rows/s of both and the ratio (superduperdb time / hand-written time).

    python benchmarks/insert_find.py --n 20000 --backends sqlite postgres
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid

import numpy as np
from pg_schema import PG, private_schema

from superduperdb import CFG, Collection, Document, superduper
from superduperdb.encoders.numpy import array

DIM = 384
CHUNK = 1000


def data(n: int):
    rng = np.random.default_rng(0)
    return [f'text {i}' for i in range(n)], rng.normal(size=(n, DIM)).astype('float32')


def hand_written(backend: str, path: str, texts, vectors) -> tuple[float, float]:
    table = f'bench_raw_{uuid.uuid4().hex[:8]}'
    if backend == 'sqlite':
        import sqlite3

        conn = sqlite3.connect(path)
        ph = '?'
    else:
        import psycopg

        conn = psycopg.connect(PG)
        ph = '%s'
    blob = 'BLOB' if backend == 'sqlite' else 'BYTEA'
    cur = conn.cursor()
    cur.execute(f'CREATE TABLE {table} (id VARCHAR(255) PRIMARY KEY, text TEXT, vec {blob})')
    conn.commit()
    start = time.perf_counter()
    for lo in range(0, len(texts), CHUNK):
        rows = [
            (uuid.uuid4().hex, texts[i], vectors[i].tobytes()) for i in range(lo, min(lo + CHUNK, len(texts)))
        ]
        cur.executemany(f'INSERT INTO {table} VALUES ({ph}, {ph}, {ph})', rows)
        conn.commit()
    insert = time.perf_counter() - start
    start = time.perf_counter()
    cur.execute(f'SELECT id, text, vec FROM {table} ORDER BY id')
    out = [(i, t, np.frombuffer(v, dtype='float32')) for i, t, v in cur.fetchall()]
    assert len(out) == len(texts)
    read = time.perf_counter() - start
    cur.execute(f'DROP TABLE {table}')
    conn.commit()
    conn.close()
    return insert, read


def superduperdb_side(backend: str, uri: str, texts, vectors) -> tuple[float, float]:
    db = superduper(uri)
    coll = Collection(f'bench_sddb_{uuid.uuid4().hex[:8]}')
    vec = array('float32', DIM)
    start = time.perf_counter()
    for lo in range(0, len(texts), CHUNK):
        hi = min(lo + CHUNK, len(texts))
        db.execute(
            coll.insert_many([Document({'text': texts[i], 'vec': vec(vectors[i])}) for i in range(lo, hi)])
        )
    insert = time.perf_counter() - start
    start = time.perf_counter()
    out = [(d['_id'], d['text'], d['vec'].x) for d in db.execute(coll.find())]
    assert len(out) == len(texts)
    read = time.perf_counter() - start
    db.drop_table(coll.name)
    db.close()
    return insert, read


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--n', type=int, default=20000)
    parser.add_argument('--backends', nargs='+', default=['sqlite', 'postgres'])
    args = parser.parse_args()
    texts, vectors = data(args.n)
    tmp = tempfile.mkdtemp()
    print(f'N = {args.n} rows, float32[{DIM}] vector + text, chunks of {CHUNK}')
    print(f'{"backend":10} {"step":7} {"hand rows/s":>12} {"sddb rows/s":>12} {"ratio":>6}')
    with CFG.override(artifact_store=f'filesystem://{tmp}/artifacts'):
        for backend in args.backends:
            raw = hand_written(backend, f'{tmp}/raw.sqlite', texts, vectors)
            if backend == 'sqlite':
                ours = superduperdb_side(backend, f'sqlite:///{tmp}/bench.sqlite', texts, vectors)
            else:  # a schema of its own: superduperdb's metadata tables go with it
                with private_schema('bench_insert') as uri:
                    ours = superduperdb_side(backend, uri, texts, vectors)
            for step, r, o in zip(('insert', 'read'), raw, ours):
                print(f'{backend:10} {step:7} {args.n / r:12,.0f} {args.n / o:12,.0f} {o / r:6.2f}')


if __name__ == '__main__':
    main()
