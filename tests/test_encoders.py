"""Every encoder round-trips on every backend; bad values get clear errors and write nothing."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from superduperdb import Collection, Document, Encoder
from superduperdb.base.exceptions import ComponentInUse, EncodingError, UnknownEncoder
from superduperdb.encoders.audio import Audio, audio
from superduperdb.encoders.numpy import array
from superduperdb.encoders.pickle import pickle_encoder
from superduperdb.encoders.pillow import pil_image


def digit_image(i: int):
    """A real image: one of scikit-learn's bundled 8x8 digits, scaled up."""
    import PIL.Image
    from sklearn.datasets import load_digits

    pixels = (load_digits().images[i] * 16).astype('uint8')
    return PIL.Image.fromarray(pixels).resize((32, 32))


def _values():
    import torch

    from superduperdb.encoders.torch import tensor

    rng = np.random.default_rng(0)
    return {
        'array': (
            array('float32', (4, 3)),
            rng.normal(size=(4, 3)).astype('float32'),
            np.testing.assert_array_equal,
        ),
        'int_array': (array('int64', 5), np.arange(5), np.testing.assert_array_equal),
        'tensor': (
            tensor('float32', (2, 8)),
            torch.randn(2, 8),
            lambda a, b: torch.testing.assert_close(a, b, rtol=0, atol=0),
        ),
        'image': (
            pil_image,
            digit_image(3),
            lambda a, b: (
                (a.size == b.size and a.mode == b.mode and np.array_equal(np.asarray(a), np.asarray(b)))
                or pytest.fail('image differs')
            ),
        ),
        'audio': (
            audio,
            Audio(rng.normal(size=(1600, 2)).astype('float32'), 16000),
            lambda a, b: (a == b) or pytest.fail('audio differs'),
        ),
        'pickle': (
            pickle_encoder,
            {'set': {1, 2}, 'tuple': (1, 'x')},
            lambda a, b: (a == b) or pytest.fail('pickle differs'),
        ),
        'custom': (
            Encoder('reversed-text', encode=lambda s: s[::-1].encode(), decode=lambda b: b.decode()[::-1]),
            'hello',
            lambda a, b: (a == b) or pytest.fail('differs'),
        ),
    }


@pytest.mark.parametrize('kind', ['array', 'int_array', 'tensor', 'image', 'audio', 'pickle', 'custom'])
def test_encoder_round_trips(db, table_name, kind):
    encoder, value, same = _values()[kind]
    coll = Collection(table_name)
    db.execute(
        coll.insert_many([Document({'x': encoder(value), 'n': 1}), Document({'x': encoder(value), 'n': 2})])
    )
    got = db.execute(coll.find_one({'n': 1}))['x']
    assert got.encoder.identifier == encoder.identifier
    assert type(got.x) is type(value) or isinstance(got.x, type(value))
    same(got.x, value)
    # nested inside a JSON/sub-document value, too
    db.execute(coll.insert_one({'n': 3, 'meta': {'inner': [encoder(value)]}}))
    same(db.execute(coll.find_one({'n': 3}))['meta']['inner'][0].x, value)
    assert encoder.identifier in db.show('encoder')


def test_image_of_real_photo_survives_mariadb_blob_limit(db, table_name):
    """A 300 KB photo (scikit-image's sample) exceeds MariaDB's 64 KB BLOB: stored as LONGBLOB."""
    import PIL.Image
    from skimage import data

    photo = PIL.Image.fromarray(data.astronaut())
    coll = Collection(table_name)
    db.execute(coll.insert_one({'img': pil_image(photo)}))
    back = db.execute(coll.find_one())['img'].x
    assert back.size == photo.size
    assert np.array_equal(np.asarray(back), np.asarray(photo))


def test_value_without_encoder_is_refused_and_nothing_written(db, table_name):
    coll = Collection(table_name)
    db.execute(coll.insert_one({'n': 0}))
    docs = [{'n': 1}, {'n': 2, 'x': np.zeros(3, dtype='float32')}]
    with pytest.raises(EncodingError, match=r"array\('float32', \(3,\)\)"):
        db.execute(coll.insert_many(docs))
    with pytest.raises(EncodingError, match='pickle'):
        db.execute(coll.insert_one({'x': object()}))
    assert db.execute(coll.count()) == 1


def test_wrong_dtype_or_shape_is_refused(db, table_name):
    enc = array('float32', (3,))
    with pytest.raises(EncodingError, match=r"astype\('float32'\)"):
        enc(np.zeros(3, dtype='float64'))
    with pytest.raises(EncodingError, match=r'shape \(3,\), got \(4,\)'):
        enc(np.zeros(4, dtype='float32'))
    with pytest.raises(EncodingError, match='numpy array'):
        enc([1.0, 2.0, 3.0])
    with pytest.raises(EncodingError, match='not a numpy dtype'):
        array('float-ish', 3)


