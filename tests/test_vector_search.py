"""Vector-search engines against a brute-force numpy reference, and their contract.

Every engine runs the same tests. ``lancedb`` searches exactly (below its ANN threshold);
``lancedb-ivf`` has a threshold small enough that its IVF index is trained and used (all
partitions probed, so it must still be exact).
"""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from superduperdb import CFG
from superduperdb.base.exceptions import ConfigError, EncodingError, QueryError
from superduperdb.vector_search import MEASURES, VectorEngine, engine_from_config
from tests.helpers import unit_vectors

ENGINES = {
    'inmemory': ('inmemory', {}),
    'lancedb': ('lancedb', {}),
    'lancedb-ivf': ('lancedb', {'ann_threshold': 200, 'partition_rows': 50}),
}


@pytest.fixture(params=list(ENGINES))
def make(request, tmp_path):
    """Builds an engine of the parametrized kind; LanceDB tables go to ``tmp_path``."""
    engine, defaults = ENGINES[request.param]

    def make(
        dimensions: int = 8, measure: str = 'cosine', identifier: str = 'idx', **options
    ) -> VectorEngine:
        options = {**defaults, **options}
        if engine == 'lancedb':
            options.setdefault('path', str(tmp_path / 'vectors'))
        return engine_from_config(identifier, dimensions, measure, engine=engine, **options)

    make.kind = request.param
    return make


def reference(
    ids: list[str], vectors: np.ndarray, query: np.ndarray, n: int, measure: str, within=None
) -> tuple[list[str], np.ndarray]:
    """Brute force in float64: the answer every engine must give."""
    wanted = None if within is None else set(within)
    keep = [i for i, id_ in enumerate(ids) if wanted is None or id_ in wanted]
    matrix, q = vectors[keep].astype(np.float64), np.asarray(query, dtype=np.float64)
    if measure == 'cosine':
        norms = np.linalg.norm(matrix, axis=1, keepdims=True)
        matrix = matrix / np.where(norms == 0, 1, norms)
        q = q / (np.linalg.norm(q) or 1)
    if measure == 'l2':
        scores = np.linalg.norm(matrix - q, axis=1)
        order = np.argsort(scores)[:n]
    else:
        scores = matrix @ q
        order = np.argsort(-scores)[:n]
    return [ids[keep[i]] for i in order], scores[order]


