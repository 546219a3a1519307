"""Warehouses: ClickHouse embedded (chdb) and served, and any SQLAlchemy dialect (the generic path).

The backend-parametrized suites run on chdb too (tests/conftest.py CHDB_MODULES); here is what
is particular to warehouses: how tables are laid out, that writes are batches, the URIs, the
generic path's detection and refusals. A ClickHouse server runs the ``clickhouse_db`` tests
when ``SUPERDUPERDB_TEST_CLICKHOUSE_URI`` names one (``clickhouse://default@host:8123/test``);
none runs on this machine kind, so they are skipped there, saying so.
"""

from __future__ import annotations

import uuid

import numpy as np
import pytest
import sqlalchemy as sa

from superduperdb import CFG, Collection, Document, VectorIndex, Watcher, superduper
from superduperdb.base.exceptions import ConfigError, NotSupported, QueryError, WriteFailed
from superduperdb.encoders.numpy import array
from tests.conftest import CLICKHOUSE_URI


def _text(value):
    return value.decode() if isinstance(value, bytes) else value


def _tables(db) -> dict[str, tuple[str, str]]:
    """``{table: (engine, sorting key)}`` of the ClickHouse database."""
    with db.databackend.engine.connect() as conn:
        rows = conn.execute(
            sa.text('SELECT name, engine, sorting_key FROM system.tables WHERE database = currentDatabase()')
        )
        return {_text(n): (_text(e), _text(k)) for n, e, k in rows}


@pytest.fixture
def chdb_db(tmp_path):
    with CFG.override(artifact_store=f'filesystem://{tmp_path}/artifacts', metadata_store=None):
        db = superduper(f'chdb://{tmp_path}/wh')
        yield db
        db.close()


@pytest.fixture
def clickhouse_db():
    """A ClickHouse server's database, its test tables dropped after (skipped without a server)."""
    if not CLICKHOUSE_URI:
        pytest.skip(
            'no ClickHouse server: set SUPERDUPERDB_TEST_CLICKHOUSE_URI=clickhouse://user@host:8123/db'
        )
    db = superduper(CLICKHOUSE_URI)
    before = set(db.databackend.list_tables())
    yield db
    for table in set(db.databackend.list_tables()) - before:
        db.databackend.drop_table(table)
    db.close()


@pytest.fixture(params=['chdb', pytest.param('server', marks=pytest.mark.clickhouse)])
def warehouse(request, tmp_path):
    """The same tests on chdb and on a ClickHouse server (when one is named)."""
    yield request.getfixturevalue('chdb_db' if request.param == 'chdb' else 'clickhouse_db')


def test_tables_are_mergetrees_ordered_by_their_key_and_outputs_too(warehouse):
    table = f'wh_{uuid.uuid4().hex[:8]}'
    coll = Collection(table)
    warehouse.execute(coll.insert_many([{'text': 'x' * i} for i in range(1, 21)]))
    superduper(lambda x: len(x), identifier='length').predict(X='text', db=warehouse, select=coll.find())
    tables = _tables(warehouse)
    assert tables[table] == ('MergeTree', '(_id)')
    (record,) = warehouse.metadata.outputs_of(table)
    assert tables[record['_id']] == ('MergeTree', '(_id)')  # keyed like the rows the join reads
    lengths = sorted(d['_outputs']['text']['length'] for d in warehouse.execute(coll.find()))
    assert lengths == list(range(1, 21))


def test_inserts_and_outputs_are_written_in_batches_not_per_row(warehouse, monkeypatch):
    table = f'wh_{uuid.uuid4().hex[:8]}'
    coll = Collection(table)
    warehouse.execute(coll.insert_one({'n': -1, 'text': 'first'}))  # the table exists: the bulk lane
    engine = warehouse.databackend.engine
    raw = engine.raw_connection()
    client_type = type(raw.driver_connection.client)
    raw.close()
    batches: list[int] = []
    insert = client_type.insert

    def counted(self, table, data, *args, **kwargs):
        assert kwargs.get('column_oriented')  # columns, not rows the client takes apart in Python
        batches.append(len(data[0]))
        return insert(self, table, data, *args, **kwargs)

    monkeypatch.setattr(client_type, 'insert', counted)
    statements: list[str] = []

    def seen(conn, cursor, statement, parameters, context, many):
        statements.append(statement)

    sa.event.listen(engine, 'before_cursor_execute', seen)
    try:
        warehouse.execute(coll.insert_many([{'n': i, 'text': f'row {i}'} for i in range(5000)]))
        assert batches == [5000]  # one columnar insert for 5000 rows
        batches.clear()
        warehouse.chunk_size = 2000
        superduper(lambda x: len(x), identifier='len').predict(X='text', db=warehouse, select=coll.find())
        assert sorted(batches) == [1001, 2000, 2000]  # one insert of outputs per page
        assert not [s for s in statements if s.lstrip().upper().startswith(('INSERT', 'UPDATE'))]
    finally:
        sa.event.remove(engine, 'before_cursor_execute', seen)
    assert warehouse.execute(coll.count({'n': {'$gte': 0}})) == 5000