def test_one_column_one_encoder(db, backend, table_name):
    coll = Collection(table_name)
    db.execute(coll.insert_one({'x': array('float32', 2)(np.zeros(2, dtype='float32'))}))
    if backend == 'mongodb':  # self-describing values: each document may differ
        db.execute(coll.insert_one({'x': array('float32', 3)(np.zeros(3, dtype='float32'))}))
        assert db.execute(coll.count()) == 2
    else:
        with pytest.raises(EncodingError, match='holds .numpy.float32.2.. values'):
            db.execute(coll.insert_one({'x': array('float32', 3)(np.zeros(3, dtype='float32'))}))
        assert db.execute(coll.count()) == 1


def test_unregistered_encoder_in_data_is_a_clear_error(db, backend, table_name):
    coll = Collection(table_name)
    secret = Encoder('rot13ish', encode=lambda s: s.encode()[::-1], decode=lambda b: b[::-1].decode())
    db.execute(coll.insert_one({'x': secret('abc')}))
    if backend != 'mongodb':  # SQL columns are mapped to encoders; MongoDB values name theirs inline
        with pytest.raises(ComponentInUse, match=f'column {table_name}.x'):
            db.remove('encoder', 'rot13ish')
    db.remove('encoder', 'rot13ish', force=True)
    fresh = type(db)(db.databackend, db.metadata, db.artifact_store)  # no caches, like a new process
    with pytest.raises(UnknownEncoder, match="'rot13ish'.*not registered"):
        fresh.execute(coll.find_one())


def test_pickle_encoder_rejects_nothing_picklable():
    assert pickle_encoder.decode(pickle_encoder.encode([1, 2])) == [1, 2]
    with pytest.raises((pickle.PicklingError, TypeError, AttributeError)):
        pickle_encoder.encode(lambda: 1)


def test_custom_encoder_needs_both_functions():
    with pytest.raises(EncodingError, match='encode= and decode='):
        Encoder('half', encode=pickle.dumps)


@pytest.mark.parametrize('backend', ['sqlite', 'duckdb', 'postgres', 'mysql'], indirect=True)
def test_another_process_decodes_without_registering(db, backend, table_name, tmp_path):
    """Encoders are components: a second Python process reads the data back with no set-up.

    (MongoDB here is mongomock, which lives inside one process, so it is not in this list;
    test_datalayer.py checks a second connection on it.)
    """
    import os
    import subprocess
    import sys

    from tests.conftest import backend_uri

    coll = Collection(table_name)
    custom = Encoder('shout', encode=lambda s: s.upper().encode(), decode=lambda b: b.decode() + '!')
    db.execute(coll.insert_one({'img': pil_image(digit_image(5)), 'loud': custom('hey'), 'n': 5}))
    db.close()  # DuckDB allows one process at a time on a file
    code = (
        'import sys; from superduperdb import superduper, Collection;'
        f'db = superduper({backend_uri(backend, tmp_path)!r});'
        f'doc = db.execute(Collection({table_name!r}).find_one());'
        "print(type(doc['img'].x).__name__, doc['img'].x.size, doc['loud'].x)"
    )
    env = {**os.environ, 'SUPERDUPERDB_ARTIFACT_STORE': f'filesystem://{tmp_path}/artifacts'}
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ['PngImageFile', '(32,', '32)', 'HEY!']


def test_a_grayscale_gif_comes_back_grayscale_after_storing_again():
    """Pillow reads a mode L GIF whose palette is not the full gray ramp as mode P (palette
    indexes): stored again with an optimized palette, a decoded gray GIF came back as different
    pixels (found by the fuzz of tests/test_security_values.py)."""
    import io

    import PIL.Image

    gray = PIL.Image.fromarray(np.array([[0, 5], [200, 255]], dtype='uint8'), 'L')
    buffer = io.BytesIO()
    gray.save(buffer, format='GIF', optimize=False)
    value = pil_image.decode(buffer.getvalue())
    assert (value.format, value.mode) == ('GIF', 'L')
    again = pil_image.decode(pil_image.encode(value))
    assert again.mode == 'L'
    assert np.asarray(again).tolist() == [[0, 5], [200, 255]]


def test_a_batch_of_arrays_encodes_at_once_as_each_alone():
    """encode_column (predict's outputs, a page at a time) stores what to_stored stores per value,
    and leaves a batch it cannot take whole to be encoded value by value."""
    from superduperdb.store.encoding import encode_column

    enc = array('float32', (2, 3))
    rows = list(np.arange(24, dtype='float32').reshape(4, 2, 3))
    rows[1] = rows[1].T.copy().T  # not C-contiguous: stored as its values in C order all the same
    assert encode_column(enc, rows) == [enc.to_stored(r) for r in rows]
    assert encode_column(enc, [rows[0], rows[1].astype('float64')]) is None  # another dtype
    assert encode_column(enc, [rows[0], np.zeros((3, 2), 'float32')]) is None  # another shape
    assert encode_column(enc, [rows[0], np.zeros((2, 4), 'float32')]) is None  # shapes differ
    assert encode_column(enc, [rows[0], rows[1].tolist()]) is None  # not an array
    assert encode_column(enc, [rows[0], None]) is None
    assert encode_column(pickle_encoder, rows) is None  # not raw bytes of a fixed width
