"""Vector indexes on every backend: like() against a brute-force reference, filters, updates,
deletes, a second process, and MiniLM finding a paraphrase."""

from __future__ import annotations

import numpy as np
import pytest

from superduperdb import Collection, VectorIndex, Watcher, superduper
from superduperdb.base.exceptions import ComponentError, ComponentNotFound, NotSupported, QueryError
from tests.helpers import unit_vectors

DIM = 8


def identity():
    return superduper(lambda v: np.asarray(v, dtype='float32'), identifier='identity')


def make_index(db, coll, *, measure='cosine', engine=None):
    watcher = Watcher(model=identity(), key='v', select=coll.find())
    return db.add(VectorIndex('vecs', indexing_watcher=watcher, measure=measure, engine=engine))


def insert_vectors(db, coll, vectors, brands):
    docs = [{'n': i, 'v': v.tolist(), 'brand': b} for i, (v, b) in enumerate(zip(vectors, brands))]
    db.execute(coll.insert_many(docs))


@pytest.fixture
def indexed(db, table_name):
    rng = np.random.default_rng(0)
    vectors = unit_vectors(rng, 200, DIM)
    brands = ['Nike' if i % 10 == 0 else 'Other' for i in range(200)]
    coll = Collection(table_name)
    insert_vectors(db, coll, vectors, brands)
    index = make_index(db, coll)
    assert [j.status for j in index.jobs_] == ['success']
    return db, coll, vectors, brands


def brute_force(vectors, q, rows):
    scores = vectors[rows] @ (q / np.linalg.norm(q))
    order = np.argsort(-scores, kind='stable')
    return [rows[i] for i in order], scores[order]


def test_search_then_filter_and_filter_then_search(indexed):
    db, coll, vectors, brands = indexed
    q = np.random.default_rng(1).normal(size=DIM).astype('float32')
    everything, _ = brute_force(vectors, q, list(range(200)))

    found = list(db.execute(coll.like({'v': q}, 'vecs', n=10)))
    assert [d['n'] for d in found] == everything[:10]
    scores = [d['_score'] for d in found]
    assert scores == sorted(scores, reverse=True)
    assert scores[0] == pytest.approx(float(vectors[everything[0]] @ q / np.linalg.norm(q)), abs=1e-5)

    # search, then filter: only the Nike rows among the 10 nearest
    then_filtered = list(db.execute(coll.like({'v': q}, 'vecs', n=10).find({'brand': 'Nike'})))
    assert [d['n'] for d in then_filtered] == [i for i in everything[:10] if brands[i] == 'Nike']

    # filter, then search: 10 Nike rows although only 10% of the rows are Nike
    nike = [i for i in range(200) if brands[i] == 'Nike']
    among, _ = brute_force(vectors, q, nike)
    filtered_first = list(db.execute(coll.find({'brand': 'Nike'}).like({'v': q}, 'vecs', n=10)))
    assert [d['n'] for d in filtered_first] == among[:10]
    assert all(d['brand'] == 'Nike' for d in filtered_first)
    # a raw vector works the same as a document to encode
    assert [d['n'] for d in db.execute(coll.like(q, 'vecs', n=3))] == everything[:3]


def test_search_results_carry_each_rows_outputs(indexed):
    """like() returns each row with its outputs of every model, read with the rows (one statement
    on SQL databases): rows a model never ran on have none of its outputs."""
    db, coll, vectors, _ = indexed
    parity = superduper(lambda n: n % 2, identifier='parity')
    parity.predict(X='n', db=db, select=coll.find({'n': {'$lt': 100}}))
    q = np.random.default_rng(2).normal(size=DIM).astype('float32')
    found = list(db.execute(coll.like(q, 'vecs', n=40)))
    assert len(found) == 40 and {d['n'] < 100 for d in found} == {True, False}
    for d in found:
        stored = d['_outputs']['v']['identity']
        assert np.allclose(getattr(stored, 'x', stored), vectors[d['n']])  # an Encodable, or the array
        assert d['_outputs'].get('n', {}).get('parity') == (d['n'] % 2 if d['n'] < 100 else None)
    many = list(db.execute(coll.like(q, 'vecs', n=150)))  # past the driver's lookups: SQLAlchemy's
    assert len(many) == 150 and [d['n'] for d in many[:40]] == [d['n'] for d in found]
    assert all(
        d['_outputs'].get('n', {}).get('parity') == (d['n'] % 2 if d['n'] < 100 else None) for d in many
    )
    filtered = list(db.execute(coll.find({'brand': 'Nike'}).like(q, 'vecs', n=5)))
    assert len(filtered) == 5
    assert all(
        d['_outputs'].get('n', {}).get('parity') == (d['n'] % 2 if d['n'] < 100 else None) for d in filtered
    )