def test_bytes_that_are_not_text_and_vectors_round_trip(warehouse):
    table = f'wh_{uuid.uuid4().hex[:8]}'
    coll = Collection(table)
    vec = array('float32', 4)
    raw = bytes([0, 255, 254, 10, 0])
    warehouse.execute(
        coll.insert_many(
            [Document({'_id': f'k{i}', 'raw': raw * i, 'v': vec(np.full(4, i, 'float32'))}) for i in range(3)]
        )
    )
    got = warehouse.execute(coll.find_one({'_id': 'k2'}))
    assert got['raw'] == raw * 2
    assert np.array_equal(got['v'].x, np.full(4, 2, 'float32'))


def test_a_key_already_there_is_refused_and_nothing_written(warehouse):
    coll = Collection(f'wh_{uuid.uuid4().hex[:8]}')
    warehouse.execute(coll.insert_one({'_id': 'taken', 'n': 0}))
    with pytest.raises(WriteFailed, match="duplicate key 'taken'"):
        warehouse.execute(coll.insert_many([{'_id': 'new', 'n': 1}, {'_id': 'taken', 'n': 2}]))
    with pytest.raises(WriteFailed, match="duplicate key 'twice'"):
        warehouse.execute(coll.insert_many([{'_id': 'twice', 'n': 1}, {'_id': 'twice', 'n': 2}]))
    assert warehouse.execute(coll.count()) == 1
    numbered = Collection(f'wh_{uuid.uuid4().hex[:8]}')
    warehouse.execute(numbered.insert_one({'_id': 1, 'n': 1}))
    with pytest.raises(NotSupported, match='cannot return the keys it generates'):
        warehouse.execute(numbered.insert_one({'n': 2}))  # integer keys: ClickHouse makes none


def test_vector_search_with_a_filter(warehouse):
    table = f'wh_{uuid.uuid4().hex[:8]}'
    coll = Collection(table)
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(200, 8)).astype('float32')
    warehouse.execute(
        coll.insert_many([{'_id': f'r{i}', 'x': vectors[i].tolist(), 'even': i % 2 == 0} for i in range(200)])
    )
    model = superduper(
        lambda x: np.asarray(x, dtype='float32'), identifier='as-vector', encoder=array('float32', 8)
    )
    warehouse.add(VectorIndex('wh-index', indexing_watcher=Watcher(model=model, key='x', select=coll.find())))
    query = vectors[10].tolist()
    hits = list(warehouse.execute(coll.like({'x': query}, 'wh-index', n=5).find({'even': True})))
    cosine = vectors @ vectors[10] / np.linalg.norm(vectors, axis=1) / np.linalg.norm(vectors[10])
    best = [f'r{i}' for i in np.argsort(-cosine)[:5] if i % 2 == 0]  # the 5 nearest, then the filter
    assert hits[0]['_id'] == 'r10' and [h['_id'] for h in hits] == best and all(h['even'] for h in hits)


def test_columns_read_as_the_client_decodes_them_equal_the_rows(warehouse):
    """Column reads (predict's inputs, stored fingerprints) run on the client and give what the
    rows give: text, bytes, numbers, booleans, instants, JSON, missing values; a filter with
    parameters, keyset pages, and an ``IN`` list (read as rows)."""
    import datetime

    backend = warehouse.databackend
    table = f'wh_{uuid.uuid4().hex[:8]}'
    when = datetime.datetime(2026, 12, 7, 12, 30, 1, 250000, tzinfo=datetime.UTC)
    docs = [
        {
            '_id': f'k{i:02d}',
            'text': f'tëxt {i} ✓' if i % 4 else None,
            'raw': bytes([i, 255, 0, 10]),
            'n': i,
            'x': i / 3,
            'flag': i % 2 == 0,
            'at': when + datetime.timedelta(seconds=i),
            'meta': {'i': i, 'tags': ['a', 'b']},
        }
        for i in range(25)
    ]
    warehouse.execute(Collection(table).insert_many(docs))
    columns = ['text', 'raw', 'n', 'x', 'flag', 'at', 'meta']
    later = {'at': {'$gte': when + datetime.timedelta(seconds=5)}}
    for where in ({}, later, {'_id': {'$in': ['k03', 'k07']}}):
        rows = [r for chunk in backend.find(table, where, chunk_size=7) for r in chunk]
        pages = list(backend.find_columns(table, where, columns, chunk_size=7))
        assert [len(p['_id']) for p in pages][:1] == [min(7, len(rows))]
        got = {c: [v for p in pages for v in p[c]] for c in ['_id', *columns]}
        assert got == {c: [r.get(c) for r in rows] for c in ['_id', *columns]}
    cached = backend._column_queries
    assert cached and any(query is not None for _, query in cached.values())  # the client's columns