def assert_same(got: tuple[list[str], np.ndarray], want: tuple[list[str], np.ndarray]) -> None:
    assert got[0] == want[0]
    assert isinstance(got[1], np.ndarray) and got[1].shape == (len(want[0]),)
    np.testing.assert_allclose(got[1], want[1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('measure', MEASURES)
def test_search_matches_brute_force(make, measure):
    rng = np.random.default_rng(7)
    ids = [f'doc-{i}' for i in range(600)]
    # not unit vectors: dot and l2 must see the raw vectors, cosine must normalise them
    vectors = rng.normal(size=(600, 16)).astype(np.float32) * rng.uniform(0.5, 3, size=(600, 1))
    engine = make(16, measure)
    engine.add(ids[:350], vectors[:350])
    engine.add(ids[350:], vectors[350:])  # grows past lancedb-ivf's threshold: trains the index
    assert len(engine) == 600 and sorted(engine.ids()) == sorted(ids)
    for query in rng.normal(size=(5, 16)).astype(np.float32):
        assert_same(engine.search(query, 10), reference(ids, vectors, query, 10, measure))
        assert_same(engine.search(query[None, :], 1), reference(ids, vectors, query, 1, measure))
        for size in (3, 40, 300):  # 300: past the size that LanceDB scans exactly, so the index is used
            within = list(rng.choice(ids, size=size, replace=False))
            assert_same(
                engine.search(query, 10, within=within), reference(ids, vectors, query, 10, measure, within)
            )


def test_scores_are_best_first_for_every_measure(make):
    vectors = np.array([[1, 0], [3, 4], [0.5, 0.1], [-1, 0]], dtype=np.float32)
    for measure, want in (
        ('cosine', ['a', 'c', 'b', 'd']),
        ('dot', ['b', 'a', 'c', 'd']),
        ('l2', ['a', 'c', 'd', 'b']),
    ):
        engine = make(2, measure, identifier=f'best-{measure}')
        engine.add(['a', 'b', 'c', 'd'], vectors)
        ids, scores = engine.search(np.array([2.0, 0.0]), n=4)
        assert ids == want
        steps = np.diff(scores)
        assert (steps >= 0).all() if measure == 'l2' else (steps <= 0).all()
    assert scores[0] == pytest.approx(1.0)  # l2: |(1, 0) - (2, 0)|, a distance, not its square


def test_cosine_stores_normalised_vectors(make):
    engine = make(2, 'cosine')
    engine.add(['long', 'short'], np.array([[100.0, 1.0], [0.6, 0.8]]))
    ids, scores = engine.search(np.array([0.6, 0.8]), n=2)
    assert ids == ['short', 'long']  # a dot product on raw vectors would rank 'long' first
    np.testing.assert_allclose(scores, [1.0, (60 + 0.8) / np.hypot(100, 1)], rtol=1e-5)


def test_cosine_normalises_vectors_whose_squares_overflow_float32(make):
    """Finite values past 1.8e19 square to inf in float32: their lengths are taken in float64,
    not refused as NaN, and a NaN is still refused."""
    engine = make(2, 'cosine')
    engine.add(['huge', 'small'], np.array([[3e30, 4e30], [0.0, 1.0]], dtype=np.float32))
    ids, scores = engine.search(np.array([0.6, 0.8]), n=2)
    assert ids == ['huge', 'small']
    np.testing.assert_allclose(scores, [1.0, 0.8], rtol=1e-5)
    with pytest.raises(EncodingError, match=r"NaN or inf in ids \['bad'\]"):
        engine.add(['ok', 'bad'], np.array([[1.0, 0.0], [np.nan, 1.0]]))


def test_zero_vectors_under_cosine_score_zero_without_nan(make):
    engine = make(3, 'cosine')
    engine.add(['zero', 'x'], np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]))
    ids, scores = engine.search(np.array([1.0, 0.0, 0.0]), n=2)
    assert ids == ['x', 'zero'] and scores.tolist() == pytest.approx([1.0, 0.0])
    ids, scores = engine.search(np.zeros(3), n=2)
    assert sorted(ids) == ['x', 'zero'] and np.isfinite(scores).all() and not scores.any()


def test_add_is_an_upsert(make):
    engine = make(2, 'dot')
    engine.add(['a', 'b', 'c'], np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]]))
    engine.add(['a'], np.array([[-1.0, 0.0]]))
    assert len(engine) == 3 and sorted(engine.ids()) == ['a', 'b', 'c']
    ids, scores = engine.search(np.array([1.0, 0.0]), n=3)
    assert ids == ['c', 'b', 'a'] and scores.tolist() == pytest.approx([0.5, 0.0, -1.0])
    # a duplicate id inside one batch: the last vector wins
    engine.add(['d', 'd'], np.array([[9.0, 9.0], [2.0, 0.0]]))
    ids, scores = engine.search(np.array([1.0, 0.0]), n=1)
    assert (ids, scores.tolist()) == (['d'], [2.0]) and len(engine) == 4


def test_delete_removes_from_results(make):
    rng = np.random.default_rng(3)
    ids = [f'r{i}' for i in range(300)]
    vectors = unit_vectors(rng, 300, 8)
    engine = make(8, 'cosine')
    engine.add(ids, vectors)
    query = vectors[5]
    assert engine.search(query, 1)[0] == ['r5']
    gone = ['r5', *ids[100:250], 'never-added']
    engine.delete(gone)
    kept = [i for i in ids if i not in gone]
    assert len(engine) == len(kept) and sorted(engine.ids()) == sorted(kept)
    kept_vectors = vectors[[ids.index(i) for i in kept]]
    assert_same(engine.search(query, 10), reference(kept, kept_vectors, query, 10, 'cosine'))
    assert engine.search(query, 10, within=['r5', 'r150', 'r1'])[0] == ['r1']
    engine.delete([])
    engine.delete(kept)
    assert len(engine) == 0 and engine.search(query, 5)[0] == []