@pytest.mark.notimpl(
    ['lake'], raises=NotSupported, reason='lake tables are append-only: updates and deletes are refused'
)
def test_inserts_updates_and_deletes_show_in_the_next_query(indexed):
    db, coll, vectors, brands = indexed
    q = np.random.default_rng(2).normal(size=DIM).astype('float32')
    result = db.execute(coll.insert_one({'n': 999, 'v': q.tolist(), 'brand': 'New'}))
    assert [j.method for j in result.jobs] == ['predict', 'vector_update']
    assert result.jobs[1].dependencies == [result.jobs[0].id]
    top = db.execute(coll.like({'v': q}, 'vecs', n=1).find())
    assert [d['n'] for d in top] == [999]

    db.execute(coll.update_one({'n': 999}, {'$set': {'v': (-q).tolist()}}))
    assert 999 not in [d['n'] for d in db.execute(coll.like({'v': q}, 'vecs', n=5))]

    db.execute(coll.update_one({'n': 999}, {'$set': {'v': q.tolist()}}))
    deleted = db.execute(coll.delete_many({'n': 999}))
    assert [j.method for j in deleted.jobs] == ['vector_update']
    assert 999 not in [d['n'] for d in db.execute(coll.like({'v': q}, 'vecs', n=5))]


def test_more_like_a_stored_row(indexed):
    db, coll, vectors, _ = indexed
    row = db.execute(coll.find_one({'n': 17}))
    pk = db.databackend.primary_key(coll.name)
    found = list(db.execute(coll.like({'_id': row[pk]}, 'vecs', n=3)))
    assert found[0]['n'] == 17 and found[0]['_score'] == pytest.approx(1.0, abs=1e-5)
    assert [d['n'] for d in found] == brute_force(vectors, vectors[17], list(range(200)))[0][:3]


@pytest.mark.notimpl(
    ['lake'], raises=NotSupported, reason='lake tables are append-only: updates and deletes are refused'
)
def test_another_process_sees_the_changes(indexed):
    """A second Datalayer (as a server or worker would have) builds its engine from the database,
    then catches up with vectors the first one writes."""
    db, coll, vectors, _ = indexed
    other = type(db)(db.databackend, db.metadata, db.artifact_store)
    q = vectors[5]
    assert [d['n'] for d in other.execute(coll.like(q, 'vecs', n=1))] == [5]
    db.execute(coll.insert_one({'n': 500, 'v': q.tolist(), 'brand': 'Twin'}))
    assert {d['n'] for d in other.execute(coll.like(q, 'vecs', n=2))} == {5, 500}
    db.execute(coll.delete_many({'n': 5}))
    assert [d['n'] for d in other.execute(coll.like(q, 'vecs', n=1))] == [500]


def test_bad_like_queries_get_clear_errors(indexed):
    db, coll, _, _ = indexed
    with pytest.raises(QueryError, match='8-dimensional'):
        db.execute(coll.like(np.ones(3), 'vecs', n=3))
    with pytest.raises(ComponentNotFound, match='vector_index'):
        db.execute(coll.like(np.ones(DIM), 'nope', n=3))
    with pytest.raises(ComponentError, match="encodes queries on 'v', not 'text'"):
        db.execute(coll.like({'text': 'hello'}, 'vecs'))
    with pytest.raises(QueryError, match='positive int'):
        coll.like(np.ones(DIM), 'vecs', n=0)
    with pytest.raises(QueryError, match='indexes table'):
        db.execute(Collection('elsewhere').like(np.ones(DIM), 'vecs'))


@pytest.mark.parametrize('measure', ['dot', 'l2'])
def test_other_measures_match_brute_force(db, table_name, measure):
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(100, DIM)).astype('float32')  # not normalised: measures differ
    coll = Collection(table_name)
    insert_vectors(db, coll, vectors, ['x'] * 100)
    make_index(db, coll, measure=measure)
    q = rng.normal(size=DIM).astype('float32')
    if measure == 'dot':
        expected = np.argsort(-(vectors @ q), kind='stable')[:5]
    else:
        expected = np.argsort(np.linalg.norm(vectors - q, axis=1), kind='stable')[:5]
    found = list(db.execute(coll.like(q, 'vecs', n=5)))
    assert [d['n'] for d in found] == expected.tolist()
    if measure == 'l2':
        assert found[0]['_score'] == pytest.approx(float(np.linalg.norm(vectors[expected[0]] - q)), rel=1e-4)


