"""The peer workload: insert, watcher backfill, index stored vectors, search; superduperdb vs hand-written.

N rows of a text, a ``float32[384]`` vector and a small int ``grp`` (``i % 10``), on SQLite or
PostgreSQL. The phases, each run by both sides with the same driver (sqlite3 / psycopg) and
numpy. The rows (texts, vectors, the hand-written side's uuid keys) are made before the clock
starts on both sides; superduperdb's side is the user's path as the README writes it, so
building the ``Document``s and the encoder is timed.

- ``insert``: N rows in chunks of 1000, one transaction per chunk. superduperdb:
  ``db.execute(coll.insert_many([Document(...)]))`` with ``array('float32', 384)``; hand-written:
  ``executemany`` of ``(id, text, vec.tobytes(), grp)``. Each side writes a fresh table, and
  making it is on both clocks. ``setup`` (reported apart): connecting, the table and the
  first chunk.
- ``backfill``: a cheap model (the text's length, a float) attached with a watcher over the
  whole table, outputs written to an output table: what each side adds around a model shows.
  superduperdb: ``model.predict(X='text', db=db, select=coll.find(), watch=True)``;
  hand-written: keyset pages of 1000 ``(_id, text)``, the model, ``executemany`` into an output
  table, commit per page. ``backfill_logreg``: the same with a compute-bound model
  (scikit-learn ``LogisticRegression`` on the vector, ``np.frombuffer`` per page).
- ``index``: a cosine index over the vectors the table already holds. superduperdb:
  ``db.add(VectorIndex(..., Watcher(model=Precomputed(...), key='vec', ...)))`` and the index
  loaded in this process; hand-written: one ``SELECT`` streamed into a preallocated float32
  matrix, normalised in place.
- ``like``: ``--queries`` random queries, top 10, timed one at a time, on the index just built
  (same process): the search and the 10 rows read back with their vectors decoded, best first.
  superduperdb: ``db.execute(coll.like(q, idx, n=10))``; hand-written: ``matrix @ q``,
  ``argpartition``, ``SELECT ... WHERE id IN (...)``. ``within``: the same restricted to
  ``grp = 3`` (10% of the rows; superduperdb: ``coll.find({'grp': 3}).like(...)``; hand-written:
  ``SELECT id WHERE grp = 3``, then a search of those rows). recall@10 is against the
  hand-written exact answers.

Each (phase, side, round) runs in a fresh process, so "MB" is that phase's own peak RSS (the
process's maximum resident set, imports included; "base MB" is what the process held before the
phase started). With ``--repeat R`` the sides alternate R times and the fastest run of each
counts (the machine is shared; alternating spreads its load over both sides). The load average
is printed with every line.

    python benchmarks/peer_workload.py --n 20000 --backends sqlite postgres --repeat 3
    python benchmarks/peer_workload.py --n 20000 1000000 --backends sqlite --phases insert backfill index
    python benchmarks/peer_workload.py --n 1000000 --phases index --engine lancedb --index-type IVF_PQ
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
import uuid

import numpy as np
from pg_schema import admin, schema_uri

DIM = 384
CHUNK = 1000
TABLE = 'peer'
GROUP = 3  # the ``within`` subset: rows with grp == 3 (10%)
N_RESULTS = 10
PHASES = ('insert', 'backfill', 'backfill_logreg', 'index')
WORDS = ['red', 'green', 'blue', 'shoe', 'shirt', 'coat', 'fast', 'slow', 'river', 'mountain', 'city']


# ----- data --------------------------------------------------------------------------
def chunk_data(lo: int, hi: int) -> tuple[list[str], np.ndarray, list[int]]:
    """Rows ``lo..hi``: the same values for both sides and every round, without holding all N."""
    rng = np.random.default_rng(lo)
    vectors = rng.standard_normal((hi - lo, DIM), dtype=np.float32)
    picks = rng.integers(0, len(WORDS), size=(hi - lo, 4))
    texts = [f'doc {i} ' + ' '.join(WORDS[j] for j in row) for i, row in zip(range(lo, hi), picks.tolist())]
    return texts, vectors, [i % 10 for i in range(lo, hi)]


def queries(count: int) -> np.ndarray:
    return np.random.default_rng(12345).standard_normal((count, DIM), dtype=np.float32)


# ----- where each side works -----------------------------------------------------------
def _uri(backend: str, place: str) -> str:
    """``place``: a directory (SQLite: ``<place>/db.sqlite``; PostgreSQL: a schema named after it)."""
    if backend == 'sqlite':
        return f'sqlite:///{place}/db.sqlite'
    return schema_uri(_schema(place))


def _schema(place: str) -> str:
    parent, here = os.path.split(os.path.abspath(place))
    return 'peer_' + ''.join(c for c in os.path.basename(parent) + here if c.isalnum()).lower()


def _prepare(backend: str, place: str) -> None:
    shutil.rmtree(place, ignore_errors=True)
    os.makedirs(place)
    if backend == 'postgres':
        admin(f'DROP SCHEMA IF EXISTS {_schema(place)} CASCADE')
        admin(f'CREATE SCHEMA {_schema(place)}')


def _discard(backend: str, place: str) -> None:
    if backend == 'postgres':
        admin(f'DROP SCHEMA IF EXISTS {_schema(place)} CASCADE')
    shutil.rmtree(place, ignore_errors=True)


def _connect(backend: str, place: str):
    """A raw driver connection: sqlite3 as superduperdb opens SQLite files (WAL, synchronous=NORMAL)."""
    if backend == 'sqlite':
        import sqlite3

        conn = sqlite3.connect(f'{place}/db.sqlite')
        conn.execute('PRAGMA journal_mode=WAL')
        conn.execute('PRAGMA synchronous=NORMAL')
        return conn, '?', 'BLOB'
    import psycopg

    return psycopg.connect(_uri(backend, place)), '%s', 'BYTEA'


# ----- the hand-written side ---------------------------------------------------------------
def hand_insert(backend: str, place: str, n: int) -> dict:
    """Both sides' clocks hold making the table (superduperdb makes it, and its own tables, at
    the first insert); ``setup``: connecting, the table and the first chunk."""
    start = time.perf_counter()
    conn, ph, blob = _connect(backend, place)
    cur = conn.cursor()
    connected = time.perf_counter() - start
    start = time.perf_counter()
    cur.execute(f'CREATE TABLE hand (id VARCHAR(255) PRIMARY KEY, text TEXT, vec {blob}, grp INTEGER)')
    conn.commit()
    seconds, setup = time.perf_counter() - start, 0.0
    for lo in range(0, n, CHUNK):
        texts, vectors, groups = chunk_data(lo, min(lo + CHUNK, n))  # made before the clock
        keys = [uuid.uuid4().hex for _ in texts]
        start = time.perf_counter()
        rows = [(k, t, v.tobytes(), g) for k, t, v, g in zip(keys, texts, vectors, groups)]
        cur.executemany(f'INSERT INTO hand VALUES ({ph}, {ph}, {ph}, {ph})', rows)
        conn.commit()
        seconds += time.perf_counter() - start
        setup = setup or connected + seconds
    return {'seconds': seconds, 'setup': setup}


def costly_model():
    """The compute-bound model: scikit-learn ``LogisticRegression`` on the vector."""
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(1)
    X = rng.standard_normal((500, DIM), dtype=np.float32)
    return LogisticRegression(max_iter=200).fit(X, (X[:, 0] > 0).astype(int))


def text_length(text: str) -> float:
    """The cheap model: what the framework adds around a model shows next to it."""
    return float(len(text))


# backfill phase -> (input column, SQL type of the output, model); the models are made before the clock
BACKFILLS = {'backfill': ('text', 'DOUBLE PRECISION'), 'backfill_logreg': ('vec', 'BIGINT')}


def hand_backfill(backend: str, place: str, n: int, round_: int, phase: str) -> dict:
    key, sql_type = BACKFILLS[phase]
    model = costly_model() if phase == 'backfill_logreg' else None
    conn, ph, _ = _connect(backend, place)
    cur = conn.cursor()
    out = f'hand_out_{phase}_{round_}'
    cur.execute(f'CREATE TABLE {out} (id VARCHAR(255) PRIMARY KEY, output {sql_type})')
    conn.commit()
    start = time.perf_counter()
    last = ''
    while True:
        cur.execute(f'SELECT _id, {key} FROM {TABLE} WHERE _id > {ph} ORDER BY _id LIMIT {CHUNK}', (last,))
        rows = cur.fetchall()
        if not rows:
            break
        last = rows[-1][0]
        if model is None:
            outputs = [text_length(r[1]) for r in rows]
        else:
            X = np.frombuffer(b''.join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), DIM)
            outputs = model.predict(X).tolist()
        cur.executemany(f'INSERT INTO {out} VALUES ({ph}, {ph})', list(zip([r[0] for r in rows], outputs)))
        conn.commit()
    seconds = time.perf_counter() - start
    cur.execute(f'SELECT COUNT(*) FROM {out}')
    assert cur.fetchone()[0] == n
    return {'seconds': seconds}


def hand_index(backend: str, place: str, n: int, count: int) -> dict:
    conn, ph, _ = _connect(backend, place)
    cur = conn.cursor()
    start = time.perf_counter()
    cur.execute(f'SELECT COUNT(*) FROM {TABLE}')
    total = cur.fetchone()[0]
    matrix = np.empty((total, DIM), dtype=np.float32)
    ids: list[str] = []
    cur.execute(f'SELECT _id, vec FROM {TABLE}')
    while rows := cur.fetchmany(10_000):
        lo = len(ids)
        ids.extend(r[0] for r in rows)
        matrix[lo : len(ids)] = np.frombuffer(b''.join(r[1] for r in rows), dtype=np.float32).reshape(-1, DIM)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    position = {id_: i for i, id_ in enumerate(ids)}
    build = time.perf_counter() - start

    # like() returns each row with its model outputs: read the backfills' outputs as well
    cur.execute(
        "SELECT name FROM sqlite_master WHERE name LIKE 'hand_out_%'"
        if backend == 'sqlite'
        else "SELECT tablename FROM pg_tables WHERE tablename LIKE 'hand_out_%' "
        'AND schemaname = current_schema()'
    )
    outputs = sorted(r[0] for r in cur.fetchall())

    def fetch(found: list[str], scores: np.ndarray) -> list[dict]:
        marks = ', '.join([ph] * len(found))
        cur.execute(f'SELECT _id, text, vec, grp FROM {TABLE} WHERE _id IN ({marks})', found)
        by_id = {r[0]: r for r in cur.fetchall()}
        docs = []
        for id_, score in zip(found, scores.tolist()):
            r = by_id[id_]
            docs.append(
                {'_id': r[0], 'text': r[1], 'vec': np.frombuffer(r[2], dtype=np.float32), 'grp': r[3]}
            )
            docs[-1]['_score'] = score
        for out in outputs:
            cur.execute(f'SELECT id, output FROM {out} WHERE id IN ({marks})', found)
            values = dict(cur.fetchall())
            for doc in docs:
                doc.setdefault('_outputs', {})[out] = values.get(doc['_id'])
        return docs

    def top(scores: np.ndarray) -> np.ndarray:
        part = np.argpartition(-scores, N_RESULTS)[:N_RESULTS]
        return part[np.argsort(-scores[part])]

    def search(q: np.ndarray) -> list[dict]:
        q = q / np.linalg.norm(q)
        scores = matrix @ q
        best = top(scores)
        return fetch([ids[i] for i in best.tolist()], scores[best])

    def search_within(q: np.ndarray) -> list[dict]:
        q = q / np.linalg.norm(q)
        cur.execute(f'SELECT _id FROM {TABLE} WHERE grp = {ph}', (GROUP,))
        rows = np.fromiter((position[r[0]] for r in cur.fetchall()), dtype=np.intp)
        scores = matrix[rows] @ q
        best = top(scores)
        return fetch([ids[i] for i in rows[best].tolist()], scores[best])

    return {'seconds': build, **_timed_queries(search, search_within, count)}


def _timed_queries(search, search_within, count: int) -> dict:
    out = {}
    for mode, fn in (('all', search), ('within', search_within)):
        fn(queries(1)[0])  # warm-up
        times, answers = [], []
        for q in queries(count):
            start = time.perf_counter()
            docs = fn(q)
            times.append(time.perf_counter() - start)
            answers.append([d['_id'] for d in docs])
            if mode == 'within':
                assert all(d['grp'] == GROUP for d in docs), docs
        out[mode] = {'times': times, 'answers': answers}
    return out


# ----- the superduperdb side ----------------------------------------------------------------
def sddb_insert(backend: str, place: str, n: int) -> dict:
    from superduperdb import Collection, Document, superduper
    from superduperdb.encoders.numpy import array

    start = time.perf_counter()
    db = superduper(_uri(backend, place))
    coll = Collection(TABLE)
    connected = time.perf_counter() - start  # in setup only: the hand-written side's connect is cheap
    seconds, setup = 0.0, 0.0
    for lo in range(0, n, CHUNK):
        texts, vectors, groups = chunk_data(lo, min(lo + CHUNK, n))  # made before the clock
        start = time.perf_counter()
        vec = array('float32', DIM)  # the user's path as the README writes it: encoder, Documents
        db.execute(
            coll.insert_many(
                [Document({'text': t, 'vec': vec(v), 'grp': g}) for t, v, g in zip(texts, vectors, groups)]
            )
        )
        seconds += time.perf_counter() - start
        setup = setup or connected + seconds
    db.close()
    conn, _, _ = _connect(backend, place)  # the filtered searches of both sides read an index on grp
    conn.execute(f'CREATE INDEX {TABLE}_grp ON {TABLE} (grp)')
    conn.commit()
    conn.close()
    return {'seconds': seconds, 'setup': setup}


def sddb_backfill(backend: str, place: str, n: int, round_: int, phase: str) -> dict:
    from superduperdb import Collection, superduper

    key, _ = BACKFILLS[phase]
    db = superduper(_uri(backend, place))
    if phase == 'backfill_logreg':
        model = superduper(costly_model(), identifier=f'logreg-{round_}')
    else:
        model = superduper(text_length, identifier=f'length-{round_}')
    start = time.perf_counter()
    model.predict(X=key, db=db, select=Collection(TABLE).find(), watch=True)
    seconds = time.perf_counter() - start
    out = db.outputs.register(TABLE, key, model.identifier)
    assert db.databackend.count(out, {}) == n
    db.close()
    return {'seconds': seconds}


def sddb_index(backend: str, place: str, n: int, count: int, round_: int, engine: str) -> dict:
    from superduperdb import Collection, VectorIndex, Watcher, superduper
    from superduperdb.models.precomputed import Precomputed

    db = superduper(_uri(backend, place))
    coll = Collection(TABLE)
    identifier = f'idx-{round_}'
    start = time.perf_counter()
    watcher = Watcher(model=Precomputed(f'stored-{round_}', dimensions=DIM), key='vec', select=coll.find())
    db.add(VectorIndex(identifier, indexing_watcher=watcher, engine=engine))
    state = db.vectors.loaded(db.vectors.get(identifier))  # the engine built and ready in this process
    build = time.perf_counter() - start
    assert state.engine is not None and len(state.engine) == n, state.engine

    def search(q: np.ndarray) -> list:
        return db.execute(coll.like(q, identifier, n=N_RESULTS))  # type: ignore[no-any-return]

    def search_within(q: np.ndarray) -> list:
        return db.execute(coll.find({'grp': GROUP}).like(q, identifier, n=N_RESULTS))  # type: ignore[no-any-return]

    out = {'seconds': build, **_timed_queries(search, search_within, count)}
    db.close()
    return out


# ----- running the sides -----------------------------------------------------------------
def worker(args: argparse.Namespace) -> None:
    from superduperdb import CFG

    base_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n, phase, side, place = args.n[0], args.phase, args.side, args.place
    overrides = {'artifact_store': f'filesystem://{args.place}/artifacts'}
    if args.backend == 'postgres':  # superduperdb's own tables in the run's schema, not the shared one
        overrides['internal_schema'] = _schema(place)
    if args.engine == 'lancedb':
        overrides['vector_search.path'] = f'{place}/vectors'
        overrides['vector_search.index_type'] = args.index_type
        overrides['vector_search.refine_factor'] = args.refine_factor
        if args.probe_fraction is not None:
            overrides['vector_search.probe_fraction'] = args.probe_fraction
    with CFG.override(**overrides):
        if phase == 'insert':
            result = (
                hand_insert(args.backend, place, n) if side == 'hand' else sddb_insert(args.backend, place, n)
            )
        elif phase in BACKFILLS:
            if side == 'hand':
                result = hand_backfill(args.backend, place, n, args.round, phase)
            else:
                result = sddb_backfill(args.backend, place, n, args.round, phase)
        elif side == 'hand':
            result = hand_index(args.backend, place, n, args.queries)
        else:
            result = sddb_index(args.backend, place, n, args.queries, args.round, args.engine)
    result['rss_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result['base_mb'] = base_mb
    print(json.dumps(result))


def run_side(
    args: argparse.Namespace, phase: str, side: str, backend: str, n: int, place: str, round_: int
) -> dict:
    cmd = [sys.executable, __file__, '--side', side, '--phase', phase, '--backend', backend, '--n', str(n)]
    cmd += ['--place', place, '--round', str(round_), '--queries', str(args.queries), '--engine', args.engine]
    cmd += ['--index-type', args.index_type]
    if args.refine_factor is not None:
        cmd += ['--refine-factor', str(args.refine_factor)]
    if args.probe_fraction is not None:
        cmd += ['--probe-fraction', str(args.probe_fraction)]
    # BLAS threads: a matrix-vector product is memory-bound, and on a shared 2-core machine
    # OpenBLAS's threads waiting for each other made a 2000 x 384 product take 13 ms instead of 0.1
    env = {
        **os.environ,
        'OPENBLAS_NUM_THREADS': str(args.blas_threads),
        'OMP_NUM_THREADS': str(args.blas_threads),
    }
    # modules imported lazily inside a timed phase load from .pyc files, as in a user's install
    # (with PYTHONDONTWRITEBYTECODE every process compiled them from source again)
    env.pop('PYTHONDONTWRITEBYTECODE', None)
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise SystemExit(f'{phase} {side} failed:\n{done.stderr}')
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _load() -> str:
    return '/'.join(f'{x:.1f}' for x in os.getloadavg())


def _best(results: list[dict]) -> dict:
    best = min(results, key=lambda r: r['seconds'])
    return {
        **best,
        'rss_mb': max(r['rss_mb'] for r in results),
        'base_mb': max(r['base_mb'] for r in results),
    }


def run_backend(args: argparse.Namespace, backend: str, n: int, workdir: str) -> None:
    source = os.path.join(workdir, f'{backend}_{n}')  # the table every phase after insert reads
    hand_place = os.path.join(workdir, f'{backend}_{n}_hand')
    results: dict[str, dict[str, list[dict]]] = {}
    loads: dict[str, list[str]] = {}

    def record(phase: str, side: str, result: dict) -> None:
        results.setdefault(phase, {}).setdefault(side, []).append(result)
        loads.setdefault(phase, []).append(_load())

    try:
        for round_ in range(args.repeat if 'insert' in args.phases else 1):
            if 'insert' in args.phases:
                _prepare(backend, hand_place)
                record('insert', 'hand', run_side(args, 'insert', 'hand', backend, n, hand_place, round_))
                _discard(backend, hand_place)
            here = source if round_ == 0 else os.path.join(workdir, f'{backend}_{n}_{round_}')
            _prepare(backend, here)
            result = run_side(args, 'insert', 'superduperdb', backend, n, here, round_)
            if 'insert' in args.phases:
                record('insert', 'superduperdb', result)
            if here != source:
                _discard(backend, here)
        for phase in PHASES[1:]:
            if phase not in args.phases:
                continue
            for round_ in range(args.repeat):
                for side in ('hand', 'superduperdb'):
                    record(phase, side, run_side(args, phase, side, backend, n, source, round_))
        _report(args, backend, n, results, loads)
    finally:
        if not args.keep:
            _discard(backend, source)
            _discard(backend, hand_place)


def _report(args: argparse.Namespace, backend: str, n: int, results: dict, loads: dict) -> None:
    for phase, sides in results.items():
        hand, ours = _best(sides['hand']), _best(sides['superduperdb'])
        load = f'{loads[phase][0]} .. {loads[phase][-1]}'
        label = phase if phase != 'index' or args.engine == 'inmemory' else f'index {args.engine}'
        print(
            f'{backend:8} {n:>9,} {label:<18} {hand["seconds"]:9.3f} {ours["seconds"]:9.3f} '
            f'{ours["seconds"] / hand["seconds"]:6.2f} {hand["base_mb"]:6.0f} {hand["rss_mb"]:7.0f} '
            f'{ours["base_mb"]:6.0f} {ours["rss_mb"]:7.0f}   load {load}',
            flush=True,
        )
        if phase == 'insert':
            hand_setup = min(r['setup'] for r in sides['hand'])
            ours_setup = min(r['setup'] for r in sides['superduperdb'])
            print(
                f'{backend:8} {n:>9,} {"setup":<18} {hand_setup:9.3f} {ours_setup:9.3f} '
                f'{ours_setup / hand_setup:6.2f}   (connect, the table, the first {CHUNK} rows)',
                flush=True,
            )
        if phase == 'index':
            _report_like(backend, n, sides, args.engine)


def _report_like(backend: str, n: int, sides: dict, engine: str) -> None:
    for mode in ('all', 'within'):
        p50 = {side: min(np.median(r[mode]['times']) for r in rs) * 1000 for side, rs in sides.items()}
        p95 = {
            side: min(np.percentile(r[mode]['times'], 95) for r in rs) * 1000 for side, rs in sides.items()
        }
        exact = sides['hand'][0][mode]['answers']
        found = sides['superduperdb'][-1][mode]['answers']
        hits = sum(len(set(a) & set(e)) for a, e in zip(found, exact))
        full = sum(len(a) == len(e) for a, e in zip(found, exact)) / len(exact)
        recall = hits / sum(len(e) for e in exact)
        print(
            f'{backend:8} {n:>9,} {"like " + mode + " " + engine:<24} '
            f'p50 {p50["hand"]:7.2f} {p50["superduperdb"]:7.2f} '
            f'ratio {p50["superduperdb"] / p50["hand"]:5.2f}   '
            f'p95 {p95["hand"]:7.2f} {p95["superduperdb"]:7.2f}   '
            f'recall@10 {recall:.3f}   n results {full:.0%}',
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--n', type=int, nargs='+', default=[20000])
    parser.add_argument('--backends', nargs='+', default=['sqlite', 'postgres'])
    parser.add_argument('--phases', nargs='+', default=list(PHASES), choices=PHASES)
    parser.add_argument(
        '--repeat', type=int, default=1, help='runs per side, alternating; the fastest counts'
    )
    parser.add_argument('--queries', type=int, default=200)
    parser.add_argument('--engine', default='inmemory', choices=['inmemory', 'lancedb'])
    parser.add_argument('--index-type', default='IVF_FLAT', help='LanceDB: vector_search.index_type')
    parser.add_argument(
        '--refine-factor', type=int, default=None, help='LanceDB: vector_search.refine_factor'
    )
    parser.add_argument(
        '--probe-fraction', type=float, default=None, help='LanceDB: vector_search.probe_fraction'
    )
    parser.add_argument('--blas-threads', type=int, default=1, help='OPENBLAS/OMP threads of both sides')
    parser.add_argument('--workdir', default=None)
    parser.add_argument('--keep', action='store_true', help='keep the databases (for profiling)')
    parser.add_argument('--side', help=argparse.SUPPRESS)
    parser.add_argument('--phase', help=argparse.SUPPRESS)
    parser.add_argument('--backend', help=argparse.SUPPRESS)
    parser.add_argument('--place', help=argparse.SUPPRESS)
    parser.add_argument('--round', type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        worker(args)
        return
    workdir = args.workdir or tempfile.mkdtemp(prefix='peer-')
    print(
        f'{"backend":8} {"N":>9} {"phase":<18} {"hand s":>9} {"sddb s":>9} {"ratio":>6} '
        f'{"hand MB (base/peak)":>14} {"sddb MB (base/peak)":>14}'
    )
    try:
        for backend in args.backends:
            for n in args.n:
                run_backend(args, backend, n, workdir)
    finally:
        if not args.workdir and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == '__main__':
    main()