def test_within_few_ids_returns_exactly_those(make):
    rng = np.random.default_rng(4)
    ids = [f'w{i}' for i in range(400)]
    vectors = unit_vectors(rng, 400, 8)
    engine = make(8, 'l2')
    engine.add(ids, vectors)
    query = rng.normal(size=8)
    within = ['w3', 'w399', 'w200', 'unknown', 'w3']
    got = engine.search(query, 10, within=within)
    assert sorted(got[0]) == ['w200', 'w3', 'w399']
    assert_same(got, reference(ids, vectors, query, 10, 'l2', within))
    assert engine.search(query, 10, within=[])[0] == []
    assert engine.search(query, 10, within=['unknown'])[0] == []
    assert engine.search(query, 2, within=within)[0] == got[0][:2]


def test_within_returns_n_even_when_the_index_probes_few_partitions(tmp_path):
    rng = np.random.default_rng(5)
    ids = [f'p{i}' for i in range(3000)]
    vectors = unit_vectors(rng, 3000, 16)
    engine = engine_from_config(
        'few-probes',
        16,
        'cosine',
        engine='lancedb',
        path=str(tmp_path),
        ann_threshold=1000,
        partition_rows=100,
        probe_fraction=0.04,
    )
    engine.add(ids, vectors)
    assert engine._partitions(engine._open(create=False)) == 30
    for size in (3, 20, 400, 1500):
        within = list(rng.choice(ids, size=size, replace=False))
        found, scores = engine.search(vectors[0], 50, within=within)
        assert len(found) == min(50, size) and set(found) <= set(within) and len(set(found)) == len(found)


def test_large_within_sets_filter_a_wider_search_instead_of_a_prefilter_of_every_id(tmp_path, monkeypatch):
    """Over 4096 ids, ``within`` is applied to a search for more neighbours (no ``IN`` list of
    every id sent to LanceDB); where the set's rows are not among those, the prefilter runs."""
    rng = np.random.default_rng(8)
    ids = [f'w{i}' for i in range(20_000)]
    vectors = unit_vectors(rng, 20_000, 16)
    engine = engine_from_config(
        'large-within', 16, 'cosine', engine='lancedb', path=str(tmp_path), ann_threshold=1000
    )
    with engine.bulk():
        engine.add(ids, vectors)
    asked: list[tuple[int, str | None]] = []
    query_index = engine._query

    def spy(table, query, n, where, partitions):
        asked.append((n, where if where is None else 'prefilter'))
        return query_index(table, query, n, where, partitions)

    monkeypatch.setattr(engine, '_query', spy)
    query = vectors[7]
    within = [ids[i] for i in rng.choice(20_000, size=5000, replace=False)]
    assert_same(engine.search(query, 10, within=within), reference(ids, vectors, query, 10, 'cosine', within))
    assert asked == [(80, None)]  # 2 x 10 x (20,000 / 5,000) neighbours, filtered here

    asked.clear()
    farthest = np.argsort(vectors @ query)[:5000]  # the set holds none of the near neighbours
    within = [ids[i] for i in farthest]
    assert_same(engine.search(query, 10, within=within), reference(ids, vectors, query, 10, 'cosine', within))
    assert [k for k, where in asked if where is None] == [80, 320, 1280] and asked[-1] == (10, 'prefilter')


def test_within_falls_back_to_exact_search_when_the_index_returns_too_few(tmp_path, monkeypatch):
    rng = np.random.default_rng(6)
    ids = [f'f{i}' for i in range(1000)]
    vectors = unit_vectors(rng, 1000, 8)
    engine = engine_from_config(
        'fallback', 8, 'dot', engine='lancedb', path=str(tmp_path), ann_threshold=500, partition_rows=100
    )
    engine.add(ids, vectors)
    query_index = engine._query

    def truncated(table, query, n, where, partitions):
        result = query_index(table, query, n, where, partitions)
        return result.slice(0, 2) if partitions else result  # an index search that found only 2

    monkeypatch.setattr(engine, '_query', truncated)
    within = ids[::3]
    assert_same(
        engine.search(vectors[0], 10, within=within), reference(ids, vectors, vectors[0], 10, 'dot', within)
    )


def test_empty_engine_and_large_n(make):
    engine = make(4)
    assert len(engine) == 0 and engine.ids() == []
    ids, scores = engine.search(np.ones(4), 5)
    assert ids == [] and scores.shape == (0,)
    engine.add(['a', 'b'], np.eye(4)[:2])
    assert sorted(engine.search(np.ones(4), 50)[0]) == ['a', 'b']
    engine.add([], np.empty((0, 4)))
    assert len(engine) == 2