TEXTS = [
    'The cat sat on the mat.',
    'Stock markets fell sharply on Monday.',
    'A recipe for chocolate cake with dark cocoa.',
    'The football team won the championship final.',
    'How to repair a flat bicycle tyre.',
    'Heavy rain and strong winds are expected tomorrow.',
]


def test_minilm_finds_the_paraphrase_first(db, table_name, sentence_transformer):
    coll = Collection(table_name)
    db.execute(
        coll.insert_many(
            [{'text': t, 'kind': 'news' if i in (1, 5) else 'other'} for i, t in enumerate(TEXTS)]
        )
    )
    embedder = superduper(sentence_transformer)
    db.add(VectorIndex('texts', indexing_watcher=Watcher(model=embedder, key='text', select=coll.find())))
    top = list(db.execute(coll.like({'text': 'fixing a punctured bike wheel'}, 'texts', n=2)))
    assert top[0]['text'] == TEXTS[4]
    weather = list(db.execute(coll.find({'kind': 'news'}).like({'text': 'storm forecast'}, 'texts', n=1)))
    assert [d['text'] for d in weather] == [TEXTS[5]]


def test_adopting_vectors_a_table_already_has(db, table_name):
    from superduperdb.encoders.numpy import array
    from superduperdb.models.precomputed import Precomputed
    from superduperdb.store.outputs import output_table

    rng = np.random.default_rng(4)
    vectors = unit_vectors(rng, 50, DIM)
    coll = Collection(table_name)
    vec = array('float32', DIM)
    db.execute(coll.insert_many([{'n': i, 'vec': vec(v)} for i, v in enumerate(vectors)]))
    made_elsewhere = Precomputed('made-elsewhere', dimensions=DIM)
    watcher = Watcher(model=made_elsewhere, key='vec', select=coll.find())
    index = db.add(VectorIndex('adopted', indexing_watcher=watcher))
    assert [j.method for j in index.jobs_] == ['vector_build'] and index.jobs_[0].result == {'vectors': 50}
    assert not db.databackend.has_table(output_table(table_name, 'vec', 'made-elsewhere'))  # nothing copied
    q = rng.normal(size=DIM).astype('float32')
    found = [d['n'] for d in db.execute(coll.like({'vec': q}, 'adopted', n=5))]
    assert found == brute_force(vectors, q, list(range(50)))[0][:5]
    result = db.execute(coll.insert_one({'n': 50, 'vec': vec(q / np.linalg.norm(q))}))
    assert [j.method for j in result.jobs] == ['vector_update']  # no predict: nothing to compute
    assert [d['n'] for d in db.execute(coll.like(q, 'adopted', n=1))] == [50]
    with pytest.raises(QueryError, match='vectors of .made-elsewhere. have 8 values'):
        db.execute(coll.like({'vec': [1.0, 2.0]}, 'adopted'))


def test_adopting_vectors_of_the_wrong_size_is_refused_whole(db, table_name):
    from superduperdb.models.precomputed import Precomputed

    coll = Collection(table_name)
    db.execute(coll.insert_many([{'n': 0, 'vec': [0.0] * DIM}, {'n': 1, 'vec': [0.0] * 3}]))
    watcher = Watcher(model=Precomputed('made-elsewhere', dimensions=DIM), key='vec', select=coll.find())
    with pytest.raises(
        QueryError, match=r"Row .* 'vec' has shape \(3,\); vectors of 'made-elsewhere' have 8"
    ):
        db.add(VectorIndex('adopted', indexing_watcher=watcher))
    assert db.show('vector_index') == [] and db.show('watcher') == [] and db.show('model') == []


_PROBE: dict = {}  # what the new model version's backfill saw (the model cannot hold db itself)


def flipped(v):
    """The new version of the model; on its first call (inside its backfill) it queries the index,
    which must still answer with the old version's vectors."""
    if 'seen' not in _PROBE:
        db, coll, q = _PROBE['query']
        _PROBE['seen'] = [d['n'] for d in db.execute(coll.like(q, 'vecs', n=1))]
    return -np.asarray(v, dtype='float32')


