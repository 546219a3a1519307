"""A lake as a datalayer: folders of Parquet files (and Delta/Iceberg tables), locally and on S3.

The tables are written by other programs (pyarrow, deltalake, pyiceberg) the way a team's
pipelines write them; superduperdb reads them, predicts over them with real models, writes its
outputs as Parquet that plain DuckDB/pyarrow read, follows new files, and searches vectors.
Object storage is a real S3-compatible server (moto's, on 127.0.0.1; tests/s3_server.py).
"""

from __future__ import annotations

import os
import uuid

import numpy as np
import pytest

pa = pytest.importorskip('pyarrow')
pq = pytest.importorskip('pyarrow.parquet')
duckdb = pytest.importorskip('duckdb')

from superduperdb import CFG, Collection, VectorIndex, Watcher, superduper  # noqa: E402
from superduperdb.base.exceptions import (  # noqa: E402
    ConfigError,
    InvalidValue,
    MissingDependencyError,
    NotSupported,
    QueryError,
    WriteFailed,
)
from superduperdb.store.fingerprints import fingerprint, fingerprint_column  # noqa: E402
from superduperdb.store.outputs import output_table  # noqa: E402

pytestmark = pytest.mark.lake

COUNTRIES = ['fr', 'de', 'it']


def events(n: int, start: int = 0, dims: int = 4) -> pa.Table:
    """``n`` rows the way a pipeline writes them: an int key, text, numbers, a struct, a vector."""
    rng = np.random.default_rng(start)
    ids = list(range(start, start + n))
    vectors = rng.normal(size=(n, dims)).astype('float32')
    return pa.table(
        {
            'id': pa.array(ids, pa.int64()),
            'text': [f'event number {i}' for i in ids],
            'amount': pa.array([float(i % 17) for i in ids]),
            'meta': [{'source': 'web' if i % 2 else 'app', 'size': i % 5} for i in ids],
            'vec': pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), dims),
        }
    )


def write_partitioned(root, table: str, data: pa.Table, name: str = 'part-0.parquet') -> None:
    """Hive partitions by country (``country=fr/``), one file each: as Spark would lay them out."""
    ids = data['id'].to_pylist()
    for i, country in enumerate(COUNTRIES):
        picked = data.take([j for j, key in enumerate(ids) if key % 3 == i])
        folder = os.path.join(str(root), table, f'country={country}')
        os.makedirs(folder, exist_ok=True)
        pq.write_table(picked, os.path.join(folder, name))


@pytest.fixture
def lake(tmp_path):
    root = tmp_path / 'lake'
    write_partitioned(root, 'events', events(300))
    with CFG.override(artifact_store=None, metadata_store=None):
        db = superduper(f'file://{root}')
        try:
            yield db
        finally:
            db.close()


def brute(data: pa.Table, keep) -> list[int]:
    return sorted(row['id'] for row in data.to_pylist() if keep(row))


# ----- connecting ----------------------------------------------------------------------
def test_a_folder_of_tables_opens_as_a_datalayer(lake, tmp_path):
    assert lake.databackend.name == 'lake'
    assert lake.databackend.list_tables() == ['events']
    # the metadata store is a small SQLite file inside the lake root, artifacts beside it: made
    # by the first write, not by opening or reading the lake
    metadata = tmp_path / 'lake' / '_superduper' / 'metadata.db'
    assert lake.execute(Collection('events').count()) == 300
    assert not metadata.exists()
    lake.add(superduper(lambda x: x, identifier='same'))
    assert metadata.exists() and (tmp_path / 'lake' / '_superduper' / 'artifacts').is_dir()
    assert 'lake: file://' in repr(lake)


def test_a_parquet_file_uri_says_to_open_its_folder(tmp_path):
    with pytest.raises(ConfigError, match='names a Parquet file; a lake is a folder of tables'):
        superduper(f'file://{tmp_path}/x.parquet')


def test_unknown_scheme_still_lists_lakes():
    with pytest.raises(ConfigError, match=r'a lake: file:///path/lake, s3://bucket/lake'):
        superduper('nosuchscheme://x/y')


