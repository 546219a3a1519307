"""Tables that already exist are used as they are: reflected, never altered."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from superduperdb import Collection
from superduperdb.base.exceptions import NotSupported, QueryError

SQL = ['sqlite', 'duckdb', 'postgres', 'mysql']


def create_orders(db, name: str) -> None:
    """Make an ``orders``-like table the way another application would."""
    if db.databackend.name == 'mongodb':
        db.databackend.database[name].insert_many(
            [
                {'_id': i, 'item': item, 'qty': q}
                for i, (item, q) in enumerate([('pen', 3), ('ink', 1), ('pad', 7)], 1)
            ]
        )
        return
    if db.databackend.name == 'lake':  # a Parquet file written by another program
        import pyarrow as pa
        import pyarrow.parquet as pq

        folder = f'{db.databackend.storage.root}/{name}'
        import os

        os.makedirs(folder)
        data = pa.table(
            {'id': [1, 2, 3], 'item': ['pen', 'ink', 'pad'], 'qty': pa.array([3, 1, 7], pa.int32())}
        )
        pq.write_table(data, f'{folder}/part-0.parquet')
        return
    engine = db.databackend.engine
    with engine.begin() as conn:
        conn.execute(
            sa.text(f'CREATE TABLE {name} (id INTEGER PRIMARY KEY, item VARCHAR(50) NOT NULL, qty INTEGER)')
        )
        conn.execute(sa.text(f"INSERT INTO {name} VALUES (1, 'pen', 3), (2, 'ink', 1), (3, 'pad', 7)"))


def columns_of(db, name: str) -> list[str]:
    if db.databackend.name == 'mongodb':
        return []
    if db.databackend.name == 'lake':
        return db.databackend.columns(name)
    if db.databackend.name == 'duckdb':
        with db.databackend.engine.connect() as conn:
            return [
                r[0]
                for r in conn.execute(
                    sa.text(f"SELECT column_name FROM information_schema.columns WHERE table_name = '{name}'")
                )
            ]
    return [c['name'] for c in sa.inspect(db.databackend.engine).get_columns(name)]


@pytest.mark.notimpl(['lake'], raises=NotSupported, reason='lake tables are append-only (update_one)')
def test_existing_table_is_reflected_and_queried(db, table_name):
    create_orders(db, table_name)
    before = columns_of(db, table_name)
    orders = Collection(table_name)
    assert db.execute(orders.count()) == 3
    assert [d['item'] for d in db.execute(orders.find({'qty': {'$gt': 1}}).sort('qty', -1))] == ['pad', 'pen']
    pk = 'id' if db.databackend.name != 'mongodb' else '_id'
    db.execute(orders.insert_one({pk: 4, 'item': 'cap', 'qty': 2}))
    db.execute(orders.update_one({'item': 'ink'}, {'$inc': {'qty': 10}}))
    assert db.execute(orders.find_one({'item': 'ink'}))['qty'] == 11
    db.execute(orders.delete_one({pk: 1}))
    assert sorted(d['item'] for d in db.execute(orders.find())) == ['cap', 'ink', 'pad']
    assert columns_of(db, table_name) == before  # not altered
    assert db.databackend.primary_key(table_name) == pk


@pytest.mark.parametrize('backend', SQL, indirect=True)
def test_existing_table_is_not_altered_for_unknown_keys(db, table_name):
    create_orders(db, table_name)
    before = columns_of(db, table_name)
    with pytest.raises(QueryError, match=r"has no column 'colour'; its columns are id, item, qty"):
        db.execute(Collection(table_name).insert_one({'id': 9, 'item': 'x', 'colour': 'red'}))
    assert columns_of(db, table_name) == before
    assert db.execute(Collection(table_name).count()) == 3


@pytest.mark.parametrize('backend', ['sqlite', 'postgres', 'mysql'], indirect=True)
def test_a_table_with_defaults_keeps_them_and_a_plain_one_is_read_by_its_columns(db, table_name):
    """Another application's tables: one with a generated key and a column default is reflected
    whole (what the database fills in is left to it); a plain one by its columns and key only
    (no index, constraint or foreign-key queries), and both read and write as before."""
    key = {'sqlite': 'INTEGER PRIMARY KEY', 'postgresql': 'SERIAL PRIMARY KEY'}.get(
        db.databackend.name, 'INTEGER AUTO_INCREMENT PRIMARY KEY'
    )
    plain = f'{table_name}_plain'
    with db.databackend.engine.begin() as conn:
        columns = f"id {key}, item VARCHAR(20), note VARCHAR(20) DEFAULT 'none'"
        conn.execute(sa.text(f'CREATE TABLE {table_name} ({columns})'))
        conn.execute(sa.text(f'CREATE TABLE {plain} (id INTEGER PRIMARY KEY, item VARCHAR(20))'))
        conn.execute(sa.text(f'CREATE INDEX {plain}_item ON {plain} (item)'))
    db.execute(Collection(table_name).insert_one({'id': 7, 'item': 'pen'}))
    assert db.execute(Collection(table_name).find_one({'id': 7}))['note'] == 'none'  # the database's default
    assert db.databackend.table(table_name).c.note.server_default is not None  # reflected whole
    db.execute(Collection(plain).insert_many([{'id': i, 'item': f'i{i}'} for i in range(3)]))
    assert [d['item'] for d in db.execute(Collection(plain).find({'item': 'i2'}))] == ['i2']
    t = db.databackend.table(plain)
    assert [c.name for c in t.primary_key.columns] == ['id'] and not t.indexes  # its columns and key only


@pytest.mark.parametrize('backend', SQL, indirect=True)
def test_raw_sqlalchemy_select_returns_documents(db, table_name):
    import numpy as np

    from superduperdb.encoders.numpy import array

    coll = Collection(table_name)
    db.execute(
        coll.insert_many(
            [{'n': i, 'v': array('float32', 2)(np.full(2, i, dtype='float32'))} for i in range(5)]
        )
    )
    t = db.databackend.table(table_name)
    docs = db.execute(sa.select(t.c.n, t.c.v).where(t.c.n >= 3).order_by(t.c.n))
    assert [d['n'] for d in docs] == [3, 4]
    assert docs[1]['v'].x.tolist() == [4.0, 4.0]