def test_a_new_model_version_is_built_while_queries_use_the_old_one(indexed):
    db, coll, vectors, _ = indexed
    q = vectors[3]
    _PROBE.clear()
    _PROBE['query'] = (db, coll, q)
    new_model = superduper(flipped, identifier='identity')  # the same model, a new version
    watcher = Watcher(model=new_model, key='v', select=coll.find())
    index = db.add(VectorIndex('vecs', indexing_watcher=watcher))
    assert index.version == 1 and new_model.version == 1
    assert _PROBE['seen'] == [3]  # served by version 0 meanwhile
    # switched: the new vectors are the old ones flipped, so the query's nearest is now its opposite
    expected = brute_force(-vectors, q, list(range(200)))[0][:1]
    assert [d['n'] for d in db.execute(coll.like(-q, 'vecs', n=1))] == [3]
    assert [d['n'] for d in db.execute(coll.like(q, 'vecs', n=1))] == expected


@pytest.mark.parametrize('backend', ['sqlite', 'postgres'], indirect=True)
def test_lancedb_engine_and_losing_its_files(db, table_name, tmp_path):
    import shutil

    from superduperdb import CFG

    rng = np.random.default_rng(5)
    vectors = unit_vectors(rng, 120, DIM)
    coll = Collection(table_name)
    insert_vectors(db, coll, vectors, ['x'] * 120)
    q = rng.normal(size=DIM).astype('float32')
    expected = brute_force(vectors, q, list(range(120)))[0][:5]
    with CFG.override(**{'vector_search.path': str(tmp_path / 'lance')}):
        make_index(db, coll, engine='lancedb')
        assert [d['n'] for d in db.execute(coll.like(q, 'vecs', n=5))] == expected
        assert any((tmp_path / 'lance').iterdir())
        shutil.rmtree(tmp_path / 'lance')  # the engine's state is only a cache of the database
        other = type(db)(db.databackend, db.metadata, db.artifact_store)
        assert [d['n'] for d in other.execute(coll.like(q, 'vecs', n=5))] == expected


def test_cached_neighbourhoods_are_stored_beside_each_row(db, table_name):
    rng = np.random.default_rng(6)
    vectors = unit_vectors(rng, 60, DIM)
    coll = Collection(table_name)
    insert_vectors(db, coll, vectors, ['x'] * 60)
    watcher = Watcher(model=identity(), key='v', select=coll.find())
    index = db.add(VectorIndex('vecs', indexing_watcher=watcher, neighbours=3))
    assert [j.method for j in index.jobs_] == ['vector_build', 'vector_neighbours']
    pk = db.databackend.primary_key(table_name)
    n_of = {d[pk]: d['n'] for d in db.execute(coll.find())}
    doc = db.execute(coll.find_one({'n': 7}))
    stored = [n_of[k] for k in doc['_outputs']['_neighbours']['vecs']]
    assert stored == brute_force(vectors, vectors[7], list(range(60)))[0][1:4]  # itself left out
    # a new row gets its neighbourhood when it arrives
    result = db.execute(coll.insert_one({'n': 60, 'v': vectors[7].tolist(), 'brand': 'x'}))
    assert [j.method for j in result.jobs] == ['predict', 'vector_update', 'vector_neighbours']
    new = db.execute(coll.find_one({'n': 60}))
    assert n_of[new['_outputs']['_neighbours']['vecs'][0]] == 7


@pytest.mark.parametrize('backend', ['sqlite', 'postgres'], indirect=True)
def test_writes_by_other_applications_reach_the_index_through_change_capture(db, table_name):
    import sqlalchemy as sa

    rng = np.random.default_rng(7)
    vectors = unit_vectors(rng, 30, DIM)
    coll = Collection(table_name)
    insert_vectors(db, coll, vectors, ['x'] * 30)
    make_index(db, coll)
    db.cdc.poll_once()  # starts following the table
    other_app = sa.create_engine(db.databackend.engine.url)  # its own connections, its own SQL
    try:
        with other_app.begin() as conn:
            conn.execute(sa.text(f'DELETE FROM {table_name} WHERE n = 4'))
        db.cdc.poll_once()
    finally:
        other_app.dispose()
    found = [d['n'] for d in db.execute(coll.like(vectors[4], 'vecs', n=2))]
    assert (
        4 not in found and found == brute_force(vectors, vectors[4], [i for i in range(30) if i != 4])[0][:2]
    )


_SPACE: dict = {}  # the vectors the compatible model maps names to (module level: models are pickled)


def name_to_vector(name):
    return _SPACE['vectors'][int(name.split('-')[1])]


