"""The value policy (docs/concepts.md, "Values"): the same program stores the same values on
every backend. A value comes back as it was written, or it is refused at write time with an
error that names the field, the document and the fix, and nothing of that write is stored.
"""

from __future__ import annotations

import datetime
import math

import numpy as np
import pytest

from superduperdb import Collection, Document, superduper
from superduperdb.base.exceptions import EncodingError, InvalidValue, NotSupported
from superduperdb.encoders.numpy import array

UTC = datetime.UTC
PLUS_5 = datetime.timezone(datetime.timedelta(hours=5))


@pytest.fixture
def second(db, backend, tmp_path):
    """The same database opened again, as another process would (tables reflected anew)."""
    if backend == 'mongodb':  # mongomock lives in this process: the same client is the other view
        yield db
        return
    from tests.conftest import backend_uri

    other = superduper(backend_uri(backend, tmp_path))
    yield other
    other.close()


def test_values_round_trip_on_every_backend(db, second, table_name):
    coll = Collection(table_name)
    # BSON dates hold milliseconds (documented): microseconds are 0 here so MongoDB keeps them all
    written = {
        's': 'text',
        'i': 2**62,
        'f': 0.1,
        'b': True,
        'raw': b'\x00\xff',
        'when': datetime.datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=PLUS_5),
        'meta': {'k': [1, 2.5, 'x', None]},
    }
    db.execute(coll.insert_one(Document({'_id': 'a', **written})))
    for reader in (db, second):
        doc = reader.execute(coll.find_one({'_id': 'a'}))
        for key, value in written.items():
            assert doc[key] == value and type(doc[key]) is type(value), (key, doc[key])
        assert doc['when'].utcoffset() == datetime.timedelta(0)  # the same instant, in UTC
        assert reader.execute(coll.count({'when': written['when']})) == 1
        before, after = (datetime.datetime(2024, 5, 6, hour, tzinfo=UTC) for hour in (2, 3))
        assert reader.execute(coll.count({'when': {'$gt': before}})) == 1
        assert reader.execute(coll.count({'when': {'$gt': after}})) == 0


def test_a_float_column_takes_ints_and_gives_floats(db, table_name):
    coll = Collection(table_name)
    db.execute(coll.insert_many([{'f': 1.5}, {'f': 2}]))
    assert db.execute(coll.count({'f': 2})) == 1


@pytest.mark.parametrize(
    ('field', 'bad'),
    [('s', 5), ('i', 'abc'), ('i', 1.5), ('b', 'yes'), ('when', '2024-01-01')],
)
@pytest.mark.notimpl(
    ['lake'], raises=NotSupported, reason='lake tables are append-only: updates and deletes are refused'
)
def test_a_value_its_column_would_change_is_refused_whole(db, backend, table_name, field, bad):
    coll = Collection(table_name)
    first = {'s': 'x', 'i': 1, 'b': False, 'when': datetime.datetime(2024, 1, 1, tzinfo=UTC)}
    db.execute(coll.insert_one(first))
    batch = [dict(first), dict(first), {**first, field: bad}]
    if backend == 'mongodb':  # documents have no column types: the value is stored as it is
        db.execute(coll.insert_many(batch))
        assert db.execute(coll.count({field: bad})) == 1
        return
    with pytest.raises(InvalidValue) as caught:
        db.execute(coll.insert_many(batch))
    assert (caught.value.field, caught.value.row) == (field, 2)
    assert f'{type(bad).__name__}(value)' not in str(caught.value)  # the fix names the column's type
    assert repr(field) in str(caught.value) and 'document 2' in str(caught.value)
    assert db.execute(coll.count()) == 1  # nothing of the refused write
    with pytest.raises(InvalidValue):
        db.execute(coll.update_many({}, {'$set': {field: bad}}))
    assert db.execute(coll.find_one())[field] == first[field]


def test_a_new_table_refuses_mixed_values_before_creating_anything(db, table_name):
    coll = Collection(table_name)
    mixed = [{'n': 1}, {'n': 'two'}]
    if db.databackend.self_describing:  # MongoDB keeps each value's own type
        db.execute(coll.insert_many(mixed))
        assert sorted(map(str, (d['n'] for d in db.execute(coll.find())))) == ['1', 'two']
        return
    with pytest.raises(InvalidValue) as caught:
        db.execute(coll.insert_many(mixed))
    assert (caught.value.field, caught.value.row) == ('n', 1)
    assert table_name not in db.databackend.list_tables()


