"""A newcomer's first hour (issue 32): what the original examples and a first notebook need.

- ``_fold``: every row is ``'train'`` or ``'valid'`` in filters, derived from its key, on every
  backend and lake, overridden by a table's own ``_fold`` (items 1);
- an image comes back as the class it was inserted as (item 2);
- an unfitted scikit-learn model is refused before it runs (item 8);
- ``db.show('modle')`` is an error with a suggestion (item 9);
- a cursor shows a preview in a notebook and still gives every row (item 10);
- ``with superduper(...) as db:`` and a closed db refusing use (item 15).
"""

from __future__ import annotations

import numpy as np
import pytest

from superduperdb import CFG, Collection, Document, superduper
from superduperdb.base.exceptions import DatalayerClosed, QueryError
from superduperdb.base.folds import fold_of

EVERY_BACKEND = ['sqlite', 'duckdb', 'postgres', 'mysql', 'mongodb', 'lake']


def by_fold(db, coll, flt=None) -> dict[str, list]:
    return {
        fold: sorted(d['n'] for d in db.execute(coll.find({**(flt or {}), '_fold': fold})))
        for fold in ('train', 'valid')
    }


# ----- item 1: _fold --------------------------------------------------------------------------
@pytest.mark.parametrize('backend', EVERY_BACKEND, indirect=True)
def test_every_row_has_a_fold_derived_from_its_key(db, table_name):
    """``coll.find({'_fold': 'train'})`` on a table without a ``_fold`` column (SQL said "Unknown
    column '_fold'", MongoDB selected no rows): the two folds split the rows, as fold_of says."""
    coll = Collection(table_name)
    ids = db.execute(coll.insert_many([{'n': i, 'even': i % 2 == 0} for i in range(200)])).ids
    folds = by_fold(db, coll)
    expected = {'valid': sorted(i for i, k in enumerate(ids) if fold_of(k) == 'valid')}
    assert folds['valid'] == expected['valid'] and 5 <= len(folds['valid']) <= 45  # 10% of 200
    assert sorted(folds['train'] + folds['valid']) == list(range(200))
    assert db.execute(coll.count({'_fold': 'valid'})) == len(folds['valid'])
    assert db.execute(coll.count({'_fold': {'$in': ['train', 'valid']}})) == 200
    assert db.execute(coll.count({'_fold': {'$ne': 'valid'}})) == len(folds['train'])
    # beside other conditions, and read by find_one
    even = by_fold(db, coll, {'even': True})
    assert even['valid'] == [n for n in folds['valid'] if n % 2 == 0]
    assert db.execute(coll.find_one({'_fold': 'valid'}))['n'] in folds['valid']
    # the same answer on a second read: stable
    assert by_fold(db, coll) == folds


@pytest.mark.parametrize('backend', EVERY_BACKEND, indirect=True)
def test_a_tables_own_fold_column_overrides_the_derived_one(db, table_name):
    own = Collection(table_name)
    db.execute(own.insert_many([{'n': i, '_fold': 'valid' if i < 3 else 'train'} for i in range(40)]))
    assert by_fold(db, own) == {'train': list(range(3, 40)), 'valid': [0, 1, 2]}
    derived = Collection(f'{table_name}_d')  # beside it, a table without: derived
    ids = db.execute(derived.insert_many([{'n': i} for i in range(40)])).ids
    assert by_fold(db, derived)['valid'] == [i for i, k in enumerate(ids) if fold_of(k) == 'valid']


@pytest.mark.parametrize('backend', ['sqlite', 'postgres', 'mongodb'], indirect=True)
def test_updates_and_deletes_select_by_fold(db, table_name):
    coll = Collection(table_name)
    db.execute(coll.insert_many([{'n': i} for i in range(100)]))
    valid = by_fold(db, coll)['valid']
    assert valid
    assert db.execute(coll.update_many({'_fold': 'valid'}, {'$set': {'seen': 1}})).count == len(valid)
    assert sorted(d['n'] for d in db.execute(coll.find({'seen': 1}))) == valid
    assert db.execute(coll.delete_many({'_fold': 'valid'})).count == len(valid)
    assert db.execute(coll.count({})) == 100 - len(valid)