def test_a_compatible_model_maps_other_queries_into_the_same_space(db, table_name):
    rng = np.random.default_rng(8)
    vectors = unit_vectors(rng, 40, DIM)
    _SPACE['vectors'] = vectors
    coll = Collection(table_name)
    insert_vectors(db, coll, vectors, ['x'] * 40)
    indexing = Watcher(model=identity(), key='v', select=coll.find())
    names = superduper(name_to_vector, identifier='names')
    compatible = Watcher(model=names, key='name', select=coll.find())
    db.add(VectorIndex('vecs', indexing_watcher=indexing, compatible_watcher=compatible))
    found = [d['n'] for d in db.execute(coll.like({'name': 'row-12'}, 'vecs', n=3))]
    assert found == brute_force(vectors, vectors[12], list(range(40)))[0][:3] and found[0] == 12


@pytest.mark.parametrize('backend', ['sqlite', 'postgres', 'mysql', 'duckdb'], indirect=True)
def test_adopting_an_array_column_checks_rows_written_by_other_programs(db, table_name):
    """The dimension check of an array column asks the database for rows of another byte length
    (no row is decoded when none is): one such row, written with raw SQL, is still refused."""
    from superduperdb.encoders.numpy import array
    from superduperdb.models.precomputed import Precomputed

    coll = Collection(table_name)
    vec = array('float32', DIM)
    db.execute(coll.insert_many([{'n': i, 'vec': vec(np.ones(DIM, dtype='float32'))} for i in range(20)]))
    assert db.databackend.keys_of_other_width(table_name, 'vec', 4 * DIM, {}) == []
    t = db.databackend.table(table_name)
    with db.databackend.engine.begin() as conn:  # another program writes 3 floats into one row
        conn.execute(t.update().where(t.c['n'] == 7).values(vec=np.zeros(3, dtype='float32').tobytes()))
    (odd,) = db.databackend.keys_of_other_width(table_name, 'vec', 4 * DIM, {})
    assert db.execute(coll.find_one({'n': 7}, {'n': 1}))['_id'] == odd
    watcher = Watcher(model=Precomputed('made-elsewhere', dimensions=DIM), key='vec', select=coll.find())
    with pytest.raises(Exception, match=str(odd)):
        db.add(VectorIndex('adopted', indexing_watcher=watcher))
    with db.databackend.engine.begin() as conn:
        conn.execute(t.update().where(t.c['n'] == 7).values(vec=np.ones(DIM, dtype='float32').tobytes()))
    index = db.add(VectorIndex('adopted', indexing_watcher=watcher))
    assert index.jobs_[0].result == {'vectors': 20}


@pytest.mark.parametrize('backend', ['sqlite', 'postgres', 'mysql', 'duckdb'], indirect=True)
def test_a_whole_table_read_in_one_statement_gives_the_rows_of_the_key_ordered_pages(db, table_name):
    """An index build reads every stored vector with ``ordered=False`` (one statement, a
    server-side cursor in binary format on PostgreSQL): the same rows and values as keyset
    pages, in pages of the size asked, and a filter with values to bind still applies."""
    from superduperdb.encoders.numpy import array

    coll = Collection(table_name)
    vec = array('float32', DIM)
    rng = np.random.default_rng(3)
    rows = [(f'row {i}', rng.standard_normal(DIM).astype('float32'), i % 4, i / 3) for i in range(250)]
    db.execute(coll.insert_many([{'s': s, 'vec': vec(v), 'g': g, 'f': f} for s, v, g, f in rows]))
    backend = db.databackend
    columns = ['s', 'vec', 'g', 'f']

    def read(filter, **kwargs):
        pages = list(backend.find_columns(table_name, filter, columns, chunk_size=100, **kwargs))
        found = {}
        for page in pages:
            for key, *values in zip(page['_id'], *(page[c] for c in columns)):
                found[key] = values
        return [len(p['_id']) for p in pages], found

    sizes, ordered = read({})
    streamed_sizes, streamed = read({}, ordered=False)
    assert sizes == streamed_sizes == [100, 100, 50]
    assert streamed.keys() == ordered.keys() and len(streamed) == 250
    for key, (s, v, g, f) in ordered.items():
        s2, v2, g2, f2 = streamed[key]
        assert (s2, g2, f2) == (s, g, f) and type(s2) is str and type(g2) is int and type(f2) is float
        assert bytes(v2) == bytes(v) and len(v2) == 4 * DIM
    _, filtered = read({'g': 2}, ordered=False)
    assert sorted(v[0] for v in filtered.values()) == sorted(s for s, _, g, _ in rows if g == 2)