# ----- reading -------------------------------------------------------------------------
FILTERS = [
    ({'amount': {'$gt': 12}}, lambda r: r['amount'] > 12),
    ({'country': 'de'}, lambda r: r['id'] % 3 == 1),
    (
        {'country': {'$in': ['fr', 'it']}, 'amount': {'$lte': 2}},
        lambda r: r['id'] % 3 != 1 and r['amount'] <= 2,
    ),
    ({'$or': [{'id': {'$lt': 5}}, {'id': {'$gte': 295}}]}, lambda r: r['id'] < 5 or r['id'] >= 295),
    ({'meta.source': 'app', 'meta.size': {'$ne': 0}}, lambda r: r['id'] % 2 == 0 and r['id'] % 5 != 0),
    ({'text': {'$nin': ['event number 1', 'event number 2']}}, lambda r: r['id'] not in (1, 2)),
    ({'nothing_here': {'$exists': False}, 'id': {'$not': {'$gt': 3}}}, lambda r: r['id'] <= 3),
]


@pytest.mark.parametrize(('flt', 'keep'), FILTERS)
def test_find_and_count_answer_as_a_brute_force_filter(lake, flt, keep):
    data = events(300)
    expected = brute(data, keep)
    if 'nothing_here' in flt:  # an unknown column is refused on a lake as on SQL
        with pytest.raises(QueryError, match="Unknown column 'nothing_here'"):
            lake.execute(Collection('events').find(flt))
        return
    found = sorted(doc['id'] for doc in lake.execute(Collection('events').find(flt)))
    assert found == expected
    assert lake.execute(Collection('events').count(flt)) == len(expected)


def test_rows_read_back_with_their_types(lake):
    doc = lake.execute(Collection('events').find_one({'id': 7}))
    assert doc['text'] == 'event number 7' and doc['amount'] == 7.0
    assert doc['meta'] == {'source': 'web', 'size': 2}  # a struct: a dict
    assert doc['country'] == 'de'  # from the partition folder
    assert isinstance(doc['vec'], np.ndarray) and doc['vec'].dtype == np.float32
    np.testing.assert_array_equal(doc['vec'], events(300)['vec'][7].values.to_numpy())


def test_projection_sort_skip_limit(lake):
    coll = Collection('events')
    docs = list(
        lake.execute(coll.find({'amount': {'$gte': 10}}, {'text': 1}).sort('id', -1).skip(2).limit(3))
    )
    expected = [i for i in range(299, -1, -1) if i % 17 >= 10][2:5]
    assert [d['id'] for d in docs] == expected
    assert set(docs[0]) == {'id', 'text'}


def test_filters_and_partitions_are_pushed_into_the_scan(lake):
    plan = lake.databackend.explain('events', {'country': 'de', 'amount': {'$gt': 12}}, {'text': 1})
    assert 'READ_PARQUET' in plan
    assert 'Filters: amount > 12' in plan  # the predicate runs inside the Parquet reader
    assert "File Filters: country = 'de'" in plan and 'Scanning Files: 1/3' in plan  # partition pruning
    assert 'Projections: id, text' in plan and 'meta' not in plan  # only the columns needed are read


# ----- writing -------------------------------------------------------------------------
def test_insert_many_appends_one_file_that_other_engines_read(tmp_path):
    root = tmp_path / 'lake'
    db = superduper(f'file://{root}')
    coll = Collection('notes')
    result = db.execute(coll.insert_many([{'text': f'note {i}', 'n': i, 'tags': {'a': i}} for i in range(5)]))
    assert len(result.ids) == 5 and len(set(result.ids)) == 5
    db.execute(coll.insert_many([{'text': 'one more', 'n': 5}]))
    files = sorted(p.name for p in (root / 'notes').iterdir())
    assert len(files) == 2 and all(f.endswith('.parquet') for f in files)
    read = duckdb.sql(
        f"SELECT _id, text, n FROM read_parquet('{root}/notes/*.parquet') ORDER BY n"
    ).fetchall()
    assert [r[1] for r in read] == [*(f'note {i}' for i in range(5)), 'one more']
    assert read[0][0] == result.ids[0]
    assert db.execute(coll.find_one({'tags.a': 3}))['tags'] == {'a': 3}
    assert db.execute(coll.count({'n': {'$gte': 2}})) == 4
    db.close()


def test_updates_and_deletes_are_refused_with_what_to_do(lake):
    coll = Collection('events')
    with pytest.raises(NotSupported, match='append-only'):
        lake.execute(coll.update_many({'id': 1}, {'$set': {'text': 'x'}}))
    with pytest.raises(NotSupported, match='Remove or rewrite its files with your own tools'):
        lake.execute(coll.delete_many({'id': 1}))
    assert lake.execute(coll.count()) == 300  # nothing changed


