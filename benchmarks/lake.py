"""A Parquet lake as a datalayer vs hand-written DuckDB/pyarrow code, on a disk and on S3.

The table: N rows of (id, text, float32[384] vector), written by pyarrow as files of
``--file-rows`` rows each (as a pipeline would), in a folder on the local disk and, with
``--s3``, in a bucket of a local S3-compatible server (moto's, started here). Three steps,
each timed for superduperdb and for hand-written code doing the same work, in the same run:

- ``find``: 5 queries (after one to warm up) with a selective filter
  (``{'id': {'$gte': a, '$lt': a + 100}, 'text': {'$ne': ''}}``),
  every column of the matching rows, vectors as numpy arrays. Hand-written: one DuckDB
  ``read_parquet`` query, fetched as Arrow, converted the same way.
- ``predict``: a cheap model (the vector's first component > 0) over every row, outputs
  written as Parquet beside the table. Hand-written: read (id, vec) in record batches with
  DuckDB, compute, write one Parquet file of (id, output) per batch; ``hand+bk`` also writes
  what superduperdb stores with each output so that reruns are incremental (the model version
  and an XXH3-128 of the input), and ``ratio+bk`` compares with it (as bulk_predict.py does).
- ``like``: a vector index over the stored vectors (in-memory engine), then 20 ``like()``
  queries of n=10. Hand-written: the vectors read into a numpy matrix, normalised, and 20
  exact cosine top-10 searches, each fetching its 10 rows with DuckDB (as ``like()`` returns
  rows). The build is timed apart from the searches.

Each side runs in a fresh process so its peak RSS (printed) is its own: it should stay flat
as N grows (files are streamed, never a whole table in memory), except ``like`` whose index
holds every vector by design.

    python benchmarks/lake.py --n 1000000 --s3
    python benchmarks/lake.py --n 2000            # the smoke test's size
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

DIM = 384
BATCH = 10_000


def make_table(root: str, n: int, file_rows: int) -> None:
    """Write the table ``items`` under ``root`` (a folder, or an s3:// URL)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    fs = None
    if root.startswith('s3://'):
        import s3fs

        fs = s3fs.S3FileSystem()
    else:
        os.makedirs(f'{root}/items', exist_ok=True)
    rng = np.random.default_rng(0)
    for start in range(0, n, file_rows):
        m = min(file_rows, n - start)
        ids = np.arange(start, start + m, dtype='int64')
        vectors = rng.normal(size=(m, DIM)).astype('float32')
        data = pa.table(
            {
                'id': ids,
                'text': [f'item {i} of the lake' for i in ids],
                'vec': pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), DIM),
            }
        )
        path = f'{root}/items/part-{start:09d}.parquet'
        if fs is None:
            pq.write_table(data, path)
        else:
            with fs.open(path, 'wb') as f:
                pq.write_table(data, f)


def _files(root: str) -> list[str]:
    if root.startswith('s3://'):
        import s3fs

        return ['s3://' + p for p in sorted(s3fs.S3FileSystem().glob(f'{root}/items/*.parquet'))]
    return sorted(f'{root}/items/{f}' for f in os.listdir(f'{root}/items') if f.endswith('.parquet'))


def _connect_duckdb(root: str):
    import duckdb

    con = duckdb.connect()
    if root.startswith('s3://'):
        import s3fs

        con.register_filesystem(s3fs.S3FileSystem())
    return con


def _vectors(column) -> list:
    if hasattr(column, 'combine_chunks'):
        column = column.combine_chunks()
    if not len(column):
        return []
    flat = column.flatten().to_numpy()
    return list(flat.reshape(len(column), -1))


# ----- the sides: each returns seconds --------------------------------------------------
FINDS = 5  # queries timed (after one that warms both sides up), each at another place


def hand_find(root: str, lo: int) -> tuple[float, int]:
    con = _connect_duckdb(root)

    def find(at: int) -> list:
        files = _files(root)  # listed per query, as superduperdb does (files may have landed)
        data = con.sql(
            'SELECT id, text, vec FROM read_parquet($files) WHERE id >= $lo AND id < $hi AND text <> $e',
            params={'files': files, 'lo': at, 'hi': at + 100, 'e': ''},
        ).to_arrow_table()
        return _rows(data)

    return _timed(find, lo)


def _rows(data) -> list:
    ids, texts, vectors = data['id'].to_pylist(), data['text'].to_pylist(), _vectors(data['vec'])
    return [{'id': i, 'text': s, 'vec': v} for i, s, v in zip(ids, texts, vectors)]


def sddb_find(root: str, lo: int) -> tuple[float, int]:
    from superduperdb import Collection, superduper

    db = superduper(root if '://' in root else f'file://{root}')

    def find(at: int) -> list:
        query = Collection('items').find({'id': {'$gte': at, '$lt': at + 100}, 'text': {'$ne': ''}})
        return list(db.execute(query))

    return _timed(find, lo)


