"""Vector search: latency, throughput and recall of each engine's ``search``.

For each size N: N random unit vectors (``float32``, ``--dimensions``, cosine), each engine
loaded with them, then ``--queries`` random unit queries timed one at a time with ``n=10``:

- ``all``: a search over every vector;
- ``within``: a search restricted to a random 10% subset of the ids (``within=``).

Engines: ``inmemory`` (exact, numpy), ``lancedb-flat`` (LanceDB without an index: the
threshold set above N), ``lancedb`` (LanceDB with its IVF index, trained once N reaches
``ann_threshold``; rows repeated per ``--probe-fractions``). recall@10 is measured against
exact search in numpy. QPS is 1 / mean latency (one query at a time, one process); ``ratio``
is p50 over the p50 of a hand-written numpy search (a matrix-vector product and
``argpartition``; for ``within``, the ids mapped to rows first) over the same vectors in the
same run, for the same mode.

    python benchmarks/vector_search.py --sizes 10000 100000 --dimensions 384 --queries 200

Measurements are functions returning ``Row``s, so other sides (``db.execute(coll.like(...))``
through the Datalayer) can be added next to the engine ones and printed in the same table.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence

import numpy as np
from pg_schema import private_schema

N_RESULTS = 10
BASELINE = 'numpy (hand-written)'
WITHIN_FRACTION = 0.1


@dataclasses.dataclass
class Row:
    """One line of the printed table."""

    size: int
    engine: str
    mode: str
    p50_ms: float
    p95_ms: float
    qps: float
    recall: float | None = None
    build_s: float | None = None
    full: float | None = None  # share of searches that returned n results
    held_mb: float | None = None  # resident memory the loaded engine added to the process


@dataclasses.dataclass
class Data:
    """Vectors, ids, queries, a ``within`` subset and the exact answers to compare with."""

    ids: list[str]
    vectors: np.ndarray
    queries: np.ndarray
    within: list[str]
    exact_all: list[set[str]]
    exact_within: list[set[str]]


def unit(rng: np.random.Generator, rows: int, dimensions: int) -> np.ndarray:
    x = rng.normal(size=(rows, dimensions)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered(rng: np.random.Generator, rows: int, dimensions: int, centres: np.ndarray) -> np.ndarray:
    """Unit vectors shaped like text embeddings: topics (``centres`` in a low-dimensional latent
    space), each point its topic plus latent noise, mapped into ``dimensions`` by one fixed
    linear map, plus a little isotropic noise. Embeddings of real text have this structure
    (neighbours share a topic, an effective dimension of tens, not hundreds); isotropic random
    vectors have none, which makes them the worst case for every approximate index."""
    latent = centres.shape[1]
    mixing = np.random.default_rng(12345).normal(size=(latent, dimensions)).astype(np.float32)
    out = np.empty((rows, dimensions), dtype=np.float32)
    for lo in range(0, rows, 100_000):
        hi = min(rows, lo + 100_000)
        z = centres[rng.integers(0, len(centres), hi - lo)]
        z = z + 0.6 * rng.normal(size=z.shape).astype(np.float32)
        x = z @ mixing + 0.3 * rng.normal(size=(hi - lo, dimensions)).astype(np.float32)
        out[lo:hi] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def make_data(
    size: int,
    dimensions: int,
    queries: int,
    seed: int = 0,
    within: float = WITHIN_FRACTION,
    kind: str = 'random',
) -> Data:
    rng = np.random.default_rng(seed)
    ids = [f'doc-{i}' for i in range(size)]
    if kind == 'clustered':
        centres = rng.normal(size=(max(10, size // 500), 48)).astype(np.float32)
        vectors = clustered(rng, size, dimensions, centres)
        qs = clustered(rng, queries, dimensions, centres)
    else:
        vectors = unit(rng, size, dimensions)
        qs = unit(rng, queries, dimensions)
    mask = np.zeros(size, dtype=bool)
    mask[rng.choice(size, size=max(1, int(size * within)), replace=False)] = True
    within = [ids[i] for i in np.flatnonzero(mask)]
    exact_all, exact_within = [], []
    inside = np.flatnonzero(mask)
    for q in qs:
        scores = vectors @ q
        top = np.argpartition(-scores, N_RESULTS)[:N_RESULTS]
        exact_all.append({ids[i] for i in top})
        top = np.argpartition(-scores[inside], N_RESULTS)[:N_RESULTS]
        exact_within.append({ids[i] for i in inside[top]})
    return Data(ids, vectors, qs, within, exact_all, exact_within)


def latencies(
    search: Callable[[np.ndarray], list[str]], queries: np.ndarray
) -> tuple[list[float], list[list[str]]]:
    for q in queries:  # warm-up: lazy opens, and the files' pages in the OS cache (as on a server)
        search(q)
    times, answers = [], []
    for q in queries:
        start = time.perf_counter()
        answers.append(search(q))
        times.append(time.perf_counter() - start)
    return times, answers


def recall(answers: Sequence[Sequence[str]], exact: Sequence[set[str]]) -> float:
    return sum(len(set(a) & e) for a, e in zip(answers, exact)) / sum(len(e) for e in exact)


def summarise(size: int, engine: str, mode: str, times: list[float], **extra) -> Row:
    ms = np.array(times) * 1000
    return Row(
        size,
        engine,
        mode,
        float(np.percentile(ms, 50)),
        float(np.percentile(ms, 95)),
        1000 / ms.mean(),
        **extra,
    )


def load_engine(kind: str, data: Data, workdir: str, ann_threshold: int):
    """A loaded engine and the seconds it took to add every vector (and train any index)."""
    from superduperdb.vector_search import engine_from_config

    dims = data.vectors.shape[1]
    if kind == 'inmemory':
        engine = engine_from_config('bench', dims, 'cosine', engine='inmemory')
    else:
        threshold = len(data.ids) + 1 if kind == 'lancedb-flat' else ann_threshold
        engine = engine_from_config(
            f'bench-{kind}-{len(data.ids)}',
            dims,
            'cosine',
            engine='lancedb',
            path=workdir,
            ann_threshold=threshold,
        )
    start = time.perf_counter()
    with getattr(engine, 'bulk', contextlib.nullcontext)():  # as an index build does: trained once
        for i in range(0, len(data.ids), 10_000):  # in chunks, as an indexing job would write them
            engine.add(data.ids[i : i + 10_000], data.vectors[i : i + 10_000])
    return engine, time.perf_counter() - start


def measure_engine(
    kind: str, data: Data, workdir: str, ann_threshold: int, fractions: list[float]
) -> list[Row]:
    """``search`` with and without ``within``: latency, QPS, recall@10."""
    before = _rss_mb()
    engine, build_s = load_engine(kind, data, workdir, ann_threshold)
    held = _rss_mb() - before
    size = len(data.ids)
    rows = []
    indexed = kind == 'lancedb' and size >= ann_threshold
    for fraction in fractions if indexed else [None]:
        label = kind if fraction is None else f'{kind} ivf p={fraction:g}'
        if fraction is not None:
            engine.probe_fraction = fraction
        times, answers = latencies(lambda q: engine.search(q, N_RESULTS)[0], data.queries)
        rows.append(
            summarise(
                size,
                label,
                'all',
                times,
                recall=recall(answers, data.exact_all),
                build_s=build_s,
                full=_full(answers),
                held_mb=held,
            )
        )
        times, answers = latencies(lambda q: engine.search(q, N_RESULTS, within=data.within)[0], data.queries)
        rows.append(
            summarise(
                size, label, 'within', times, recall=recall(answers, data.exact_within), full=_full(answers)
            )
        )
    engine.clear()
    return rows


def _full(answers: Sequence[Sequence[str]]) -> float:
    return sum(len(a) == N_RESULTS for a in answers) / len(answers)


def _rss_mb() -> float:
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**20


def numpy_baseline(data: Data) -> list[Row]:
    """The floor: one matrix-vector product and argpartition, hand-written."""
    vectors = data.vectors

    def search(q: np.ndarray) -> list[str]:
        scores = vectors @ q
        top = np.argpartition(-scores, N_RESULTS)[:N_RESULTS]
        return [data.ids[i] for i in top[np.argsort(-scores[top])]]

    position = {id_: i for i, id_ in enumerate(data.ids)}

    def search_within(q: np.ndarray) -> list[str]:
        # given ids, as the engines are: map them to rows, then search those rows only
        rows = np.array([position[id_] for id_ in data.within])
        scores = vectors[rows] @ q
        top = np.argpartition(-scores, N_RESULTS)[:N_RESULTS]
        return [data.ids[i] for i in rows[top[np.argsort(-scores[top])]]]

    size = len(data.ids)
    times, answers = latencies(search, data.queries)
    out = [summarise(size, BASELINE, 'all', times, recall=recall(answers, data.exact_all))]
    times, answers = latencies(search_within, data.queries)
    out.append(summarise(size, BASELINE, 'within', times, recall=recall(answers, data.exact_within)))
    return out


def measure_datalayer(data: Data, workdir: str, backend: str) -> list[Row]:
    """The same searches through ``db.execute(coll.like(...))`` on an in-memory engine.

    The vectors are a column of the table, adopted as a precomputed index; the ``within``
    subset is the rows with ``grp = 1``, so filter-then-search finds them with a query.
    """
    with contextlib.ExitStack() as stack:  # PostgreSQL: a schema of its own, dropped at the end
        uri = f'sqlite:///{workdir}/bench.sqlite'
        if backend != 'sqlite':
            uri = stack.enter_context(private_schema('bench_vectors'))
        return _measure_datalayer(data, workdir, backend, uri)


def _measure_datalayer(data: Data, workdir: str, backend: str, uri: str) -> list[Row]:
    from superduperdb import CFG, Collection, VectorIndex, Watcher, superduper
    from superduperdb.encoders.numpy import array
    from superduperdb.models.precomputed import Precomputed

    CFG.artifact_store = f'filesystem://{workdir}/artifacts'
    db = superduper(uri)
    coll = Collection(f'bench_vectors_{len(data.ids)}')
    db.drop_table(coll.name)
    inside = set(data.within)
    vec = array('float32', data.vectors.shape[1])
    try:
        for lo in range(0, len(data.ids), 5000):
            db.execute(
                coll.insert_many(
                    [
                        {'_id': data.ids[i], 'v': vec(data.vectors[i]), 'grp': int(data.ids[i] in inside)}
                        for i in range(lo, min(lo + 5000, len(data.ids)))
                    ]
                )
            )
        engine = db.databackend.engine
        with engine.begin() as conn:  # users filter on indexed columns
            conn.exec_driver_sql(f'CREATE INDEX {coll.name}_grp ON {coll.name} (grp)')
        start = time.perf_counter()
        model = Precomputed('bench-vectors', dimensions=data.vectors.shape[1])
        db.add(VectorIndex('bench', indexing_watcher=Watcher(model=model, key='v', select=coll.find())))
        build_s = time.perf_counter() - start

        def search(q: np.ndarray) -> list[str]:
            return [d['_id'] for d in db.execute(coll.like(q, 'bench', n=N_RESULTS))]

        def search_within(q: np.ndarray) -> list[str]:
            return [d['_id'] for d in db.execute(coll.find({'grp': 1}).like(q, 'bench', n=N_RESULTS))]

        vectors = db.vectors.loaded(db.vectors.get('bench')).engine
        placeholder = '?' if backend == 'sqlite' else '%s'

        def by_hand(q: np.ndarray) -> list[str]:
            """The same engine, given the ids of the matching rows fetched with the raw driver."""
            connection = engine.raw_connection()
            try:
                cursor = connection.cursor()
                cursor.execute(f'SELECT _id FROM {coll.name} WHERE grp = {placeholder}', (1,))
                ids = [row[0] for row in cursor.fetchall()]
            finally:
                connection.close()
            return vectors.search(q, N_RESULTS, within=ids)[0]

        size, label = len(data.ids), f'db.execute(like) {backend}'
        times, answers = latencies(by_hand, data.queries)
        hand = summarise(size, f'raw SQL + engine {backend}', 'within', times)
        hand.recall = recall(answers, data.exact_within)
        times, answers = latencies(search, data.queries)
        rows = [summarise(size, label, 'all', times, recall=recall(answers, data.exact_all), build_s=build_s)]
        times, answers = latencies(search_within, data.queries)
        rows.append(summarise(size, label, 'within', times, recall=recall(answers, data.exact_within)))
        # the engine alone and through db.execute, alternating query by query, so that load from
        # other processes hits both sides alike: the overhead ratio the target is about
        alone, through = [], []
        for q in data.queries:
            start = time.perf_counter()
            vectors.search(q, N_RESULTS)
            alone.append(time.perf_counter() - start)
            start = time.perf_counter()
            search(q)
            through.append(time.perf_counter() - start)
        ratio = float(np.median(through) / np.median(alone))
        print(f'{backend}: db.execute(like) / engine alone, interleaved, ratio of p50s: {ratio:.2f}')
        return [hand, *rows]
    finally:
        for identifier in db.show('vector_index'):
            db.remove('vector_index', identifier, force=True)
        for identifier in db.show('watcher'):
            db.remove('watcher', identifier, force=True)
        db.drop_table(coll.name)
        db.close()


def print_table(rows: list[Row]) -> None:
    """One line per row; ``ratio`` is p50 over the hand-written numpy p50 (same N and mode)."""
    baseline = {(r.size, r.mode): r.p50_ms for r in rows if r.engine == BASELINE}
    header = (
        f'{"N":>8}  {"engine":<24} {"mode":<11} {"p50 ms":>8} {"p95 ms":>8} {"QPS":>8} '
        f'{"ratio":>6} {"recall@10":>9} {"load s":>7} {"n results":>9} {"held MB":>8}'
    )
    print(header)
    print('-' * len(header))
    for r in rows:
        rec = '' if r.recall is None else f'{r.recall:.3f}'
        build = '' if r.build_s is None else f'{r.build_s:.1f}'
        base = baseline.get((r.size, r.mode))
        ratio = f'{r.p50_ms / base:.2f}' if base else ''
        full = '' if r.full is None else f'{r.full:.0%}'
        held = '' if r.held_mb is None else f'{r.held_mb:.0f}'
        print(
            f'{r.size:>8}  {r.engine:<24} {r.mode:<11} {r.p50_ms:>8.2f} {r.p95_ms:>8.2f} '
            f'{r.qps:>8.0f} {ratio:>6} {rec:>9} {build:>7} {full:>9} {held:>8}'
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument('--sizes', type=int, nargs='+', default=[100_000])
    parser.add_argument('--dimensions', type=int, default=384)
    parser.add_argument(
        '--data',
        choices=['random', 'clustered'],
        default='random',
        help='isotropic random unit vectors, or clustered ones shaped like text embeddings',
    )
    parser.add_argument('--index-type', default=None, help='LanceDB: vector_search.index_type')
    parser.add_argument(
        '--refine-factor', type=int, default=None, help='LanceDB: vector_search.refine_factor'
    )
    parser.add_argument('--partition-rows', type=int, default=None, help='LanceDB: rows per IVF partition')
    parser.add_argument(
        '--s3',
        action='store_true',
        help="LanceDB's tables in a bucket of a local S3-compatible server (moto's, started here)",
    )
    parser.add_argument('--queries', type=int, default=200)
    parser.add_argument('--engines', nargs='+', default=['inmemory', 'lancedb-flat', 'lancedb'])
    parser.add_argument('--ann-threshold', type=int, default=None, help='default: CFG.vector_search')
    parser.add_argument('--probe-fractions', type=float, nargs='+', default=[1.0, 0.5, 0.25])
    parser.add_argument(
        '--within-fraction', type=float, default=WITHIN_FRACTION, help='rows in the within subset'
    )
    parser.add_argument(
        '--datalayer',
        nargs='*',
        default=['sqlite'],
        choices=['sqlite', 'postgres'],
        help='also search through db.execute(coll.like(...)) on these backends (in-memory engine)',
    )
    args = parser.parse_args(argv)

    from superduperdb import CFG

    threshold = args.ann_threshold if args.ann_threshold is not None else CFG.vector_search.ann_threshold
    for option in ('index_type', 'refine_factor', 'partition_rows'):
        if getattr(args, option) is not None:
            setattr(CFG.vector_search, option, getattr(args, option))
    if any(kind.startswith('lancedb') for kind in args.engines):
        import lancedb  # noqa: F401  (its ~3 s import is not part of any load time)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix='sddb-bench-') as workdir:
        engines_at = workdir
        if args.s3:
            sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
            from tests import s3_server

            engines_at = f'{s3_server.bucket("bench-vectors")}/lancedb'
        for size in args.sizes:
            data = make_data(size, args.dimensions, args.queries, within=args.within_fraction, kind=args.data)
            rows += numpy_baseline(data)
            for kind in args.engines:
                at = engines_at if kind.startswith('lancedb') else workdir
                rows += measure_engine(kind, data, at, threshold, args.probe_fractions)
            for backend in args.datalayer:
                rows += measure_datalayer(data, workdir, backend)
    print_table(rows)


if __name__ == '__main__':
    main()
