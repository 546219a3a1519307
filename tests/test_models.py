"""Models over the database on every backend: fit, predict, outputs written back, incremental."""

from __future__ import annotations

import numpy as np
import pytest

from superduperdb import Collection, Document, superduper
from superduperdb.base.exceptions import NotSupported, QueryError
from superduperdb.encoders.pillow import pil_image


def image_to_vector(image) -> np.ndarray:
    """Preprocessing for the digits: a PIL image back to the 64 pixel intensities."""
    return np.asarray(image, dtype='float32').reshape(-1) / 16.0


def insert_digits(db, name: str, n: int = 600) -> Collection:
    import PIL.Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    coll = Collection(name)
    docs = [
        Document(
            {
                'img': pil_image(PIL.Image.fromarray((digits.images[i] * 16).clip(0, 255).astype('uint8'))),
                'label': int(digits.target[i]),
                '_fold': 'valid' if i % 5 == 0 else 'train',
            }
        )
        for i in range(n)
    ]
    db.execute(coll.insert_many(docs))
    return coll


def test_svc_on_digit_images_stored_in_the_database(db, table_name):
    from sklearn.svm import SVC

    coll = insert_digits(db, table_name)
    model = superduper(SVC(gamma=0.001), preprocess=image_to_vector)
    model.fit(X='img', y='label', db=db, select=coll.find({'_fold': 'train'}))
    assert model.version == 0 and model.metrics['trained_on'] == 480
    report = model.predict(X='img', db=db, select=coll.find({'_fold': 'valid'}))
    assert (report.computed, report.failed, report.total) == (120, 0, 120)
    valid = list(db.execute(coll.find({'_fold': 'valid'})))
    accuracy = np.mean([d['_outputs']['img']['SVC'] == d['label'] for d in valid])
    assert accuracy >= 0.9, accuracy
    train_doc = db.execute(coll.find_one({'_fold': 'train'}))
    assert 'SVC' not in train_doc.get('_outputs', {}).get('img', {})
    # a second process (fresh Datalayer) loads the trained model from the database
    loaded = type(db)(db.databackend, db.metadata, db.artifact_store).load('model', 'SVC')
    assert loaded.predict([valid[0]['img'].x]) == [valid[0]['_outputs']['img']['SVC']]


@pytest.mark.notimpl(
    ['lake'], raises=NotSupported, reason='lake tables are append-only: updates and deletes are refused'
)
def test_predict_is_incremental_and_idempotent(db, table_name):
    coll = Collection(table_name)
    db.execute(coll.insert_many([{'text': f'word {i}', 'other': i} for i in range(50)]))
    calls = []

    def count_chars(text):
        calls.append(text)
        return len(text)

    model = superduper(count_chars)
    first = model.predict(X='text', db=db, select=coll.find(), chunk_size=16)
    assert (first.computed, first.skipped) == (50, 0) and len(calls) == 50
    again = model.predict(X='text', db=db, select=coll.find(), chunk_size=16)
    assert (again.computed, again.skipped) == (0, 50) and len(calls) == 50
    db.execute(coll.update_many({'other': {'$lt': 3}}, {'$set': {'text': 'changed!'}}))
    db.execute(coll.update_many({'other': {'$gte': 40}}, {'$set': {'other': -1}}))  # unrelated column
    db.execute(coll.insert_one({'text': 'new', 'other': 100}))
    third = model.predict(X='text', db=db, select=coll.find())
    assert (third.computed, third.skipped) == (4, 47)
    assert db.execute(coll.find_one({'other': 0}))['_outputs']['text']['count_chars'] == 8
    assert model.predict(X='text', db=db, select=coll.find(), overwrite=True).computed == 51


@pytest.mark.notimpl(
    ['lake'], raises=NotSupported, reason='lake tables are append-only: updates and deletes are refused'
)
def test_failing_rows_go_to_the_ledger_and_are_retried(db, table_name):
    coll = Collection(table_name)
    db.execute(coll.insert_many([{'n': i} for i in range(30)]))

    def inverse(n):
        return 1.0 / (n % 10)  # ZeroDivisionError on 0, 10, 20

    model = superduper(inverse)
    report = model.predict(X='n', db=db, select=coll.find(), chunk_size=7)
    assert (report.computed, report.failed) == (27, 3)
    assert all('ZeroDivisionError' in e for e in report.errors.values())
    from superduperdb.store.outputs import output_table

    ledger = db.metadata.failures(output_table(table_name, 'n', 'inverse'))
    assert sorted((r['error'], r['attempts']) for r in ledger) == [('ZeroDivisionError', 1)] * 3
    rerun = model.predict(X='n', db=db, select=coll.find())
    assert (rerun.computed, rerun.skipped, rerun.failed) == (0, 27, 3)
    assert {r['attempts'] for r in db.metadata.failures(output_table(table_name, 'n', 'inverse'))} == {2}
    db.execute(coll.update_many({'n': {'$in': [0, 10, 20]}}, {'$inc': {'n': 1}}))
    fixed = model.predict(X='n', db=db, select=coll.find())
    assert (fixed.computed, fixed.failed) == (3, 0)
    assert db.metadata.failures(output_table(table_name, 'n', 'inverse')) == []


