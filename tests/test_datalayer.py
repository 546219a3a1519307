"""The datalayer on every backend: the same test bodies run on sqlite, duckdb, postgres, mysql, mongodb."""

from __future__ import annotations

import pytest

from superduperdb import Collection, Document
from superduperdb.base.exceptions import InvalidName, NotSupported, QueryError


def ids_of(docs) -> set:
    return {d['_id'] for d in docs}


def test_insert_find_count(db, table_name):
    coll = Collection(table_name)
    result = db.execute(
        coll.insert_many([{'n': i, 'text': f'doc {i}', 'meta': {'even': i % 2 == 0}} for i in range(25)])
    )
    assert len(result.ids) == 25 and len(set(result.ids)) == 25
    assert db.execute(coll.count()) == 25
    docs = list(db.execute(coll.find({'n': {'$gte': 20}})))
    assert sorted(d['n'] for d in docs) == [20, 21, 22, 23, 24]
    assert all(isinstance(d, Document) for d in docs)
    one = db.execute(coll.find_one({'text': 'doc 7'}))
    assert one['n'] == 7 and one['meta'] == {'even': False}
    assert db.execute(coll.find_one({'text': 'missing'})) is None
    assert db.execute(coll.count({'meta.even': True})) == 13
    single = db.execute(coll.insert_one({'n': 100, 'text': 'single'}))
    assert db.execute(coll.find_one({'_id': single.ids[0]}))['n'] == 100


def test_find_streams_in_chunks(db, table_name):
    coll = Collection(table_name)
    db.execute(coll.insert_many([{'n': i} for i in range(250)]))
    db.chunk_size = 64
    cursor = db.execute(coll.find())
    chunks = list(cursor.chunks())
    assert [len(c) for c in chunks] == [64, 64, 64, 58]
    assert sorted(d['n'] for c in chunks for d in c) == list(range(250))
    assert len(list(db.execute(coll.find({'n': {'$lt': 100}}).skip(10).limit(70)))) == 70


def test_sort_limit_skip_projection(db, table_name):
    coll = Collection(table_name)
    db.execute(
        coll.insert_many(
            [
                {'n': i, 'word': w, 'extra': 'x'}
                for i, w in enumerate(['delta', 'alpha', 'charlie', 'bravo', 'echo'])
            ]
        )
    )
    words = [d['word'] for d in db.execute(coll.find().sort('word', 1))]
    assert words == ['alpha', 'bravo', 'charlie', 'delta', 'echo']
    top = [d['n'] for d in db.execute(coll.find().sort('n', -1).limit(2))]
    assert top == [4, 3]
    assert [d['n'] for d in db.execute(coll.find().sort('n', 1).skip(3))] == [3, 4]
    projected = db.execute(coll.find_one({'n': 0}, {'word': 1}))
    assert set(projected) == {'_id', 'word'}
    excluded = db.execute(coll.find_one({'n': 0}, {'extra': 0, '_id': 0}))
    assert set(excluded) == {'n', 'word'}
    assert set(db.execute(coll.find_one({'n': 0}, {'_id': 1}))) == {'_id'}  # the key alone, as on MongoDB
    assert set(db.execute(coll.find_one({'n': 0}, {'_id': 0}))) == {'n', 'word', 'extra'}


@pytest.mark.notimpl(
    ['lake'], raises=NotSupported, reason='lake tables are append-only: updates and deletes are refused'
)
def test_update_and_delete(db, table_name):
    coll = Collection(table_name)
    db.execute(coll.insert_many([{'n': i, 'status': 'new', 'score': 1.5} for i in range(10)]))
    one = db.execute(coll.update_one({'status': 'new'}, {'$set': {'status': 'seen'}}))
    assert len(one.ids) == 1
    assert db.execute(coll.count({'status': 'seen'})) == 1
    many = db.execute(coll.update_many({'n': {'$gte': 5}}, {'$set': {'status': 'old'}, '$inc': {'score': 1}}))
    assert len(many.ids) == 5
    assert {d['score'] for d in db.execute(coll.find({'status': 'old'}))} == {2.5}
    db.execute(coll.update_many({'n': 0}, {'$unset': {'score': ''}}))
    assert db.execute(coll.find_one({'n': 0})).get('score') is None
    assert len(db.execute(coll.delete_one({'status': 'old'})).ids) == 1
    assert db.execute(coll.count()) == 9
    assert len(db.execute(coll.delete_many({'status': 'old'})).ids) == 4
    assert db.execute(coll.count()) == 5
    assert db.execute(coll.update_many({'n': 999}, {'$set': {'status': 'x'}})).ids == []