def test_clear_drops_everything(make):
    engine = make(4)
    engine.add(['a', 'b'], np.eye(4)[:2])
    engine.clear()
    assert len(engine) == 0 and engine.search(np.ones(4), 3)[0] == []
    if make.kind.startswith('lancedb'):
        assert not Path(engine.uri).exists()
    engine.add(['c'], np.eye(4)[:1])
    assert engine.ids() == ['c']


def test_random_operations_keep_the_index_consistent(make):
    """Interleaved upserts and deletes against a plain dict, checked by exact search."""
    rng = np.random.default_rng(11)
    engine = make(6, 'dot', initial_capacity=4) if make.kind == 'inmemory' else make(6, 'dot')
    model: dict[str, np.ndarray] = {}
    pool = [f'k{i}' for i in range(120)]
    for step in range(25):
        batch = list(rng.choice(pool, size=int(rng.integers(1, 30))))
        vectors = rng.normal(size=(len(batch), 6)).astype(np.float32)
        engine.add(batch, vectors)
        model.update(zip(batch, vectors))
        if step % 3 == 2:
            gone = list(rng.choice(pool, size=int(rng.integers(1, 20))))
            engine.delete(gone)
            for id_ in gone:
                model.pop(id_, None)
        assert len(engine) == len(model)
    assert sorted(engine.ids()) == sorted(model)
    ids, vectors = list(model), np.array(list(model.values()))
    for query in rng.normal(size=(3, 6)):
        assert_same(engine.search(query, 7), reference(ids, vectors, query, 7, 'dot'))


def test_ids_can_be_any_string(make):
    odd = ["it's", 'back\\slash', "\\'", "');DROP TABLE x;--", 'new\nline', 'ünïcode 日本', '', '%', '"q"']
    engine = make(len(odd), 'dot')
    engine.add(odd, np.eye(len(odd)))
    assert sorted(engine.ids()) == sorted(odd)
    for i, id_ in enumerate(odd):
        assert engine.search(np.eye(len(odd))[i], 1, within=[id_, 'other'])[0] == [id_]
    engine.delete(odd[:4])
    assert sorted(engine.ids()) == sorted(odd[4:])


# -- validation --------------------------------------------------------------------------


def test_bad_input_gets_a_clear_error(make):
    engine = make(4)
    engine.add(['a'], np.ones((1, 4)))
    with pytest.raises(EncodingError, match='expects vectors of 4 dimensions, got 5'):
        engine.add(['b'], np.ones((1, 5)))
    with pytest.raises(
        QueryError, match=r'expects a query vector of 4 dimensions, got an array of shape \(3,\)'
    ):
        engine.search(np.ones(3), 1)
    with pytest.raises(EncodingError, match='got 2 ids but 1 vectors'):
        engine.add(['b', 'c'], np.ones((1, 4)))
    with pytest.raises(EncodingError, match='ids must be str, got int'):
        engine.add([1], np.ones((1, 4)))
    with pytest.raises(EncodingError, match="NaN or inf in ids \\['b'\\]"):
        engine.add(['b'], np.array([[1, np.nan, 0, 0]]))
    with pytest.raises(QueryError, match='n must be an int >= 1, got 0'):
        engine.search(np.ones(4), 0)
    with pytest.raises(QueryError, match='n must be an int >= 1'):
        engine.search(np.ones(4), 2.5)  # type: ignore[arg-type]
    with pytest.raises(QueryError, match='NaN or inf'):
        engine.search(np.array([np.inf, 0, 0, 0]), 1)
    with pytest.raises(EncodingError, match='vectors must be a 2-d array of numbers'):
        engine.add(['b', 'c'], [[1, 2, 3, 4], [1, 2]])
    with pytest.raises(QueryError, match='the query must be a vector'):
        engine.search('not a vector', 1)  # type: ignore[arg-type]
    assert engine.ids() == ['a']  # nothing partial was written
    engine.add(np.array(['b']), np.ones((1, 4)))  # numpy strings are stored as plain str
    assert sorted(engine.ids()) == ['a', 'b'] and all(type(i) is str for i in engine.ids())