def test_crash_mid_predict_resumes_where_it_stopped(db, table_name):
    coll = Collection(table_name)
    db.execute(coll.insert_many([{'n': i} for i in range(40)]))
    seen = []

    def fragile(n):
        if len(seen) == 25:
            raise KeyboardInterrupt  # not an Exception: the whole job stops, like a crash
        seen.append(n)
        return n * 2

    model = superduper(fragile, batch_size=5)
    with pytest.raises(KeyboardInterrupt):
        model.predict(X='n', db=db, select=coll.find(), chunk_size=10)
    seen.clear()
    seen.extend([None] * -100)  # never 25 again in this test
    resumed = model.predict(X='n', db=db, select=coll.find(), chunk_size=10)
    assert (resumed.computed, resumed.skipped) == (20, 20)  # two chunks were committed
    assert sorted(d['_outputs']['n']['fragile'] for d in db.execute(coll.find())) == [
        2 * i for i in range(40)
    ]


def test_keys_tuples_base_and_features(db, table_name):
    coll = Collection(table_name)
    db.execute(coll.insert_many([{'a': i, 'b': 10 * i, 'meta': {'c': i + 0.5}} for i in range(5)]))
    superduper(lambda a, b: a + b, identifier='add').predict(X=('a', 'b'), db=db, select=coll.find())
    superduper(lambda c: c * 2, identifier='twice').predict(X='meta.c', db=db, select=coll.find())
    superduper(lambda d: sorted(d), identifier='keys').predict(X='_base', db=db, select=coll.find())
    superduper(lambda v: np.full(3, v, dtype='float64'), identifier='vec').predict(
        X='a', db=db, select=coll.find()
    )
    superduper(lambda v: float(v.sum()), identifier='total').predict(
        X='a', db=db, select=coll.find(), features={'a': 'vec'}
    )
    doc = db.execute(coll.find_one({'a': 2}))
    outputs = doc['_outputs']
    assert outputs['a,b']['add'] == 22
    assert outputs['meta.c']['twice'] == 5.0
    assert outputs['_base']['keys'] == ['_id', 'a', 'b', 'meta']
    assert outputs['a']['vec'].x.tolist() == [2.0, 2.0, 2.0]
    assert outputs['a']['total'] == 6.0
    assert 'numpy.float64[3]' in db.show('encoder')


@pytest.mark.notimpl(
    ['lake'], raises=NotSupported, reason='lake tables are append-only: updates and deletes are refused'
)
def test_deleted_rows_lose_their_outputs(db, table_name):
    coll = Collection(table_name)
    db.execute(coll.insert_many([{'n': i} for i in range(6)]))
    neg = superduper(lambda n: -n, identifier='neg')
    neg.predict(X='n', db=db, select=coll.find())
    db.execute(coll.delete_many({'n': {'$lt': 3}}))
    db.execute(coll.insert_many([{'n': i} for i in range(3)]))  # same values, new rows
    report = neg.predict(X='n', db=db, select=coll.find())
    from superduperdb.store.outputs import output_table

    assert db.databackend.count(output_table(table_name, 'n', 'neg'), {}) == 6  # none left over
    assert (report.computed, report.skipped) == (3, 3)


def test_predict_on_values_and_clear_errors(db, table_name):
    from sklearn.linear_model import LogisticRegression

    model = superduper(LogisticRegression()).fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
    assert model.predict(np.array([[0.1], [2.9]])) == [0, 1]
    with pytest.raises(QueryError, match='pass db= and select='):
        model.predict(X='x')
    with pytest.raises(QueryError, match='needs select='):
        model.predict(X='x', db=db)
    with pytest.raises(QueryError, match='X must be a key'):
        model.predict(X=3, db=db, select=Collection(table_name).find())
    with pytest.raises(QueryError, match='selects no rows|does not exist'):  # SQL names the table
        model.fit(X='x', y='y', db=db, select=Collection(table_name).find())
    with pytest.raises(Exception, match='needs a name'):
        superduper(lambda x: x)