@pytest.mark.notimpl(
    ['lake'], raises=NotSupported, reason='lake tables are append-only: updates and deletes are refused'
)
def test_new_keys_become_columns_on_tables_superduperdb_created(db, table_name):
    coll = Collection(table_name)
    db.execute(coll.insert_one({'a': 1}))
    db.execute(coll.insert_one({'a': 2, 'b': 'new field'}))
    db.execute(coll.update_many({'a': 1}, {'$set': {'_fold': 'train'}}))
    assert db.execute(coll.find_one({'b': 'new field'}))['a'] == 2
    assert db.execute(coll.find_one({'_fold': 'train'}))['a'] == 1


@pytest.mark.notimpl(
    ['lake'], raises=NotSupported, reason='lake tables are append-only: updates and deletes are refused'
)
def test_primary_key_lookup_sees_rows_and_columns_added_later(db, table_name):
    """``DataBackend.get`` (the metadata store's hot lookup) reads fresh rows, and new columns
    once a write has added them."""
    coll = Collection(table_name)
    (key,) = db.execute(coll.insert_one({'a': 1})).ids
    backend = db.databackend
    assert backend.get(table_name, key)['a'] == 1
    assert backend.get(table_name, 'no such key' if isinstance(key, str) else -1) is None
    db.execute(coll.update_one({'a': 1}, {'$set': {'a': 2, 'b': 'new field'}}))
    row = backend.get(table_name, key)
    assert (row['a'], row['b']) == (2, 'new field')


def test_same_program_reads_a_second_connection(db, backend, table_name, tmp_path):
    """A fresh Datalayer (new caches, as in another process) sees the same data and components."""
    import numpy as np

    from superduperdb import superduper
    from superduperdb.encoders.numpy import array

    coll = Collection(table_name)
    db.execute(coll.insert_one({'v': array('float64', (2,))(np.array([1.5, 2.5]))}))
    if backend == 'mongodb':
        from superduperdb.datalayer.datalayer import Datalayer

        other = Datalayer(db.databackend, type(db.metadata)(db.databackend), db.artifact_store)
    else:
        from tests.conftest import backend_uri

        other = superduper(backend_uri(backend, tmp_path))
    try:
        assert other.show('encoder') == ['numpy.float64[2]']
        value = other.execute(coll.find_one())['v'].x
        np.testing.assert_array_equal(value, [1.5, 2.5])
    finally:
        if other is not db and backend != 'mongodb':
            other.close()


def test_bad_queries_are_rejected_before_running(db):
    with pytest.raises(QueryError, match=r"Unknown filter operator '\$regex'"):
        Collection('t').find({'a': {'$regex': 'x'}})
    with pytest.raises(QueryError, match='Unknown top-level filter operator'):
        Collection('t').find({'$where': 'x'})
    with pytest.raises(QueryError, match='Unknown update operator'):
        Collection('t').update_many({}, {'$rename': {'a': 'b'}})
    with pytest.raises(QueryError, match='limit'):
        Collection('t').find().limit(-1)
    with pytest.raises(QueryError, match='includes fields'):
        Collection('t').find({}, {'a': 1, 'b': 0})
    with pytest.raises(QueryError, match='takes a query'):
        db.execute('SELECT 1')


@pytest.mark.parametrize(
    'name', ['x; DROP TABLE users', 'a"b', "a'b", 'a b', '', '1abc', 'x' * 64, '_superduper" --']
)
def test_injection_in_table_names_is_rejected(name):
    with pytest.raises(InvalidName):
        Collection(name)