def test_the_valid_fraction_is_a_setting_and_raising_it_only_moves_rows_to_valid(tmp_path):
    with superduper(f'sqlite:///{tmp_path}/f.db') as db:
        coll = Collection('rows')
        db.execute(coll.insert_many([{'n': i} for i in range(400)]))
        small = by_fold(db, coll)['valid']
        with CFG.override(**{'fold.valid_fraction': 0.5}):
            half = by_fold(db, coll)['valid']
        with CFG.override(**{'fold.valid_fraction': 1.0}):
            assert by_fold(db, coll) == {'train': [], 'valid': list(range(400))}
    assert 150 <= len(half) <= 250 and set(small) < set(half)


@pytest.mark.parametrize('backend', ['sqlite', 'mongodb'], indirect=True)
def test_a_find_on_fold_splits_20k_rows_into_train_and_valid(db, table_name):
    """The split at scale (its cost against a plain find: benchmarks/folds.py)."""
    coll = Collection(table_name)
    db.execute(coll.insert_many([{'n': i} for i in range(20_000)]))
    train = {d['n'] for d in db.execute(coll.find({'_fold': 'train'}))}
    valid = {d['n'] for d in db.execute(coll.find({'_fold': 'valid'}))}
    assert not train & valid and len(train | valid) == 20_000 and 1500 <= len(valid) <= 2500
    assert db.execute(coll.count({'_fold': 'valid'})) == len(valid)


def test_the_readmes_digits_example_runs_on_rows_without_a_fold_column(tmp_path):
    """The README's second block on digits inserted as a newcomer would: no ``_fold`` column."""
    import PIL.Image
    from sklearn.datasets import load_digits
    from test_readme import quick_start_blocks

    from superduperdb.encoders.pillow import pil_image

    digits = load_digits()
    images = (digits.images * (255 / 16)).astype(np.uint8)
    with (
        CFG.override(artifact_store=f'filesystem://{tmp_path}/artifacts'),
        superduper(f'sqlite:///{tmp_path}/d.db') as db,
    ):
        rows = [
            Document({'img': pil_image(PIL.Image.fromarray(image, mode='L')), 'label': int(label)})
            for image, label in zip(images[:300], digits.target[:300])
        ]
        db.execute(Collection('digits').insert_many(rows))
        ns = {'superduper': superduper, 'Collection': Collection, 'db': db}
        exec(compile(quick_start_blocks()[1], 'README.md quick start 2', 'exec'), ns)
        valid = list(db.execute(Collection('digits').find({'_fold': 'valid'})))
        assert 10 <= len(valid) <= 60
        assert all('SVC' in d['_outputs']['img'] for d in valid)
        right = sum(d['_outputs']['img']['SVC'] == d['label'] for d in valid)
        assert right >= 0.8 * len(valid)


# ----- item 2: images keep their class --------------------------------------------------------
@pytest.mark.parametrize('backend', ['sqlite', 'mysql', 'mongodb'], indirect=True)
def test_a_jpeg_comes_back_a_jpeg(db, table_name, tmp_path):
    """A photo opened from a .jpg file was stored as PNG and came back a PngImageFile, 5x larger."""
    import PIL.Image
    import PIL.JpegImagePlugin
    from skimage import data

    from superduperdb.encoders.pillow import pil_image

    path = tmp_path / 'astronaut.jpg'
    PIL.Image.fromarray(data.astronaut()).save(path, quality=90)
    photo = PIL.Image.open(path)
    coll = Collection(table_name)
    db.execute(coll.insert_one(Document({'img': pil_image(photo), 'n': 1})))
    back = db.execute(coll.find_one({'n': 1}))['img'].x
    assert isinstance(back, PIL.JpegImagePlugin.JpegImageFile) and back.format == 'JPEG'
    assert back.size == photo.size and back.mode == photo.mode
    # its own quantization tables: the pixels as the file decodes them, give or take rounding
    assert np.abs(np.asarray(back, dtype=int) - np.asarray(photo, dtype=int)).mean() < 1.0
    assert len(pil_image.encode(photo)) < 1.5 * path.stat().st_size
    # an image made in memory stays lossless PNG
    made = PIL.Image.fromarray(data.astronaut()[:32, :32])
    db.execute(coll.insert_one(Document({'img': pil_image(made), 'n': 2})))
    again = db.execute(coll.find_one({'n': 2}))['img'].x
    assert again.format == 'PNG' and np.array_equal(np.asarray(again), np.asarray(made))


