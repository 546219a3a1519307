"""scikit-learn as a user meets it (issue 14): images and arrays reach it as 2-D feature
matrices, fit takes metrics= and validation_select= as torch does, and the seed's
OpenAIEmbedding name exists."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.svm import SVC

from superduperdb import Collection, Document, Metric, superduper
from superduperdb.base.exceptions import ConfigError, QueryError
from superduperdb.components.metric import accuracy
from superduperdb.encoders.numpy import array
from superduperdb.encoders.pillow import pil_image


@pytest.fixture
def digits(db, table_name):
    """The README's digits: 8x8 pil_image rows with a label and a fold."""
    data = load_digits()
    coll = Collection(table_name)
    docs = [
        Document(
            {
                'img': pil_image(PIL.Image.fromarray((data.images[i] * 15).astype('uint8'), mode='L')),
                'label': int(data.target[i]),
                '_fold': 'valid' if i % 5 == 0 else 'train',
            }
        )
        for i in range(150)
    ]
    db.execute(coll.insert_many(docs))
    return db, coll


def test_the_readme_quick_start_on_images(digits):
    db, coll = digits
    model = superduper(SVC())
    model.fit(X='img', y='label', db=db, select=coll.find({'_fold': 'train'}))
    assert model.metrics['train_score'] > 0.9
    report = model.predict(X='img', db=db, select=coll.find({'_fold': 'valid'}))
    assert (report.computed, report.failed) == (30, 0)
    rows = list(db.execute(coll.find({'_fold': 'valid'})))
    hits = sum(r['_outputs']['img']['SVC'] == r['label'] for r in rows)
    assert hits / len(rows) > 0.8
    job = model.predict(X='img', db=db, select=coll.find(), watch=True)
    assert job.status == 'success' and job.outcome == 'success'
    result = db.execute(coll.insert_one(Document({'img': pil_image(PIL.Image.new('L', (8, 8)))})))
    assert [j.outcome for j in result.jobs] == ['success']
    new = db.execute(coll.find_one({'_id': result.ids[0]}))
    assert new['_outputs']['img']['SVC'] in range(10)


def test_arrays_and_scalars_become_feature_matrices(db, table_name):
    coll = Collection(table_name)
    grid = array('float32', (2, 3))
    rng = np.random.default_rng(0)
    docs = [
        Document({'grid': grid(rng.normal(size=(2, 3)).astype('float32') + i % 2), 'n': float(i), 'y': i % 2})
        for i in range(40)
    ]
    db.execute(coll.insert_many(docs))
    on_grid = superduper(LogisticRegression(), identifier='on_grid')
    on_grid.fit(X='grid', y='y', db=db, select=coll.find())
    assert on_grid.predict(X='grid', db=db, select=coll.find()).failed == 0
    on_scalar = superduper(LogisticRegression(), identifier='on_scalar')
    on_scalar.fit(X='n', y='y', db=db, select=coll.find())  # one scalar feature: a column
    assert on_scalar.predict(X='n', db=db, select=coll.find()).failed == 0


def test_fit_takes_metrics_and_validation_select(digits):
    db, coll = digits

    def errors(predictions, targets):
        return float(sum(p != t for p, t in zip(predictions, targets)))

    model = superduper(LogisticRegression(max_iter=500), identifier='clf')
    model.fit(
        X='img',
        y='label',
        db=db,
        select=coll.find({'_fold': 'train'}),
        validation_select=coll.find({'_fold': 'valid'}),
        metrics=[Metric('accuracy', object=accuracy), errors],
    )
    m = db.load('model', 'clf').metrics
    assert m['trained_on'] == 120
    assert 0.8 < m['valid_accuracy'] <= 1.0
    assert m['valid_score'] == pytest.approx(m['valid_accuracy'])
    assert m['valid_errors'] == pytest.approx(30 * (1 - m['valid_accuracy']))
    with pytest.raises(QueryError, match='validation_select='):
        model.fit(X='img', y='label', db=db, select=coll.find(), metrics=[errors])
    with pytest.raises(ConfigError, match='metrics= takes'):
        model.fit(X='img', y='label', db=db, select=coll.find(), validation_select=coll.find(), metrics=[3])


def test_images_of_different_sizes_get_a_clear_error():
    model = superduper(SVC())
    with pytest.raises(QueryError, match='one shape.*preprocess='):
        model.fit([PIL.Image.new('L', (8, 8)), PIL.Image.new('L', (4, 4))], [0, 1])


def test_openai_embedding_is_the_seeds_name():
    from superduperdb import OpenAIEmbedding
    from superduperdb.models.openai import OpenAIModel

    model = OpenAIEmbedding()
    assert isinstance(model, OpenAIModel)
    assert (model.identifier, model.task) == ('text-embedding-3-small', 'embedding')
    other = OpenAIEmbedding('emb', model='text-embedding-3-large', dimensions=256)
    assert (other.identifier, other.model, other.dimensions) == ('emb', 'text-embedding-3-large', 256)