def test_injection_in_keys_and_values_is_harmless(db, table_name):
    coll = Collection(table_name)
    db.execute(coll.insert_many([{'name': 'alice'}, {'name': 'bob'}]))
    for key in ['name; DROP TABLE x', "name' OR '1'='1", 'name")--', '$where']:
        with pytest.raises(QueryError):
            db.execute(coll.find({key: 'alice'}))
        with pytest.raises(QueryError):
            db.execute(coll.insert_one({key: 'mallory'}))
    for value in ["x' OR '1'='1", "'; DROP TABLE " + table_name + '; --', 'alice" OR 1=1 --']:
        assert db.execute(coll.count({'name': value})) == 0
        db.execute(coll.insert_one({'name': value}))
        assert db.execute(coll.find_one({'name': value}))['name'] == value
    assert db.execute(coll.count()) == 5


def test_insert_many_is_all_or_nothing(db, table_name):
    coll = Collection(table_name)
    db.execute(coll.insert_one({'_id': 'taken', 'n': 0}))
    from superduperdb.base.exceptions import WriteFailed

    batch = [{'_id': f'new{i}', 'n': i} for i in range(1, 5)] + [{'_id': 'taken', 'n': 99}]
    with pytest.raises(WriteFailed, match='rolled back'):
        db.execute(coll.insert_many(batch))
    assert db.execute(coll.count()) == 1
    assert db.execute(coll.find_one({'_id': 'taken'}))['n'] == 0


def test_projection_without_the_key_streams_past_one_chunk(db, table_name):
    coll = Collection(table_name)
    db.execute(coll.insert_many([{'n': i, 'w': 'x'} for i in range(30)]))
    db.chunk_size = 8
    docs = list(db.execute(coll.find({}, {'_id': 0, 'n': 1})))
    assert sorted(d['n'] for d in docs) == list(range(30))
    assert all(set(d) == {'n'} for d in docs)


@pytest.mark.notimpl(
    ['lake'], raises=NotSupported, reason='lake tables are append-only: updates and deletes are refused'
)
def test_inc_on_a_new_field_creates_a_numeric_field(db, table_name):
    coll = Collection(table_name)
    db.execute(coll.insert_many([{'n': 1}, {'n': 2}]))
    db.execute(coll.update_many({'n': 2}, {'$inc': {'hits': 3}}))
    db.execute(coll.update_many({}, {'$inc': {'hits': 1}}))
    assert sorted((d['n'], d['hits']) for d in db.execute(coll.find())) == [(1, 1), (2, 4)]


@pytest.mark.notimpl(
    ['sqlite', 'duckdb', 'postgres', 'mysql', 'chdb'],
    raises=QueryError,
    reason='SQL JSON columns are replaced whole; no dotted $set into them',
)
@pytest.mark.notimpl(
    ['lake'], raises=NotSupported, reason='lake tables are append-only: updates and deletes are refused'
)
def test_dotted_set_inside_a_nested_value(db, table_name):
    coll = Collection(table_name)
    db.execute(coll.insert_one({'n': 1, 'meta': {'size': 1, 'tag': 'a'}}))
    db.execute(coll.update_one({'n': 1}, {'$set': {'meta.size': 2}}))
    assert db.execute(coll.find_one())['meta'] == {'size': 2, 'tag': 'a'}


def test_reprs_never_render_data_or_functions():
    import numpy as np

    from superduperdb import Encoder
    from superduperdb.encoders.numpy import array

    enc = Encoder('upper', encode=lambda s: s.upper().encode(), decode=lambda b: b.decode())
    assert 'lambda' not in repr(enc) and repr(enc).startswith("Encoder(identifier='upper'")
    big = [Document({'v': array('float32', 1000)(np.zeros(1000, dtype='float32'))}) for _ in range(3)]
    assert len(repr(Collection('t').insert_many(big))) < 80
    assert len(repr(big[0])) < 120


def test_uri_passwords_are_not_echoed_in_errors():
    from superduperdb import superduper
    from superduperdb.base.exceptions import ConfigError

    with pytest.raises(ConfigError) as info:
        superduper('oracle://scott:tiger-secret@host/db')
    assert 'tiger-secret' not in str(info.value) and 'scott:***@host' in str(info.value)