def test_fitting_a_loaded_version_keeps_that_version_loadable(db, table_name):
    """A fit trains the model in place and stores it as a new version; loading the old version
    still gives the old version, not the object that became the new one."""
    from sklearn.linear_model import LogisticRegression

    coll = Collection(table_name)
    db.execute(coll.insert_many([{'x': [float(i)], 'y': int(i >= 2)} for i in range(4)]))
    db.add(superduper(LogisticRegression(), identifier='clf'))
    loaded = db.load('model', 'clf', 0)
    trained = loaded.fit(X='x', y='y', db=db, select=coll.find())
    assert trained is loaded and trained.version == 1
    assert db.load('model', 'clf', 1) is trained
    old = db.load('model', 'clf', 0)
    assert old is not trained and old.version == 0 and 'trained_on' not in old.metrics


def _predict_both_ways(db, coll, make_model, monkeypatch, **kwargs):
    """Predict with the column-wise fast path ('fast') and with it turned off ('rows')."""
    from superduperdb.predict import readers as predict

    fast = make_model('fast').predict(X='vec', db=db, select=coll.find(), **kwargs)
    with monkeypatch.context() as m:
        m.setattr(predict, '_column_encoder', lambda *args: None)  # every row as a document
        rows = make_model('rows').predict(X='vec', db=db, select=coll.find(), **kwargs)
    return fast, rows


def _stored(db, table, model):
    """{source id: (model version, input fingerprint)} of a model's outputs on 'vec'."""
    from superduperdb.store.outputs import output_table

    ids = [d['_id'] for d in db.execute(Collection(table).find({}, {'_id': 1}))]
    return db.outputs.fingerprints(output_table(table, 'vec', model), ids)


def test_text_and_number_columns_are_read_column_wise_with_the_same_fingerprints(db, table_name, monkeypatch):
    """A plain column (text, numbers) is read column-wise where the backend can: the same outputs
    and the same input fingerprints as row by row, so switching paths recomputes nothing."""
    from superduperdb.predict import readers as predict

    coll = Collection(table_name)
    texts = ['plain', 'héllo wörld ✓', '', 'x' * 3000, None, 'plain']
    db.execute(coll.insert_many([{'n': i, 'text': t} for i, t in enumerate(texts)]))
    plain_chunks = []
    original = predict._plain_chunks
    monkeypatch.setattr(predict, '_plain_chunks', lambda *a: plain_chunks.append(1) or original(*a))

    def both(make):
        fast = make('fast').predict(X='text', db=db, select=coll.find(), chunk_size=4)
        with monkeypatch.context() as m:
            m.setattr(predict, '_plain_column', lambda *args: False)  # every row as a document
            rows = make('rows').predict(X='text', db=db, select=coll.find(), chunk_size=4)
        return fast, rows

    models = {name: superduper(lambda t: len(t or ''), identifier=f'len-{name}') for name in ('fast', 'rows')}
    fast, rows = both(models.get)
    assert (
        bool(plain_chunks) == db.databackend.capabilities.column_reads
    )  # the fast path ran where it applies
    assert (fast.computed, fast.total) == (rows.computed, rows.total) == (6, 6)
    by_n = {d['n']: d['_outputs']['text'] for d in db.execute(coll.find())}
    assert all(by_n[i]['len-fast'] == by_n[i]['len-rows'] == len(t or '') for i, t in enumerate(texts))
    from superduperdb.store.outputs import output_table

    ids = [d['_id'] for d in db.execute(coll.find())]
    prints = {
        name: db.outputs.fingerprints(output_table(table_name, 'text', f'len-{name}'), ids)
        for name in ('fast', 'rows')
    }
    assert {k: v[1] for k, v in prints['fast'].items()} == {k: v[1] for k, v in prints['rows'].items()}
    # and the other way round: a rerun on the fast path finds every row current
    again = models['rows'].predict(X='text', db=db, select=coll.find())
    assert again.computed == 0 and again.skipped == 6