@pytest.mark.parametrize('engine', ['inmemory', 'lancedb'])
def test_bad_configuration_gets_a_clear_error(engine, tmp_path):
    with pytest.raises(
        ConfigError, match="Unknown vector-search measure 'euclid'; choose one of cosine, dot, l2"
    ):
        engine_from_config(
            'x', 4, 'euclid', engine=engine, **({'path': str(tmp_path)} if engine == 'lancedb' else {})
        )
    with pytest.raises(ConfigError, match='dimensions must be a positive int'):
        engine_from_config('x', 0, engine=engine)
    with pytest.raises(ConfigError, match=r"unknown options \['nprobes'\]"):
        engine_from_config('x', 4, engine=engine, nprobes=3)


def test_unknown_engine_names_the_choices():
    with pytest.raises(
        ConfigError, match="Unknown vector-search engine 'faiss'; choose one of inmemory, lancedb"
    ):
        engine_from_config('x', 4, engine='faiss')
    with pytest.raises(ConfigError, match='Unknown LanceDB index type'):
        engine_from_config('x', 4, engine='lancedb', index_type='DISKANN')


def test_engine_defaults_come_from_the_config(tmp_path):
    settings = {
        'vector_search.engine': 'lancedb',
        'vector_search.path': str(tmp_path / 'vs'),
        'vector_search.ann_threshold': 123,
    }
    with CFG.override(**settings):
        engine = engine_from_config('cfg', 4)
    assert (engine.name, engine.path, engine.ann_threshold) == ('lancedb', str(tmp_path / 'vs'), 123)
    engine.add(['a'], np.ones((1, 4)))
    assert Path(engine.uri) == tmp_path / 'vs' / 'cfg.lance' and Path(engine.uri).is_dir()
    assert engine_from_config('cfg', 4).name == 'inmemory'


# -- LanceDB: persistence and the ANN index ----------------------------------------------


def test_lancedb_persists_across_engine_objects(tmp_path):
    rng = np.random.default_rng(8)
    ids = [f'p{i}' for i in range(500)]
    vectors = unit_vectors(rng, 500, 8)
    options = {'path': str(tmp_path), 'ann_threshold': 400, 'partition_rows': 100}
    first = engine_from_config('docs/v1 (text)', 8, 'cosine', engine='lancedb', **options)
    first.add(ids, vectors)
    first.delete(['p0'])
    second = engine_from_config('docs/v1 (text)', 8, 'cosine', engine='lancedb', **options)
    assert len(second) == 499 and sorted(second.ids()) == sorted(ids[1:])
    assert second._partitions(second._open(create=False)) == 5  # the trained index is found again
    query = rng.normal(size=8)
    assert_same(second.search(query, 10), reference(ids[1:], vectors[1:], query, 10, 'cosine'))
    # writes through either object are seen by the other
    second.add(['new'], query[None, :])
    assert first.search(query, 1)[0] == ['new']
    clone = pickle.loads(pickle.dumps(first))
    assert clone.search(query, 1)[0] == ['new'] and len(clone) == 500
    second.clear()  # dropped through one object: the others see an empty index, then new rows
    assert len(first) == 0 and first.search(query, 3)[0] == []
    clone.add(['again'], query[None, :])
    assert first.search(query, 3)[0] == ['again']


def test_lancedb_refuses_a_table_built_for_another_shape(tmp_path):
    engine_from_config('t', 8, 'cosine', engine='lancedb', path=str(tmp_path)).add(['a'], np.ones((1, 8)))
    with pytest.raises(ConfigError, match='holds vectors of 8 dimensions; .* expects 16'):
        engine_from_config('t', 16, 'cosine', engine='lancedb', path=str(tmp_path)).search(np.ones(16), 1)
    with pytest.raises(ConfigError, match="built for measure 'cosine', not 'l2'"):
        engine_from_config('t', 8, 'l2', engine='lancedb', path=str(tmp_path)).add(['b'], np.ones((1, 8)))