def test_vector_outputs_encoded_a_page_at_once_read_back_as_computed(warehouse):
    table = f'wh_{uuid.uuid4().hex[:8]}'
    coll = Collection(table)
    vec = array('float32', 4)
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(30, 4)).astype('float32')
    warehouse.execute(coll.insert_many([{'_id': f'r{i:02d}', 'v': vec(vectors[i])} for i in range(30)]))
    w = rng.normal(size=(4, 3)).astype('float32')
    batched = superduper(
        lambda xs: list(np.stack(xs) @ w), identifier='proj', batched=True, encoder=array('float32', 3)
    )
    unencoded = superduper(lambda x: (x * 2).astype('float64'), identifier='twice')  # no encoder given
    for model in (batched, unencoded):
        report = model.predict(X='v', db=warehouse, select=coll.find())
        assert report.computed == 30 and report.failed == 0
    for doc in warehouse.execute(coll.find()):
        i = int(doc['_id'][1:])
        outputs = doc['_outputs']['v']
        assert np.array_equal(outputs['proj'].x, (vectors @ w)[i])  # one batch: the same matmul
        twice = outputs['twice'].x
        assert twice.dtype == np.float64 and np.array_equal(twice, vectors[i] * 2)


def test_array_outputs_of_another_shape_fail_their_rows_as_one_by_one(warehouse):
    """Outputs encoded a page at once keep the rule of one type per output table."""
    coll = Collection(f'wh_{uuid.uuid4().hex[:8]}')
    warehouse.execute(coll.insert_many([{'_id': f'r{i}', 'n': float(i)} for i in range(5)]))
    first = superduper(lambda n: np.full(3, n, 'float32'), identifier='fill')
    assert first.predict(X='n', db=warehouse, select=coll.find()).computed == 5
    wider = superduper(lambda n: np.full(4, n, 'float32'), identifier='fill')
    report = wider.predict(X='n', db=warehouse, select=coll.find(), overwrite=True)
    assert (report.computed, report.failed) == (0, 5)
    assert "outputs are stored as 'numpy.float32[3]' values" in next(iter(report.errors.values()))


@pytest.mark.parametrize('measure', ['cosine', 'l2', 'dot'])
def test_exact_search_in_the_warehouse_finds_what_the_engine_finds(warehouse, measure):
    """ClickHouse's distance functions over the stored vectors (CFG.vector_search.in_database):
    the same rows in the same order, with the same scores, as the in-memory engine, with and
    without a filter (applied first, or after the search)."""
    table = f'wh_{uuid.uuid4().hex[:8]}'
    coll = Collection(table)
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(300, 16)).astype('float32')
    vectors[7] = 0  # a zero vector: cosine similarity 0 in both
    warehouse.execute(
        coll.insert_many([{'_id': f'r{i:03d}', 'x': vectors[i].tolist(), 'g': i % 3} for i in range(300)])
    )
    model = superduper(
        lambda x: np.asarray(x, dtype='float32'), identifier=f'vec-{measure}', encoder=array('float32', 16)
    )
    name = f'wh-exact-{measure}'
    watcher = Watcher(model=model, key='x', select=coll.find())
    warehouse.add(VectorIndex(name, indexing_watcher=watcher, measure=measure, engine='inmemory'))
    query = rng.normal(size=16).astype('float32')
    queries = [
        coll.like(query, name, n=10).find(),
        coll.find({'g': {'$in': [0, 2]}}).like(query, name, n=10),  # the filter first
        coll.like(query, name, n=10).find({'g': 1}),  # the search, then the filter
        coll.like({'_id': 'r005'}, name, n=5).find(),  # more like this row
    ]
    for q in queries:
        with CFG.override(**{'vector_search.in_database': False}):
            engine = [(d['_id'], d['_score']) for d in warehouse.execute(q)]
        with CFG.override(**{'vector_search.in_database': True}):
            inside = [(d['_id'], d['_score']) for d in warehouse.execute(q)]
        assert [k for k, _ in inside] == [k for k, _ in engine] and engine
        assert np.allclose([s for _, s in inside], [s for _, s in engine], rtol=1e-4, atol=1e-5)
    with CFG.override(**{'vector_search.in_database': True}):
        warehouse.vectors.unload(name)
        assert warehouse.execute(queries[0])  # searched without this process's engine
        more = {'_id': 'r300', 'x': rng.normal(size=16).tolist(), 'g': 0}
        warehouse.execute(coll.insert_one(more))  # its vector update job builds no engine either
        hit = warehouse.execute(coll.like({'_id': 'r300'}, name, n=1).find())
        assert [d['_id'] for d in hit] == ['r300'] and not warehouse.vectors.holds(name)
        with pytest.raises(QueryError, match='16-dimensional'):
            warehouse.execute(coll.like(np.ones(3), name, n=3).find())


