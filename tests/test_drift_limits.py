"""Limits (issue 24, item 9): chunks and values sized to the database, every name quoted.

MariaDB's default ``max_allowed_packet`` is 16 MiB and PyMySQL sends bytes as hex, twice
their size: an artifact's 8 MiB chunk never fit, so a stored model of 8 MiB or more could not
be added there, and a large value lost the connection ("server has gone away") instead of
being refused. DuckDB's keywords of joins and functions (``at``, ``asof``, ``positional``,
``semi``, ``anti``) could not name a field.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import sqlalchemy as sa

from superduperdb import CFG, Collection, Watcher, superduper
from superduperdb.base.exceptions import InvalidValue
from superduperdb.store.artifacts import DatabaseArtifactStore
from tests.conftest import _drop_superduper_tables, _drop_tables, _private_uri, _tables


@pytest.fixture
def mariadb_uri():
    """The private MariaDB database of this run, its artifacts in the database (as servers
    default to), cleaned up afterwards."""
    uri = _private_uri('mysql')
    _drop_superduper_tables(uri)
    before = set(_tables(uri))
    with CFG.override(artifact_store='database', metadata_store=None):
        yield uri
    _drop_tables(uri, [t for t in _tables(uri) if t not in before])
    _drop_superduper_tables(uri)


def packet(db) -> int:
    with db.databackend.engine.connect() as conn:
        return int(conn.execute(sa.text('SELECT @@max_allowed_packet')).scalar_one())


@pytest.mark.mysql
@pytest.mark.slow
def test_a_model_over_half_the_packet_is_stored_and_loaded_elsewhere(mariadb_uri):
    db = superduper(mariadb_uri)
    other = None
    try:
        assert packet(db) == 16 * 1024 * 1024  # the server's default: the case that failed
        weights = np.random.default_rng(0).random(3_000_000, dtype='float32')  # 12 MB pickled
        db.add(superduper(lambda i: float(weights[i]), identifier='big'))
        store = db.artifact_store
        assert isinstance(store, DatabaseArtifactStore)
        chunks = [
            r
            for page in db.databackend.find(store.TABLE, {}, projection={'_id': 1})
            for r in page
            if '.' in r['_id']
        ]
        assert len(chunks) == 2  # chunks under half the packet, as hex under the whole of it
        assert store.chunk_size() * 2 < packet(db)

        other = superduper(mariadb_uri)  # another process's view: the model from the database
        loaded = other.load('model', 'big')
        assert loaded.predict_batch([5, 2_999_999]) == [float(weights[5]), float(weights[2_999_999])]
    finally:
        db.close()
        if other is not None:
            other.close()


@pytest.mark.mysql
def test_a_value_over_the_packet_is_refused_naming_field_and_limit(mariadb_uri, table_name):
    db = superduper(mariadb_uri)
    try:
        coll = Collection(table_name)
        big = os.urandom(20_000_000)
        with pytest.raises(InvalidValue, match=r"Field 'blob' .*max_allowed_packet \(16777216 bytes") as info:
            db.execute(coll.insert_many([{'_id': 'a', 'blob': b'small'}, {'_id': 'b', 'blob': big}]))
        assert info.value.field == 'blob' and info.value.row == 1
        assert 'raise max_allowed_packet' in str(info.value)
        assert not db.databackend.has_table(table_name)  # nothing half-written: not even the table

        db.execute(coll.insert_one({'_id': 'a', 'blob': b'small', 'text': 'x'}))
        with pytest.raises(InvalidValue, match="Field 'text'"):  # text: escaped, refused the same way
            db.execute(coll.insert_one({'_id': 'c', 'text': "'" * 9_000_000}))
        with pytest.raises(InvalidValue, match="Field 'blob'"):
            db.execute(coll.update_one({'_id': 'a'}, {'$set': {'blob': big}}))
        assert [(d['_id'], d['blob']) for d in db.execute(coll.find())] == [('a', b'small')]
        fits = os.urandom(8_000_000)  # as hex, 16 MB: under the packet
        db.execute(coll.insert_one({'_id': 'd', 'blob': fits}))
        assert db.execute(coll.find_one({'_id': 'd'}))['blob'] == fits
    finally:
        db.close()


WORDS = ('at', 'asof', 'positional', 'semi', 'anti', 'select', 'order', 'group', 'user')


def test_fields_named_by_keywords_are_stored_and_queried(sql_db, table_name):
    db, coll = sql_db, Collection(table_name)
    db.execute(coll.insert_many([{'_id': f'r{i}', **{w: i for w in WORDS}} for i in range(4)]))
    found = db.execute(
        coll.find({'at': {'$gte': 1}, 'semi': {'$lt': 3}}, {'asof': 1, 'order': 1}).sort('anti', -1)
    )
    assert [(d['_id'], d['asof'], d['order']) for d in found] == [('r2', 2, 2), ('r1', 1, 1)]
    assert all('user' not in d for d in found)

    db.execute(
        coll.update_many({'positional': {'$in': [0, 3]}}, {'$set': {'select': 10}, '$inc': {'group': 5}})
    )
    rows = {d['_id']: (d['select'], d['group'], d['user']) for d in db.execute(coll.find())}
    assert rows == {'r0': (10, 5, 0), 'r1': (1, 1, 1), 'r2': (2, 2, 2), 'r3': (10, 8, 3)}

    db.add(Watcher(model=superduper(lambda x: x * 100, identifier='hundred'), key='at', select=coll.find()))
    db.execute(coll.insert_one({'_id': 'r4', **{w: 4 for w in WORDS}}))
    assert db.execute(coll.find_one({'_id': 'r4'}))['_outputs']['at']['hundred'] == 400
    view = db.databackend.engine.dialect.identifier_preparer.quote(f'{table_name}__at__hundred')
    with db.databackend.engine.connect() as conn:
        shown = conn.execute(sa.text(f'SELECT * FROM {view}')).all()
    assert sorted(tuple(r)[1:3] for r in shown) == [(0, 0), (1, 100), (2, 200), (3, 300), (4, 400)]
    db.execute(coll.delete_many({'at': {'$gt': 2}}))
    assert sorted(d['_id'] for d in db.execute(coll.find())) == ['r0', 'r1', 'r2']