@pytest.mark.parametrize('bad', [math.nan, math.inf, -math.inf, np.float32('nan')])
def test_nan_and_infinities_are_refused_on_every_backend(db, table_name, bad):
    coll = Collection(table_name)
    db.execute(coll.insert_one({'x': 1.0, 'meta': {'y': 1.0}}))
    for doc, field in (({'x': bad}, 'x'), ({'x': 2.0, 'meta': {'y': [1.0, bad]}}, 'meta.y.1')):
        with pytest.raises(InvalidValue, match='Store None for a missing number') as caught:
            db.execute(coll.insert_many([{'x': 3.0}, doc]))
        assert (caught.value.field, caught.value.row) == (field, 1)
    assert db.execute(coll.count()) == 1
    db.execute(coll.insert_one({'x': None}))  # the way to say "missing"
    assert db.execute(coll.count({'x': None})) == 1


def test_datetimes_without_a_zone_are_refused_where_they_would_change(db, table_name):
    coll = Collection(table_name)
    with pytest.raises(InvalidValue, match='without a time zone') as caught:
        db.execute(coll.insert_one({'when': datetime.datetime(2024, 1, 1, 12)}))
    assert caught.value.field == 'when'
    aware = datetime.datetime(2024, 1, 1, 12).astimezone()  # the fix the message gives
    db.execute(coll.insert_one({'when': aware}))
    assert db.execute(coll.find_one())['when'] == aware


@pytest.mark.parametrize('backend', ['sqlite', 'duckdb', 'postgres', 'mysql'], indirect=True)
def test_an_existing_column_of_local_times_keeps_them_naive(db, backend, second, table_name):
    import sqlalchemy as sa

    kind = {'sqlite': 'DATETIME', 'mysql': 'DATETIME(6)'}.get(backend, 'TIMESTAMP')
    with db.databackend.engine.begin() as conn:
        conn.execute(sa.text(f'CREATE TABLE {table_name} (id INTEGER PRIMARY KEY, happened {kind})'))
    coll = Collection(table_name)
    local = datetime.datetime(2024, 3, 4, 5, 6, 7, 890000)
    db.execute(coll.insert_one({'id': 1, 'happened': local}))
    for reader in (db, second):
        assert reader.execute(coll.find_one())['happened'] == local
    with pytest.raises(InvalidValue, match='local times without a zone'):
        db.execute(coll.insert_one({'id': 2, 'happened': local.replace(tzinfo=UTC)}))
    assert db.execute(coll.count()) == 1


def test_raw_bytes_are_refused_in_a_column_of_encoded_values(db, second, table_name):
    coll = Collection(table_name)
    vec = array('float32', 3)
    db.execute(coll.insert_one({'v': vec(np.ones(3, dtype='float32'))}))
    if db.databackend.self_describing:  # MongoDB keeps raw bytes as bytes beside encoded values
        db.execute(coll.insert_one({'v': b'abc'}))
        assert [type(d['v']).__name__ for d in db.execute(coll.find())] == ['Encodable', 'bytes']
        return
    with pytest.raises(InvalidValue, match='Wrap the value with the encoder') as caught:
        db.execute(coll.insert_many([{'v': vec(np.zeros(3, dtype='float32'))}, {'v': b'abc'}]))
    assert (caught.value.field, caught.value.row) == ('v', 1)
    with pytest.raises(InvalidValue):
        second.execute(coll.update_many({}, {'$set': {'v': b'abcd'}}))
    assert [d['v'].x.tolist() for d in second.execute(coll.find())] == [[1.0, 1.0, 1.0]]


def test_raw_bytes_are_refused_beside_encoded_values_of_the_same_write(db, table_name):
    """A new column gets its encoder from this write: raw bytes in it would be decoded with it."""
    coll = Collection(table_name)
    vec = array('float32', 3)
    mixed = [{'v': vec(np.ones(3, dtype='float32'))}, {'v': b'abc'}]
    if db.databackend.self_describing:  # each value names its own encoder there
        db.execute(coll.insert_many(mixed))
        assert db.execute(coll.count()) == 2
        return
    with pytest.raises(InvalidValue) as caught:
        db.execute(coll.insert_many(mixed))
    assert (caught.value.field, caught.value.row) == ('v', 1)
    assert table_name not in db.databackend.list_tables()


@pytest.mark.parametrize('dtype', [object, 'O', np.dtype([('a', 'i4'), ('b', 'O')])])
def test_arrays_of_python_objects_are_refused(dtype):
    with pytest.raises(EncodingError, match='pointers to Python objects'):
        array(dtype, 2)