def test_lancedb_index_folds_in_new_rows_and_retrains_after_growth(tmp_path):
    rng = np.random.default_rng(9)
    ids = [f'g{i}' for i in range(1300)]
    vectors = unit_vectors(rng, 1300, 8)
    engine = engine_from_config(
        'grow', 8, 'l2', engine='lancedb', path=str(tmp_path), ann_threshold=300, partition_rows=100
    )
    engine.add(ids[:300], vectors[:300])
    table = engine._open(create=False)
    assert engine._partitions(table) == 3
    engine.add(ids[300:400], vectors[300:400])  # a third more rows: folded into the index
    assert table.index_stats('vector_idx').num_unindexed_rows == 0 and engine._partitions(table) == 3
    engine.add(ids[400:1300], vectors[400:1300])  # grown past 2x since training: retrained
    assert engine._partitions(table) == 13
    query = rng.normal(size=8)
    assert_same(engine.search(query, 10), reference(ids, vectors, query, 10, 'l2'))


def test_lancedb_bulk_adds_train_the_index_once_at_the_end(tmp_path):
    rng = np.random.default_rng(10)
    ids = [f'b{i}' for i in range(1000)]
    vectors = unit_vectors(rng, 1000, 8)
    engine = engine_from_config(
        'bulk', 8, 'l2', engine='lancedb', path=str(tmp_path), ann_threshold=300, partition_rows=100
    )
    with engine.bulk():
        for lo in range(0, 1000, 200):  # passes the threshold and doubles twice: no training yet
            engine.add(ids[lo : lo + 200], vectors[lo : lo + 200])
            assert engine._partitions(engine._open(create=False)) == 0
    table = engine._open(create=False)
    assert engine._partitions(table) == 10 and len(engine) == 1000  # trained once, on all of them
    with engine.bulk():  # into a table with rows: merged by id (an upsert, not a second row)
        engine.add(ids[:1], vectors[1:2])
    assert len(engine) == 1000
    query = rng.normal(size=8)
    vectors[0] = vectors[1]
    assert_same(engine.search(query, 10), reference(ids, vectors, query, 10, 'l2'))


@pytest.mark.parametrize('index_type', ['IVF_SQ', 'IVF_PQ', 'IVF_HNSW_SQ'])
def test_lancedb_quantized_index_types_train_and_search(tmp_path, index_type):
    rng = np.random.default_rng(12)
    ids = [f'q{i}' for i in range(1200)]
    vectors = rng.normal(size=(1200, 16)).astype(np.float32)
    engine = engine_from_config(
        'quantized',
        16,
        'l2',
        engine='lancedb',
        path=str(tmp_path),
        ann_threshold=1000,
        partition_rows=400,
        index_type=index_type.lower(),
        refine_factor=10,
    )
    engine.add(ids, vectors)
    table = engine._open(create=False)
    assert engine._partitions(table) == 3 and table.index_stats('vector_idx').index_type == index_type
    for i in range(0, 1200, 100):  # a stored vector finds itself first, at distance 0
        found, scores = engine.search(vectors[i], 5)
        assert found[0] == ids[i] and scores[0] == pytest.approx(0, abs=1e-5) and len(found) == 5
    assert len(engine.search(vectors[0], 10, within=ids[::2])[0]) == 10
    # without re-ranking the index's distances are approximate: the scores come from the vectors
    engine.refine_factor = None
    found, scores = engine.search(vectors[3], 5)
    exact = [float(np.linalg.norm(vectors[ids.index(f)] - vectors[3])) for f in found]
    np.testing.assert_allclose(scores, exact, rtol=1e-5, atol=1e-5)
    assert list(scores) == sorted(scores)