def _timed(find, lo: int) -> tuple[float, int]:
    find(0)
    t = time.perf_counter()
    rows = sum(len(find(lo + i * (lo // FINDS))) for i in range(FINDS))  # lo = N/2: all within N
    return (time.perf_counter() - t) / FINDS, rows // FINDS


def hand_predict(root: str, work: str, bookkeeping: bool = False) -> tuple[float, int]:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import xxhash

    con = _connect_duckdb(root)
    files = _files(root)
    out = f'{work}/hand_outputs'
    os.makedirs(out, exist_ok=True)
    t = time.perf_counter()
    reader = con.sql('SELECT id, vec FROM read_parquet($f)', params={'f': files}).to_arrow_reader(BATCH)
    n = 0
    for i, batch in enumerate(reader):
        vectors = _vectors(batch.column(1))
        matrix = np.stack(vectors)
        columns = {'id': batch.column(0), 'output': (matrix[:, 0] > 0).astype('int64')}
        if bookkeeping:  # what superduperdb stores besides: the model version, an input fingerprint
            columns['_version'] = np.zeros(len(vectors), dtype='int64')
            columns['_input_hash'] = [xxhash.xxh3_128_hexdigest(v) for v in vectors]
        pq.write_table(pa.table(columns), f'{out}/part-{i}.parquet')
        n += batch.num_rows
    return time.perf_counter() - t, n


def hand_bk_predict(root: str, work: str) -> tuple[float, int]:
    return hand_predict(root, work, bookkeeping=True)


def sddb_predict(root: str, work: str) -> tuple[float, int]:
    from superduperdb import Collection, superduper
    from superduperdb.models.function import FunctionModel

    db = superduper(root if '://' in root else f'file://{root}')
    # the model takes a batch as big as the hand-written side's (one per record batch)
    model = FunctionModel('first_positive', object=_first_positive, batched=True, batch_size=BATCH)
    t = time.perf_counter()
    report = model.predict(X='vec', db=db, select=Collection('items').find())
    return time.perf_counter() - t, report.computed


def _first_positive(vectors: list) -> list:
    return (np.stack(vectors)[:, 0] > 0).astype('int64').tolist()


def _queries() -> np.ndarray:
    n = int(os.environ.get('LAKE_BENCH_QUERIES', '20'))
    return np.random.default_rng(1).normal(size=(n, DIM)).astype('float32')


def hand_like(root: str, work: str) -> tuple[float, float, int]:
    con = _connect_duckdb(root)
    files = _files(root)
    t = time.perf_counter()
    ids, parts = [], []
    rel = con.sql('SELECT id, vec FROM read_parquet($f)', params={'f': files})
    for batch in rel.to_arrow_reader(BATCH):
        ids.extend(batch.column(0).to_pylist())
        parts.append(np.stack(_vectors(batch.column(1))))
    matrix = np.vstack(parts)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    built = time.perf_counter() - t
    t = time.perf_counter()
    found = 0
    for q in _queries():  # the top 10 by cosine, then their rows (as like() returns rows)
        scores = matrix @ (q / np.linalg.norm(q))
        top = np.argpartition(-scores, 10)[:10]
        best = [ids[i] for i in top[np.argsort(-scores[top])]]
        data = con.sql(
            'SELECT id, text, vec FROM read_parquet($f) WHERE id IN (SELECT unnest($ids))',
            params={'f': _files(root), 'ids': best},
        ).to_arrow_table()
        rank = {k: i for i, k in enumerate(best)}
        found += len(sorted(_rows(data), key=lambda r: rank[r['id']]))
    return built, time.perf_counter() - t, found


def sddb_like(root: str, work: str) -> tuple[float, float, int]:
    from superduperdb import CFG, Collection, VectorIndex, Watcher, superduper
    from superduperdb.models.precomputed import Precomputed

    db = superduper(root if '://' in root else f'file://{root}')
    CFG.vector_search.engine = 'inmemory'
    t = time.perf_counter()
    db.add(
        VectorIndex(
            'items-vec',
            indexing_watcher=Watcher(
                model=Precomputed('pipeline', dimensions=DIM), key='vec', select=Collection('items').find()
            ),
            measure='cosine',
        )
    )
    list(db.execute(Collection('items').like(_queries()[0], 'items-vec', n=1)))  # loads the index
    built = time.perf_counter() - t
    t = time.perf_counter()
    found = 0
    for q in _queries():
        found += len(list(db.execute(Collection('items').like(q, 'items-vec', n=10))))
    return built, time.perf_counter() - t, found


SIDES = {
    'hand_find': hand_find,
    'sddb_find': sddb_find,
    'hand_predict': hand_predict,
    'hand_bk_predict': hand_bk_predict,
    'sddb_predict': sddb_predict,
    'hand_like': hand_like,
    'sddb_like': sddb_like,
}


def child(side: str, root: str, arg: str) -> None:
    """One side in this (fresh) process: prints its result and peak RSS as JSON."""
    result = SIDES[side](root, int(arg) if side.endswith('find') else arg)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({'result': result, 'rss_mb': rss}))


def run_side(side: str, root: str, arg: str, env: dict[str, str]) -> dict:
    done = subprocess.run(
        [sys.executable, __file__, '--child', side, root, arg], capture_output=True, text=True, env=env
    )
    if done.returncode != 0:
        raise SystemExit(f'{side} failed:\n{done.stderr}')
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench(where: str, root: str, n: int, work: str, env: dict[str, str], steps: list[str]) -> None:
    lo = n // 2
    for step in steps:
        if step in ('predict', 'like'):  # a fresh metadata store, no outputs (like() attaches them)
            _reset(root, env)
        arg = str(lo) if step == 'find' else work
        hand = run_side(f'hand_{step}', root, arg, env)
        ours = run_side(f'sddb_{step}', root, arg, env)
        if step == 'like':
            hb, hs, hn = hand['result']
            sb, ss, sn = ours['result']
            print(
                f'{where:6} like-build {n:>9,} hand {hb:8.3f}s sddb {sb:8.3f}s ratio {sb / hb:5.2f}  '
                f'rss hand {hand["rss_mb"]:7.0f} MB sddb {ours["rss_mb"]:7.0f} MB'
            )
            print(
                f'{where:6} like-q      {n:>9,} hand {hs:8.3f}s sddb {ss:8.3f}s '
                f'ratio {ss / hs:5.2f}  rows {hn}/{sn}'
            )
        elif step == 'predict':
            bk = run_side('hand_bk_predict', root, arg, env)
            (ht, hn), (st, sn), (bt, _) = hand['result'], ours['result'], bk['result']
            print(
                f'{where:6} {step:10} {n:>9,} hand {ht:8.3f}s hand+bk {bt:8.3f}s sddb {st:8.3f}s '
                f'ratio {st / ht:5.2f} ratio+bk {st / bt:5.2f}  '
                f'rss hand {hand["rss_mb"]:7.0f} MB sddb {ours["rss_mb"]:7.0f} MB  rows {hn}/{sn}'
            )
        else:
            (ht, hn), (st, sn) = hand['result'], ours['result']
            print(
                f'{where:6} {step:10} {n:>9,} hand {ht:8.3f}s sddb {st:8.3f}s ratio {st / ht:5.2f}  '
                f'rss hand {hand["rss_mb"]:7.0f} MB sddb {ours["rss_mb"]:7.0f} MB  rows {hn}/{sn}'
            )
        sys.stdout.flush()


def _reset(root: str, env: dict[str, str]) -> None:
    """Remove superduperdb's outputs and metadata from the lake (a fresh predict)."""
    if root.startswith('s3://'):
        import s3fs

        fs = s3fs.S3FileSystem()
        for path in fs.ls(root):
            if path.rsplit('/', 1)[-1].startswith('_superduper'):
                fs.rm(path, recursive=True)
        shutil.rmtree(os.path.join(env['XDG_CACHE_HOME'], 'superduperdb'), ignore_errors=True)
        return
    for name in os.listdir(root):
        if name.startswith('_superduper'):
            shutil.rmtree(os.path.join(root, name))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument('--n', type=int, nargs='+', default=[100_000])
    parser.add_argument('--file-rows', type=int, default=100_000)
    parser.add_argument('--s3', action='store_true', help='also on a local S3 server (moto)')
    parser.add_argument('--no-local', action='store_true', help='only on S3')
    parser.add_argument('--steps', nargs='+', default=['find', 'predict', 'like'])
    parser.add_argument('--queries', type=int, default=20, help='like() queries timed')
    parser.add_argument('--child', nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as work:
        env['XDG_CACHE_HOME'] = f'{work}/cache'
        env['SUPERDUPERDB_LOG_LEVEL'] = 'ERROR'
        env['LAKE_BENCH_QUERIES'] = str(args.queries)
        if args.s3:
            sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
            from tests import s3_server

            s3_server.start()
            env.update({k: os.environ[k] for k in os.environ if k.startswith('AWS_')})
        for n in args.n:
            places = [] if args.no_local else [('local', f'{work}/lake{n}')]
            if args.s3:
                places.append(('s3', f'{s3_server.bucket(f"bench-{n}")}/lake'))
            for where, root in places:
                t = time.perf_counter()
                make_table(root, n, args.file_rows)
                print(f'{where:6} wrote {n:,} rows in {time.perf_counter() - t:.1f}s', flush=True)
                bench(where, root, n, work, env, args.steps)
                if where == 'local':
                    shutil.rmtree(root)


if __name__ == '__main__':
    main()