def test_bad_writes_are_refused_before_anything_is_written(lake, tmp_path):
    coll = Collection('events')
    with pytest.raises(WriteFailed, match='already has rows with id'):
        lake.execute(coll.insert_many([{'id': 1, 'text': 'again', 'amount': 1.0}]))
    with pytest.raises(InvalidValue, match=r"Field 'amount' of 'events' holds a str \(document 0\)"):
        lake.execute(coll.insert_many([{'id': 1000, 'amount': 'not a number'}]))
    with pytest.raises(QueryError, match="has no column 'colour'"):
        lake.execute(coll.insert_many([{'id': 1001, 'colour': 'red'}]))
    assert lake.execute(coll.count()) == 300


# ----- predict, watch, change capture --------------------------------------------------
def _fitted_classifier():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4)).astype('float32')
    return LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))


def test_predict_writes_outputs_as_parquet_any_engine_reads(lake):
    model = superduper(_fitted_classifier(), identifier='clf')
    report = model.predict(X='vec', db=lake, select=Collection('events').find({'country': 'fr'}))
    assert report.computed == 100
    out = output_table('events', 'vec', 'clf')
    root = lake.databackend.storage.root
    rows = duckdb.sql(
        f"SELECT _id, output, _version, _model, _key FROM read_parquet('{root}/{out}/*.parquet') ORDER BY _id"
    ).fetchall()
    assert len(rows) == 100 and rows[0][0] == 0 and {r[2] for r in rows} == {0}
    assert {r[3] for r in rows} == {'clf'} and {r[4] for r in rows} == {'vec'}
    data = events(300)
    expected = _fitted_classifier().predict(np.stack(data['vec'].to_numpy(zero_copy_only=False)))
    assert [r[1] for r in rows] == [int(expected[i]) for i in range(0, 300, 3)]
    doc = lake.execute(Collection('events').find_one({'id': 3}))
    assert doc['_outputs']['vec']['clf'] == int(expected[3])
    # incremental: a rerun computes nothing; the rest of the table only the rest
    again = model.predict(X='vec', db=lake, select=Collection('events').find({'country': 'fr'}))
    assert again.computed == 0 and again.skipped == 100
    rest = model.predict(X='vec', db=lake, select=Collection('events').find())
    assert rest.computed == 200 and rest.skipped == 100
    # a vector column is read as the rows of one matrix; its fingerprints are each row's, as
    # the row-by-row path computes them (a predict with features= reads documents)
    (cols,) = lake.databackend.find_columns('events', {}, ['vec'], chunk_size=1000)
    assert cols['vec'].stacked.shape == (300, 4)
    expected_fps = {
        i: fingerprint(np.asarray(v, dtype='float32'))
        for i, v in zip(data['id'].to_pylist(), data['vec'].to_pylist())
    }
    assert dict(zip(cols['id'], fingerprint_column(cols['vec']))) == expected_fps
    by_rows = Collection('events').find({}, {'vec': 1})  # a projection: read as documents
    assert model.predict(X='vec', db=lake, select=by_rows).computed == 0


def test_watch_and_new_files_from_another_program(lake):
    model = superduper(lambda x: len(x), identifier='length')
    model.predict(X='text', db=lake, select=Collection('events').find(), watch=True)
    lake.cdc.poll_once()  # follows the table from here on
    # writes through the datalayer trigger the watcher directly
    result = lake.execute(Collection('events').insert_many([{'id': 1000, 'text': 'abc', 'amount': 1.0}]))
    assert (
        result.jobs
        and lake.execute(Collection('events').find_one({'id': 1000}))['_outputs']['text']['length'] == 3
    )
    # another program drops a file into a partition folder
    root = lake.databackend.storage.root
    extra = events(4, start=5000).drop_columns(['meta'])
    pq.write_table(extra, os.path.join(root, 'events', 'country=fr', 'part-from-spark.parquet'))
    counts = lake.cdc.poll_once(reconcile=False)
    assert counts['inserted'] == 4
    doc = lake.execute(Collection('events').find_one({'id': 5001}))
    assert doc['_outputs']['text']['length'] == len('event number 5001')
    assert lake.cdc.poll_once(reconcile=False)['inserted'] == 0  # the position was saved
    # the file goes away: the reconcile drops the outputs of its rows
    os.remove(os.path.join(root, 'events', 'country=fr', 'part-from-spark.parquet'))
    assert lake.cdc.poll_once()['deleted'] == 4
    out = output_table('events', 'text', 'length')
    assert lake.databackend.count(out, {'_id': {'$gte': 5000}}) == 0