# ----- item 4: the license the package declares is in the repository ---------------------------------
def test_the_declared_license_is_in_the_repository():
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    declared = tomllib.loads((root / 'pyproject.toml').read_text())['project']['license']['text']
    text = (root / 'LICENSE').read_text()
    assert declared == 'Apache-2.0' and 'Apache License' in text and 'Version 2.0' in text


# ----- item 8: an unfitted model --------------------------------------------------------------
@pytest.mark.parametrize('backend', ['sqlite', 'mongodb'], indirect=True)
def test_predict_with_an_unfitted_model_is_refused_before_anything_runs(db, table_name):
    """``superduper(SVC()).predict(...)``: every row "failed" with a warning naming a hashed
    table; now one error naming the model and the fix, and nothing written."""
    from sklearn.svm import SVC

    coll = Collection(table_name)
    db.execute(coll.insert_many([{'x': [float(i), 1.0]} for i in range(21)]))
    model = superduper(SVC())
    with pytest.raises(QueryError, match=r"'SVC'.*not fitted.*[Ff]it it") as caught:
        model.predict(X='x', db=db, select=coll.find())
    assert 'fitted estimator' in str(caught.value)
    with pytest.raises(QueryError, match='not fitted'):
        model.predict(X='x', db=db, select=coll.find(), watch=True)
    with pytest.raises(QueryError, match='not fitted'):
        model.predict([[1.0, 2.0]])
    assert db.show('watcher') == [] and db.jobs() == []
    assert all(not d.get('_outputs') for d in db.execute(coll.find()))


# ----- item 9: show with a typo ---------------------------------------------------------------
@pytest.mark.parametrize('backend', ['sqlite', 'mongodb'], indirect=True)
def test_show_of_an_unknown_component_type_suggests_the_close_one(db):
    with pytest.raises(QueryError, match=r"no component type 'modle'\. Did you mean 'model'\?"):
        db.show('modle')
    with pytest.raises(QueryError, match="Did you mean 'vector_index'"):
        db.show('vectorindex', 'x')
    assert db.show('model') == [] and db.show('vector_index') == []


# ----- item 10: a cursor in a notebook --------------------------------------------------------
@pytest.mark.parametrize('backend', ['sqlite', 'postgres', 'mongodb'], indirect=True)
def test_a_cursor_previews_its_first_rows_and_still_gives_every_row(db, table_name):
    """``db.execute(coll.find())`` in a notebook showed ``<Cursor object at 0x...>``."""
    coll = Collection(table_name)
    db.execute(coll.insert_many([{'n': i, 'text': f'row {i}'} for i in range(25)]))
    cursor = db.execute(coll.find().sort('n'))
    text = repr(cursor)
    assert 'object at 0x' not in text and 'n' in text and 'text' in text
    html = cursor._repr_html_()
    assert html.startswith('<table>') and 'row 0' in html and 'first 10 of 25' in html
    assert 'row 20' not in html  # a preview, not every row
    assert sorted(d['n'] for d in cursor) == list(range(25))  # nothing consumed by showing it
    assert cursor._repr_html_() == '<i>no more documents</i>'


# ----- item 15: with, and a closed db ---------------------------------------------------------
@pytest.mark.parametrize('uri', ['sqlite:///{tmp}/w.db', 'mongomock://newcomer_with'])
def test_with_closes_the_db_and_a_closed_db_refuses_use(tmp_path, uri):
    with CFG.override(artifact_store=f'filesystem://{tmp_path}/artifacts'):
        with superduper(uri.format(tmp=tmp_path)) as db:
            db.execute(Collection('t').insert_one({'n': 1}))
            assert db.execute(Collection('t').count({})) == 1
        with pytest.raises(DatalayerClosed, match=r'db\.execute: .*closed.*superduper\(uri\)'):
            db.execute(Collection('t').find_one())
        for use in (lambda: db.show(), lambda: db.add(None), lambda: db.status(), lambda: db.executor):
            with pytest.raises(DatalayerClosed):
                use()
        db.close()  # closing again is harmless
        assert 'Datalayer(' in repr(db)