@pytest.mark.notimpl(
    ['lake'], raises=NotSupported, reason='lake tables are append-only: updates and deletes are refused'
)
def test_array_columns_are_read_column_wise_with_the_same_results(db, table_name, monkeypatch):
    """The column-wise fast path (SQL, fixed-shape array column) gives what row-by-row gives."""
    from sklearn.linear_model import LogisticRegression

    from superduperdb.encoders.numpy import array
    from superduperdb.store import encoding
    from superduperdb.store.outputs import output_table

    rng = np.random.default_rng(0)
    X = rng.normal(size=(45, 2, 3)).astype('float32')
    X[7, 0, 0] = 100.0  # the row the function model fails on
    vec = array('float32', (2, 3))
    coll = Collection(table_name)
    db.execute(coll.insert_many([Document({'vec': vec(X[i]), 'n': i}) for i in range(45)]))
    db.execute(coll.insert_one({'n': 45}))  # no vector: its chunk is decoded row by row
    fast_chunks = []
    decode_column = encoding.decode_column
    monkeypatch.setattr(encoding, 'decode_column', lambda *a: fast_chunks.append(1) or decode_column(*a))

    def total(v):
        if v[0, 0] > 50:
            raise ValueError('too large')
        return float(v.sum())

    fast, rows = _predict_both_ways(
        db, coll, lambda name: superduper(total, identifier=f'sum-{name}'), monkeypatch, chunk_size=10
    )
    assert bool(fast_chunks) != db.databackend.self_describing  # the fast path ran where it applies
    for report in (fast, rows):
        assert (report.computed, report.failed, report.total) == (44, 2, 46)
    assert {k: v.split(':')[0] for k, v in fast.errors.items()} == {
        k: v.split(':')[0] for k, v in rows.errors.items()
    }
    clf = LogisticRegression().fit(X.reshape(45, -1), (X[:, 0, 1] > 0).astype(int))
    _predict_both_ways(db, coll, lambda name: superduper(clf, identifier=f'clf-{name}'), monkeypatch)
    _predict_both_ways(
        db, coll, lambda name: superduper(lambda v: v[1] * 2, identifier=f'vec-{name}'), monkeypatch
    )
    docs = list(db.execute(coll.find({'n': {'$lt': 45}})))
    assert len(docs) == 45
    for doc in docs:
        out, x = doc['_outputs']['vec'], X[doc['n']]
        expected = None if doc['n'] == 7 else pytest.approx(float(x.sum()))
        assert out.get('sum-fast') == out.get('sum-rows') == expected
        assert out['clf-fast'] == out['clf-rows'] == clf.predict(x.reshape(1, -1))[0]
        assert out['vec-fast'].x.tolist() == out['vec-rows'].x.tolist() == (x[1] * 2).tolist()
    for name in ('sum', 'clf', 'vec'):  # same fingerprints: either path sees the other's outputs as current
        assert _stored(db, table_name, f'{name}-fast') == _stored(db, table_name, f'{name}-rows')
    ledger = db.metadata.failures(output_table(table_name, 'vec', 'sum-fast'))
    assert sorted(r['error'] for r in ledger) == ['TypeError', 'ValueError']

    # one vector changes: a rerun computes that row only (and retries the two failures)
    X[3] = -X[3]
    db.execute(coll.update_one({'n': 3}, {'$set': {'vec': vec(X[3])}}))
    fast_chunks.clear()
    fast, rows = _predict_both_ways(
        db, coll, lambda name: superduper(total, identifier=f'sum-{name}'), monkeypatch, chunk_size=10
    )
    assert bool(fast_chunks) != db.databackend.self_describing
    for report in (fast, rows):
        assert (report.computed, report.skipped, report.failed) == (1, 43, 2)
    changed = db.execute(coll.find_one({'n': 3}))['_outputs']['vec']
    assert changed['sum-fast'] == changed['sum-rows'] == pytest.approx(float(X[3].sum()))
    assert _stored(db, table_name, 'sum-fast') == _stored(db, table_name, 'sum-rows')


def test_decode_column_leaves_odd_values_to_the_row_by_row_path():
    from superduperdb.base import references
    from superduperdb.encoders.numpy import array
    from superduperdb.store.encoding import decode_column

    enc = array('float32', (2, 3))
    values = [enc.encode(np.full((2, 3), i, dtype='float32')) for i in range(4)]
    decoded = decode_column(enc, values)
    assert [d.tolist() for d in decoded] == [enc.decode(v).tolist() for v in values]
    assert decoded[1:3].stacked.shape == (2, 2, 3)  # slices keep the stacked array
    reference = references.to_stored('s3://b')  # a URI of exactly the width of a value
    assert len(reference) == len(values[0])
    assert decode_column(enc, [*values, reference]) is None
    assert decode_column(enc, [*values, None]) is None
    assert decode_column(enc, [*values, values[0][:-4]]) is None
    assert decode_column(array('float32', 3), [b'\x00' * 12]) is not None  # zeros are no reference


def test_predict_reports_progress_after_each_chunk(db, table_name):
    from superduperdb.predict.over_query import predict_over_query

    coll = Collection(table_name)
    db.execute(coll.insert_many([{'n': i} for i in range(25)]))
    model = superduper(lambda n: n + 1, identifier='inc')
    calls = []
    predict_over_query(
        db,
        model,
        key='n',
        select=coll.find(),
        features={},
        chunk_size=10,
        progress=lambda *a: calls.append(a),
    )
    # the total at once, then each chunk (within a chunk, at most every 0.25 s: none here)
    assert sorted(set(calls)) == [(0, 25), (10, 25), (20, 25), (25, 25)]
    assert calls == sorted(calls) and calls[-1] == (25, 25)
    calls.clear()
    predict_over_query(
        db,
        model,
        key='n',
        select=coll.find().limit(15),
        features={},
        chunk_size=10,
        progress=lambda *a: calls.append(a),
    )
    assert calls == [(0, None), (10, None), (15, None)]  # a limit: no count, the total unknown
