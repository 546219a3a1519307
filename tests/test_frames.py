"""Query results as DataFrames on every backend: pandas, arrow and polars."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from superduperdb import Collection, Watcher, superduper
from superduperdb.encoders.numpy import array
from superduperdb.encoders.pillow import pil_image


@pytest.fixture
def filled(db, table_name):
    """Five rows with a number, a name, a 3-d vector, an 8x8 array, an image (one row without a
    vector), and two watchers: a scalar output and a 2-d vector output."""
    from PIL import Image

    vec, grid = array('float32', 3), array('int16', (2, 2))
    coll = Collection(table_name)
    docs = []
    for i in range(5):
        doc = {
            'n': i,
            'name': f'row {i}',
            'grid': grid(np.full((2, 2), i, dtype='int16')),
            'img': pil_image(Image.new('RGB', (4, 3), (i, 0, 0))),
        }
        if i != 3:
            doc['v'] = vec(np.arange(3, dtype='float32') + i)
        docs.append(doc)
    db.execute(coll.insert_many(docs))
    double = superduper(lambda x: 2 * x, identifier='double')
    embed = superduper(
        lambda x: np.full(2, x, dtype='float32'), identifier='embed', encoder=array('float32', 2)
    )
    db.add(Watcher(model=double, key='n', select=coll.find()))
    db.add(Watcher(model=embed, key='n', select=coll.find()))
    return db, coll


def test_to_pandas_has_flat_output_columns_and_python_objects(filled):
    db, coll = filled
    df = db.execute(coll.find().sort('n')).to_pandas()
    assert len(df) == 5
    assert {'n', 'name', 'v', 'grid', 'img', '_outputs.n.double', '_outputs.n.embed'} <= set(df.columns)
    assert '_outputs' not in df.columns
    assert df['n'].tolist() == [0, 1, 2, 3, 4]
    assert str(df['n'].dtype) == 'int64' and str(df['_outputs.n.double'].dtype) == 'int64'
    assert df['_outputs.n.double'].tolist() == [0, 2, 4, 6, 8]
    vectors = df['v'].tolist()
    assert vectors[3] is None  # the row without a vector
    stacked = np.stack([v for v in vectors if v is not None])
    np.testing.assert_array_equal(stacked, np.arange(3, dtype='float32') + np.array([[0], [1], [2], [4]]))
    # the rows of one column are views of one stacked array, not an array per row
    assert vectors[0].base is not None and vectors[0].base is vectors[1].base
    np.testing.assert_array_equal(
        np.stack(df['_outputs.n.embed']), np.repeat(np.arange(5.0), 2).reshape(5, 2)
    )
    assert df['grid'][4].shape == (2, 2) and df['grid'][4][0, 0] == 4
    assert df['img'][2].size == (4, 3) and df['img'][2].getpixel((0, 0)) == (2, 0, 0)


def test_to_arrow_types_vectors_as_fixed_size_lists(filled):
    import pyarrow as pa

    db, coll = filled
    table = db.execute(coll.find().sort('n')).to_arrow()
    assert table.num_rows == 5
    assert table.schema.field('v').type == pa.list_(pa.float32(), 3)
    assert table.schema.field('grid').type == pa.list_(pa.list_(pa.int16(), 2), 2)
    assert table.schema.field('_outputs.n.embed').type == pa.list_(pa.float32(), 2)
    assert table.schema.field('_outputs.n.double').type == pa.int64()
    assert table.column('v').null_count == 1 and table.column('v')[3].as_py() is None
    assert table.column('v')[4].as_py() == [4.0, 5.0, 6.0]
    assert table.column('grid')[1].as_py() == [[1, 1], [1, 1]]
    # an image: its PNG bytes, the encoder named in the field's metadata
    img = table.schema.field('img')
    assert img.type == pa.binary() and img.metadata[b'superduperdb.encoder'] == b'pil_image'
    assert table.column('img')[0].as_py().startswith(b'\x89PNG')


def test_to_polars_arrays_and_objects(filled):
    import polars as pl

    db, coll = filled
    df = db.execute(coll.find().sort('n')).to_polars()
    assert df.height == 5
    assert df.schema['v'] == pl.Array(pl.Float32, 3)
    assert df.schema['_outputs.n.embed'] == pl.Array(pl.Float32, 2)
    assert df['_outputs.n.double'].to_list() == [0, 2, 4, 6, 8]
    assert df['v'].to_numpy()[1].tolist() == [1.0, 2.0, 3.0]
    assert df['img'].dtype == pl.Object and df['img'][1].getpixel((0, 0)) == (1, 0, 0)


def test_like_results_to_pandas(db, table_name):
    from superduperdb import VectorIndex

    coll = Collection(table_name)
    db.execute(coll.insert_many([{'n': i} for i in range(6)]))
    embed = superduper(
        lambda x: np.array([1.0, x], dtype='float32'), identifier='embed2', encoder=array('float32', 2)
    )
    db.add(VectorIndex('frames-index', indexing_watcher=Watcher(model=embed, key='n', select=coll.find())))
    df = db.execute(coll.like({'n': 5}, 'frames-index', n=3)).to_pandas()
    assert len(df) == 3 and '_score' in df.columns and '_outputs.n.embed2' in df.columns
    assert df['_score'].is_monotonic_decreasing


@pytest.mark.sqlite
def test_dataframe_libraries_load_only_when_asked(tmp_path):
    code = (
        'import sys; from superduperdb import superduper, Collection;'
        f'db = superduper("sqlite:///{tmp_path}/x.sqlite");'
        'db.execute(Collection("t").insert_one({"a": 1}));'
        'c = db.execute(Collection("t").find());'
        'print(sorted(m for m in ("pandas", "polars", "pyarrow") if m in sys.modules));'
        'c.to_pandas();'
        'print(sorted(m for m in ("pandas", "polars") if m in sys.modules))'
    )
    out = subprocess.run(
        [sys.executable, '-c', code], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    assert out.stdout.split('\n')[:2] == ['[]', "['pandas']"]


@pytest.mark.sqlite
def test_missing_dataframe_library_names_the_extra(monkeypatch):
    from superduperdb.base.exceptions import MissingDependencyError

    db = superduper('sqlite:///:memory:')
    db.execute(Collection('t').insert_one({'a': 1}))
    monkeypatch.setitem(sys.modules, 'polars', None)  # as if not installed
    with pytest.raises(MissingDependencyError, match=r"pip install 'superduperdb\[dataframes\]'"):
        db.execute(Collection('t').find()).to_polars()