@pytest.mark.parametrize('backend', ['postgres'], indirect=True)
def test_a_streamed_read_of_a_column_psycopg_does_not_know_in_binary_reads_it_as_text(db, table_name):
    """An enum column (a type psycopg returns as bytes in binary format): read in text format."""
    engine = db.databackend.engine
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TYPE {table_name}_mood AS ENUM ('sad', 'ok')")
        conn.exec_driver_sql(f'CREATE TABLE {table_name} (_id TEXT PRIMARY KEY, mood {table_name}_mood)')
        conn.exec_driver_sql(f"INSERT INTO {table_name} VALUES ('a', 'sad'), ('b', 'ok')")
    try:
        (page,) = db.databackend.find_columns(table_name, {}, ['mood'], ordered=False)
        assert dict(zip(page['_id'], page['mood'])) == {'a': 'sad', 'b': 'ok'}
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP TABLE {table_name}')
            conn.exec_driver_sql(f'DROP TYPE {table_name}_mood')


@pytest.mark.parametrize('backend', ['postgres'], indirect=True)
def test_rows_copied_in_binary_read_back_as_inserted_and_a_too_long_value_is_refused(db, table_name):
    """PostgreSQL inserts go through COPY in binary format where every column's type allows it:
    each column type gets its own binary form (an int4 is not sent as an int8, a FLOAT(24) is a
    real), values read back as written, and varchar(n) still refuses a longer value."""
    from superduperdb.base.exceptions import WriteFailed

    engine = db.databackend.engine
    with engine.begin() as conn:
        conn.exec_driver_sql(
            f'CREATE TABLE {table_name} (_id VARCHAR(24) PRIMARY KEY, s SMALLINT, i INTEGER, b BIGINT, '
            'r REAL, f FLOAT(24), d DOUBLE PRECISION, v VARCHAR(5), t TEXT, raw BYTEA, ok BOOLEAN)'
        )
    coll = Collection(table_name)
    rows = [
        {'_id': f'k{i}', 's': i, 'i': -i * 1000, 'b': 2**40 + i, 'r': 0.5 * i, 'f': 0.25 * i, 'd': 1 / 3 + i,
         'v': 'abc'[: i % 4], 't': 'é' * i, 'raw': bytes([i, 0, 255]), 'ok': i % 2 == 0}
        for i in range(5)
    ]  # fmt: skip
    db.execute(coll.insert_many(rows))
    plan = next(p for (t, _), p in db.databackend._insert_plans.items() if t == table_name)
    assert plan.binary_types is not None and 'BINARY' in plan.copy  # the binary lane was taken
    found = {d['_id']: d for d in db.execute(coll.find())}
    for row in rows:
        got = found[row['_id']]
        assert {k: got[k] for k in row if k != 'raw'} == {k: v for k, v in row.items() if k != 'raw'}
        assert bytes(got['raw']) == row['raw']
    with pytest.raises(WriteFailed):
        db.execute(coll.insert_many([{**rows[0], '_id': 'long', 'v': 'abcdefgh'}]))
    assert db.execute(coll.count({})) == 5


@pytest.mark.parametrize('backend', ['sqlite', 'postgres', 'mysql', 'duckdb'], indirect=True)
def test_a_filters_keys_read_again_see_new_rows_and_other_values(db, table_name):
    """A filtered search's key query is compiled once per filter (SQL text on the driver):
    the statement is kept, never the keys; another value is another statement."""
    coll = Collection(table_name)
    db.execute(coll.insert_many([{'n': i, 'g': i % 3, 'tag': 'ab'[i % 2]} for i in range(9)]))

    def ns(filter):
        found = set(db.databackend.keys(table_name, filter))
        return sorted(d['n'] for d in db.execute(coll.find({}, {'n': 1})) if d['_id'] in found)

    assert ns({'g': 1}) == [1, 4, 7]
    db.execute(coll.insert_many([{'n': 9, 'g': 1, 'tag': 'b'}]))
    assert ns({'g': 1}) == [1, 4, 7, 9]
    assert ns({'g': 2}) == [2, 5, 8] and ns({'g': 1, 'tag': 'b'}) == [1, 7, 9]
    assert ns({'g': {'$in': [1, 2]}}) == [1, 2, 4, 5, 7, 8, 9]  # an expanding IN: SQLAlchemy's path
    assert ns({'n': {'$gte': 8}}) == [8, 9]