def _documents_frame(db, q, kind):
    """The DataFrame of ``q`` built from its documents (the database's Arrow not asked for)."""
    cursor = db.execute(q)
    repr(cursor)  # documents read ahead (a notebook's preview): the frame is built from documents
    return getattr(cursor, f'to_{kind}')()


def test_dataframes_come_through_arrow_as_the_documents_give_them(chdb_db, monkeypatch):
    """to_arrow/to_pandas/to_polars on chdb are ClickHouse's Arrow output (text, numbers,
    instants, bytes, missing values; vectors decoded into FixedSizeList; outputs joined by
    key), equal to the frames built from the documents, for filters, IN lists, sorts, pages."""
    import datetime

    import pandas as pd

    from superduperdb.store import arrow_reads

    coll = Collection('frame')
    vec = array('float32', 3)
    when = datetime.datetime(2026, 12, 7, 9, 0, tzinfo=datetime.UTC)
    docs = [
        Document(
            {
                '_id': f'k{i}',
                'n': i,
                'x': i / 4,
                'ok': i % 2 == 0,
                'text': f'tëxt {i}',
                'raw': bytes([i, 0, 255]),
                'at': when + datetime.timedelta(minutes=i),
                'v': vec(np.full(3, i, 'float32')),
            }
        )
        for i in range(10)
    ]
    chdb_db.execute(coll.insert_many(docs))
    superduper(len, identifier='len').predict(X='text', db=chdb_db, select=coll.find({'n': {'$gte': 3}}))
    double = superduper(lambda v: v * 2, identifier='double', encoder=vec)
    double.predict(X='v', db=chdb_db, select=coll.find())
    read, original = [], arrow_reads.read
    monkeypatch.setattr(arrow_reads, 'read', lambda *a, **k: read.append(1) or original(*a, **k))
    queries = [
        coll.find(),
        coll.find({'n': {'$in': [1, 4, 7]}}),
        coll.find({'at': {'$gt': when + datetime.timedelta(minutes=4)}}).sort('x', -1).limit(3),
        coll.find({'n': {'$lt': 8}}).sort('n', 1).skip(2).limit(4),
        coll.find({'n': {'$gt': 100}}),
    ]
    for q in queries:
        arrow, documents = chdb_db.execute(q).to_arrow(), _documents_frame(chdb_db, q, 'arrow')
        assert arrow.equals(documents) and arrow.schema.equals(documents.schema, check_metadata=True)
        pandas, rows = chdb_db.execute(q).to_pandas(), _documents_frame(chdb_db, q, 'pandas')
        assert list(pandas.columns) == list(rows.columns)
        for column in rows.columns:
            if rows[column].dtype == object:  # arrays (rows of one stacked array), bytes
                assert [np.asarray(v).tolist() for v in pandas[column]] == [
                    np.asarray(v).tolist() for v in rows[column]
                ]
            else:
                pd.testing.assert_series_equal(pandas[column], rows[column])
        assert chdb_db.execute(q).to_polars().equals(_documents_frame(chdb_db, q, 'polars'))
    assert len(read) == 3 * len(queries)  # every frame above read as Arrow
    frame = chdb_db.execute(coll.find({'n': {'$lt': 5}})).to_pandas()
    assert sorted(frame['n']) == [0, 1, 2, 3, 4] and set(frame['text']) == {f'tëxt {i}' for i in range(5)}
    assert np.stack(frame['_outputs.v.double']).tolist() == [[2.0 * i] * 3 for i in range(5)]