@pytest.mark.slow
def test_lancedb_ann_recall_on_50k_random_unit_vectors(tmp_path):
    """recall@10 of the ANN index (default settings) against exact search: at least 0.95."""
    rng = np.random.default_rng(0)
    rows, dimensions = 50_000, 384
    ids = [f'v{i}' for i in range(rows)]
    vectors = unit_vectors(rng, rows, dimensions)
    engine = engine_from_config('ann', dimensions, 'cosine', engine='lancedb', path=str(tmp_path))
    assert engine.ann_threshold == CFG.vector_search.ann_threshold == 50_000
    for start in range(0, rows, 10_000):
        engine.add(ids[start : start + 10_000], vectors[start : start + 10_000])
    assert engine._partitions(engine._open(create=False)) > 1  # the index was built and is used
    queries = unit_vectors(rng, 50, dimensions)
    within = set(rng.choice(ids, size=rows // 10, replace=False).tolist())
    exact = np.argsort(-(queries @ vectors.T), axis=1)
    inside = np.array([id_ in within for id_ in ids])
    hits = hits_within = 0
    for query, order in zip(queries, exact):
        hits += len(set(engine.search(query, 10)[0]) & {ids[i] for i in order[:10]})
        best_within = {ids[i] for i in order[inside[order]][:10]}
        found = engine.search(query, 10, within=list(within))[0]
        assert len(found) == 10 and set(found) <= within
        hits_within += len(set(found) & best_within)
    assert hits / (10 * len(queries)) >= 0.95
    assert hits_within / (10 * len(queries)) >= 0.95


# -- the in-memory engine ----------------------------------------------------------------


def test_inmemory_appends_grow_by_doubling(monkeypatch):
    from superduperdb.vector_search.inmemory import InMemoryVectorEngine

    engine = InMemoryVectorEngine('grow', 4, 'l2', initial_capacity=1)
    resizes = []
    original = engine._resize
    monkeypatch.setattr(engine, '_resize', lambda capacity: (resizes.append(capacity), original(capacity)))
    for i in range(5000):
        engine.add([f'x{i}'], np.full((1, 4), i + 1.0))
    assert len(resizes) <= 14 and len(engine) == 5000
    ids, scores = engine.search(np.zeros(4), 2)
    assert ids == ['x0', 'x1'] and scores.tolist() == pytest.approx([2.0, 4.0])


def test_bare_import_does_not_import_lancedb():
    code = (
        'import sys; from superduperdb.vector_search import engine_from_config;'
        "e = engine_from_config('x', 2, engine='inmemory');"
        "print('lancedb' in sys.modules, 'pyarrow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ['False', 'False']


def test_benchmark_script_runs(tmp_path):
    script = Path(__file__).resolve().parents[1] / 'benchmarks' / 'vector_search.py'
    args = ['--sizes', '1500', '--queries', '5', '--dimensions', '16', '--ann-threshold', '1000']
    done = subprocess.run([sys.executable, str(script), *args], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for engine in (
        'numpy (hand-written)',
        'inmemory',
        'lancedb-flat',
        'lancedb ivf p=1',
        'lancedb ivf p=0.25',
    ):
        assert f'{engine} ' in done.stdout
    assert list(tmp_path.iterdir()) == []  # nothing left behind in the working directory


ADD_FROM_ANOTHER_PROCESS = """
import sys, numpy as np
from superduperdb.vector_search import engine_from_config
engine = engine_from_config('shared', 4, 'cosine', engine='lancedb', path=sys.argv[1])
engine.search(np.ones(4, dtype='float32'), 1)  # lancedb imported, the table opened: only the write is left
print('adding', flush=True)
engine.add(['theirs'], np.ones((1, 4), dtype='float32'))
print('added', flush=True)
"""


def test_a_lancedb_build_holds_the_table_alone_across_processes(tmp_path):
    """While one process builds a LanceDB index (checks it, drops it, fills it), another
    process's write waits for it instead of writing into a table about to be dropped (four
    replicas building one index at once failed an update job with "Not found: ...lance")."""
    import time

    path = str(tmp_path / 'vectors')
    engine = engine_from_config('shared', 4, 'cosine', engine='lancedb', path=path)
    engine.add(['old'], np.ones((1, 4), dtype='float32'))
    with engine.building():
        child = subprocess.Popen(  # noqa: SIM115 (closed below, after its last line is read)
            [sys.executable, '-c', ADD_FROM_ANOTHER_PROCESS, path], stdout=subprocess.PIPE, text=True
        )
        assert child.stdout is not None
        assert child.stdout.readline() == 'adding\n'
        time.sleep(1.0)  # ample time for an unguarded write to land
        assert child.poll() is None  # still waiting for the build
        engine.clear()  # what a build does: drop, then fill again
        engine.add(['new'], np.ones((1, 4), dtype='float32'))
    assert child.stdout.readline() == 'added\n'
    assert child.wait(timeout=60) == 0
    child.stdout.close()
    assert sorted(engine.ids()) == ['new', 'theirs']  # the write landed after the build, kept