def test_change_capture_resumes_from_its_persisted_listing(tmp_path):
    root = tmp_path / 'lake'
    write_partitioned(root, 'events', events(30))
    db = superduper(f'file://{root}')
    superduper(lambda x: x * 2, identifier='double').predict(
        X='amount', db=db, select=Collection('events').find(), watch=True
    )
    db.cdc.poll_once()
    db.close()
    pq.write_table(events(3, start=900), os.path.join(root, 'events', 'country=it', 'late.parquet'))
    again = superduper(f'file://{root}')  # another process, later
    assert again.cdc.poll_once(reconcile=False)['inserted'] == 3
    assert again.execute(Collection('events').find_one({'id': 901}))['_outputs']['amount']['double'] == 2 * (
        901 % 17
    )
    again.close()


# ----- vector search -------------------------------------------------------------------
@pytest.mark.parametrize('engine', ['inmemory', 'lancedb'])
def test_like_over_lake_vectors_matches_brute_force(lake, engine, tmp_path):
    from superduperdb.models.precomputed import Precomputed

    with CFG.override(vector_search={'engine': engine, 'path': str(tmp_path / 'vectors')}):
        lake.add(
            VectorIndex(
                'ev',
                indexing_watcher=Watcher(
                    model=Precomputed('pipeline', dimensions=4), key='vec', select=Collection('events').find()
                ),
                measure='cosine',
            )
        )
        query = np.array([1.0, 0.5, -0.2, 0.1], dtype='float32')
        found = list(lake.execute(Collection('events').find({'country': 'de'}).like(query, 'ev', n=5)))
    data = events(300)
    matrix = np.stack(data['vec'].to_numpy(zero_copy_only=False)).astype('float32')
    scores = matrix @ query / np.linalg.norm(matrix, axis=1) / np.linalg.norm(query)
    ids = [i for i in np.argsort(-scores) if i % 3 == 1][:5]
    assert [d['id'] for d in found] == [int(i) for i in ids]
    assert found[0]['_score'] >= found[-1]['_score']


# ----- Delta and Iceberg ---------------------------------------------------------------
def test_delta_tables_are_read_appended_and_predicted_over(tmp_path):
    deltalake = pytest.importorskip('deltalake')
    root = tmp_path / 'lake'
    data = events(50).drop_columns(['vec', 'meta'])
    data = data.append_column('country', pa.array([COUNTRIES[i % 3] for i in range(50)]))
    deltalake.write_deltalake(str(root / 'sales'), data, partition_by=['country'])
    db = superduper(f'file://{root}')
    coll = Collection('sales')
    assert db.execute(coll.count({'country': 'it', 'amount': {'$gt': 5}})) == len(
        [i for i in range(50) if i % 3 == 2 and i % 17 > 5]
    )
    db.execute(coll.insert_many([{'id': 100, 'text': 'new sale', 'amount': 3.0, 'country': 'fr'}]))
    table = deltalake.DeltaTable(str(root / 'sales'))
    assert table.version() == 1 and table.to_pyarrow_table().num_rows == 51  # one Delta commit
    report = superduper(lambda t: t.upper(), identifier='upper').predict(X='text', db=db, select=coll.find())
    assert report.computed == 51
    assert db.execute(coll.find_one({'id': 100}))['_outputs']['text']['upper'] == 'NEW SALE'
    with pytest.raises(NotSupported):
        db.execute(coll.delete_many({}))
    db.close()


def test_a_delta_lake_uri_makes_new_tables_delta(tmp_path):
    deltalake = pytest.importorskip('deltalake')
    db = superduper(f'delta://{tmp_path}/lake')
    db.execute(Collection('t').insert_many([{'x': i} for i in range(3)]))
    assert deltalake.DeltaTable(f'{tmp_path}/lake/t').to_pyarrow_table().num_rows == 3
    assert db.execute(Collection('t').count({'x': {'$gt': 0}})) == 2
    db.close()