def test_chdb_uris_and_where_superduperdb_keeps_its_records(tmp_path):
    with pytest.raises(ConfigError, match='does not exist'):
        superduper(f'chdb://{tmp_path}/no/such/folder')
    with CFG.override(artifact_store=None, metadata_store=None):
        db = superduper(f'chdb://{tmp_path}/wh')
        try:
            assert db.databackend.describe() == f'chdb: {tmp_path}/wh'
            assert (
                db.databackend.default_metadata_store()
                == f'sqlite:///{tmp_path}/wh/_superduper/metadata.sqlite'
            )
            db.execute(Collection('t').insert_one({'n': 1}))
            assert (tmp_path / 'wh' / '_superduper' / 'metadata.sqlite').exists()
            assert '_superduper_components' not in db.databackend.list_tables()  # not in ClickHouse
        finally:
            db.close()


# ----- the generic SQLAlchemy path -------------------------------------------------------------------


def test_a_dialect_that_is_not_installed_names_its_package():
    with pytest.raises(ConfigError, match="pip install 'snowflake-sqlalchemy'"):
        superduper('snowflake://user@account/db')
    with pytest.raises(ConfigError, match="dialect package for 'nosuchdb'"):
        superduper('nosuchdb://host/db')


def test_duckdb_through_the_generic_path(tmp_path):
    """``sqlalchemy+duckdb``: what superduperdb knows of DuckDB left aside, detected instead
    (duckdb-engine's reflection fails on this SQLAlchemy: information_schema is used)."""
    with CFG.override(artifact_store=f'filesystem://{tmp_path}/artifacts', metadata_store=None):
        db = superduper(f'sqlalchemy+duckdb:///{tmp_path}/generic.duckdb')
        try:
            facts = db.databackend.facts
            assert facts.detected and facts.json_columns and facts.returning
            coll = Collection('items')
            db.execute(
                coll.insert_many(
                    [{'n': i, 'text': f'doc {i}', 'meta': {'even': i % 2 == 0}} for i in range(20)]
                )
            )
            assert db.execute(coll.count({'n': {'$gte': 15}})) == 5
            db.execute(coll.update_many({'n': {'$lt': 3}}, {'$set': {'text': 'low'}}))
            assert db.execute(coll.count({'text': 'low'})) == 3
            db.execute(coll.delete_many({'n': {'$gte': 18}}))
            superduper(lambda x: len(x), identifier='length').predict(X='text', db=db, select=coll.find())
            docs = list(db.execute(coll.find({'n': 5})))
            assert docs[0]['_outputs']['text']['length'] == len('doc 5')
            assert db.execute(coll.count()) == 18
            assert not db.databackend.facts.inspects  # the detected fallback took over
        finally:
            db.close()


def test_chdb_dialect_through_the_generic_path_refuses_by_name_and_reads_tables(tmp_path):
    """clickhouse-connect's own dialect over chdb, without superduperdb's ClickHouse facts: what
    it cannot do (a table from a generic definition: ClickHouse needs an engine; JSON columns;
    keys it generates) is a NotSupported naming it; a table made by hand reads and filters."""
    uri = f'sqlalchemy+clickhousedb:///?dsn=chdb://{tmp_path}/ch'
    with CFG.override(artifact_store=f'filesystem://{tmp_path}/artifacts', metadata_store=None):
        db = superduper(uri)
        try:
            facts = db.databackend.facts
            assert facts.detected and not facts.json_columns and not facts.returning
            with pytest.raises(NotSupported, match='table creation from a generic definition'):
                db.execute(Collection('made').insert_one({'n': 1}))
        finally:
            db.close()
    with CFG.override(
        artifact_store=f'filesystem://{tmp_path}/artifacts',
        metadata_store=f'sqlite:///{tmp_path}/meta.sqlite',
    ):
        db = superduper(uri)
        try:
            with db.databackend.engine.begin() as conn:
                for name, key in (('keyless', 'id'), ('hand', '_id')):
                    conn.exec_driver_sql(
                        f'CREATE TABLE {name} ({key} Int64, word String) ENGINE = MergeTree ORDER BY {key}'
                    )
                    conn.exec_driver_sql(f"INSERT INTO {name} VALUES (1, 'one'), (2, 'two'), (3, 'three')")
            # the dialect reports no primary key: a table keyed otherwise than by _id is refused by name
            with pytest.raises(QueryError, match="'keyless' has no primary key that clickhousedb reports"):
                list(db.execute(Collection('keyless').find()))
            coll = Collection('hand')
            assert sorted(d['word'] for d in db.execute(coll.find({'_id': {'$gte': 2}}))) == ['three', 'two']
            db.execute(coll.insert_many([{'_id': 4, 'word': 'four'}]))
            assert db.execute(coll.count()) == 4
        finally:
            db.close()