def test_iceberg_tables_are_read(tmp_path):
    pytest.importorskip('pyiceberg')
    from pyiceberg.catalog.sql import SqlCatalog

    root = tmp_path / 'lake'
    root.mkdir()
    catalog = SqlCatalog(
        'pipeline', uri=f'sqlite:///{tmp_path}/catalog.db', warehouse=f'file://{tmp_path}/warehouse'
    )
    catalog.create_namespace('shop')
    data = events(40).drop_columns(['vec', 'meta'])
    table = catalog.create_table('shop.orders', schema=data.schema, location=f'file://{root}/orders')
    table.append(data)
    table.append(events(10, start=40).drop_columns(['vec', 'meta']))
    db = superduper(f'file://{root}')
    coll = Collection('orders')
    assert db.execute(coll.count()) == 50
    assert sorted(d['id'] for d in db.execute(coll.find({'amount': {'$gte': 15}}))) == [
        i for i in range(50) if i % 17 >= 15
    ]
    report = superduper(lambda a: a + 1, identifier='inc').predict(X='amount', db=db, select=coll.find())
    assert report.computed == 50
    with pytest.raises(NotSupported, match='Iceberg table'):
        db.execute(coll.insert_many([{'id': 99}]))
    db.close()


# ----- object storage ------------------------------------------------------------------
@pytest.fixture
def s3(monkeypatch, tmp_path):
    """A fresh bucket on the local S3 server; superduperdb's local metadata cache under tmp_path."""
    pytest.importorskip('s3fs')
    pytest.importorskip('moto')
    from tests import s3_server

    s3_server.start()
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'cache'))
    return s3_server.bucket(f'lake-{uuid.uuid4().hex[:8]}')


def _put_parquet(url: str, data: pa.Table) -> None:
    import s3fs

    fs = s3fs.S3FileSystem()
    with fs.open(url, 'wb') as f:
        pq.write_table(data, f)


def test_a_bucket_is_a_lake(s3, tmp_path):
    _put_parquet(f'{s3}/lake/events/part-0.parquet', events(60))
    with CFG.override(artifact_store=None, metadata_store=None):
        db = superduper(f'{s3}/lake')
    coll = Collection('events')
    assert db.execute(coll.count({'amount': {'$lt': 3}})) == len([i for i in range(60) if i % 17 < 3])
    db.execute(coll.insert_many([{'id': 500, 'text': 'from s3', 'amount': 1.0}]))
    report = superduper(lambda t: len(t), identifier='len').predict(X='text', db=db, select=coll.find())
    assert report.computed == 61
    import s3fs

    fs = s3fs.S3FileSystem()
    out = output_table('events', 'text', 'len')
    assert fs.ls(f'{s3}/lake/{out}')  # the outputs are Parquet in the bucket
    assert db.execute(coll.find_one({'id': 500}))['_outputs']['text']['len'] == 7
    # the model's artifacts went to the bucket too, the metadata to the local cache
    assert fs.find(f'{s3}/lake/_superduper/artifacts')
    assert list((tmp_path / 'cache' / 'superduperdb' / 'lakes').glob('*/metadata.db'))
    # a file landing in the bucket is picked up by change capture
    superduper(lambda t: len(t), identifier='len').predict(X='text', db=db, select=coll.find(), watch=True)
    db.cdc.poll_once()
    _put_parquet(f'{s3}/lake/events/part-late.parquet', events(2, start=700))
    assert db.cdc.poll_once(reconcile=False)['inserted'] == 2
    assert db.execute(coll.find_one({'id': 701}))['_outputs']['text']['len'] == len('event number 701')
    db.close()


def test_a_delta_table_in_a_bucket(s3):
    deltalake = pytest.importorskip('deltalake')
    from superduperdb.backends.lake.formats import object_store_options

    data = events(20).drop_columns(['vec', 'meta'])
    deltalake.write_deltalake(f'{s3}/lake/sales', data, storage_options=object_store_options(s3))
    db = superduper(f'{s3}/lake')
    coll = Collection('sales')
    assert db.execute(coll.count({'amount': {'$gte': 10}})) == len([i for i in range(20) if i % 17 >= 10])
    db.execute(coll.insert_many([{'id': 99, 'text': 'in the bucket', 'amount': 1.0}]))
    table = deltalake.DeltaTable(f'{s3}/lake/sales', storage_options=object_store_options(s3))
    assert table.version() == 1 and table.to_pyarrow_table().num_rows == 21
    db.close()


def test_an_iceberg_table_in_a_bucket(s3, tmp_path):
    """An Iceberg table written by pyiceberg (a SQL catalog, its warehouse in the bucket) is read
    from S3: its current snapshot's files, appended after the first read included."""
    pytest.importorskip('pyiceberg')
    import os

    from pyiceberg.catalog.sql import SqlCatalog

    catalog = SqlCatalog(
        'pipeline',
        uri=f'sqlite:///{tmp_path}/catalog.db',
        warehouse=f'{s3}/warehouse',
        **{'s3.endpoint': os.environ['AWS_ENDPOINT_URL'], 's3.region': 'us-east-1'},
    )
    catalog.create_namespace('shop')
    data = events(30).drop_columns(['vec', 'meta'])
    table = catalog.create_table('shop.orders', schema=data.schema, location=f'{s3}/lake/orders')
    table.append(data)
    db = superduper(f'{s3}/lake')
    coll = Collection('orders')
    assert db.execute(coll.count()) == 30
    assert sorted(d['id'] for d in db.execute(coll.find({'amount': {'$lt': 2}}))) == [
        i for i in range(30) if i % 17 < 2
    ]
    table.append(events(5, start=30).drop_columns(['vec', 'meta']))  # a new snapshot
    assert db.execute(coll.count()) == 35
    report = superduper(lambda a: a * 2, identifier='twice').predict(X='amount', db=db, select=coll.find())
    assert report.computed == 35
    assert db.execute(coll.find_one({'id': 33}))['_outputs']['amount']['twice'] == 2 * (33 % 17)
    with pytest.raises(NotSupported, match='Iceberg table'):
        db.execute(coll.insert_many([{'id': 99}]))
    db.close()


def test_artifact_store_in_a_bucket(s3, tmp_path):
    with CFG.override(artifact_store=f'{s3}/models', metadata_store=None):
        db = superduper(f'sqlite:///{tmp_path}/app.db')
        model = db.add(superduper(_fitted_classifier(), identifier='clf'))
        again = superduper(f'sqlite:///{tmp_path}/app.db')
        loaded = again.load('model', 'clf')
    x = np.ones((1, 4), dtype='float32')
    assert loaded.predict_values([x[0]]) == model.predict_values([x[0]])
    import s3fs

    assert len(s3fs.S3FileSystem().find(f'{s3}/models')) >= 1
    db.close()
    again.close()


def test_s3_data_references_are_fetched_by_jobs(s3, tmp_path):
    import io

    from PIL import Image

    from superduperdb.encoders.pillow import pil_image

    buffer = io.BytesIO()
    Image.new('RGB', (4, 3), 'blue').save(buffer, format='PNG')
    import s3fs

    s3fs.S3FileSystem().pipe(f'{s3}/images/blue.png', buffer.getvalue())
    db = superduper(f'sqlite:///{tmp_path}/app.db')
    result = db.execute(Collection('pics').insert_many([{'img': pil_image(uri=f'{s3}/images/blue.png')}]))
    assert all(job.status == 'success' for job in result.jobs)
    assert db.execute(Collection('pics').find_one())['img'].x.size == (4, 3)
    db.close()


def test_lancedb_lives_in_the_bucket(s3, lake):
    from superduperdb.models.precomputed import Precomputed

    with CFG.override(vector_search={'engine': 'lancedb', 'path': f'{s3}/vectors'}):
        lake.add(
            VectorIndex(
                'ev',
                indexing_watcher=Watcher(
                    model=Precomputed('pipeline', dimensions=4), key='vec', select=Collection('events').find()
                ),
            )
        )
        query = events(300)['vec'][42].values.to_numpy()
        found = list(lake.execute(Collection('events').like(query, 'ev', n=1)))
    assert found[0]['id'] == 42
    import s3fs

    assert any(p.endswith('.lance') for p in s3fs.S3FileSystem().ls(f'{s3}/vectors'))


def test_a_missing_s3_package_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, 's3fs', None)  # as if not installed: importing it fails
    with pytest.raises(MissingDependencyError, match=r"pip install 'superduperdb\[s3\]'"):
        superduper('s3://some-bucket/lake')


def test_an_s3_artifact_store_without_s3fs_names_the_extra(monkeypatch, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, 's3fs', None)
    with (
        CFG.override(artifact_store='s3://models/prefix', metadata_store=None),
        pytest.raises(MissingDependencyError, match=r"The artifact store 's3://models/prefix' needs 's3fs'"),
    ):
        superduper(f'sqlite:///{tmp_path}/app.db')
