"""Readable SQL views of model outputs, read with plain SQL on every SQL backend."""

from __future__ import annotations

import numpy as np
import sqlalchemy as sa

from superduperdb import Collection, Watcher, superduper
from superduperdb.backends.sql.views import hashed_name, output_views, readable_name
from superduperdb.encoders.numpy import array
from superduperdb.store.outputs import output_table
from tests.helpers import quote, raw


def test_views_join_inputs_and_outputs(sql_db, table_name):
    db, coll = sql_db, Collection(table_name)
    db.execute(coll.insert_many([{'n': i, 'text': f'row {i}'} for i in range(4)]))
    double = superduper(lambda x: 2 * x, identifier='double')
    embed = superduper(
        lambda x: np.array([x, -x / 3, 1e-39], dtype='float32'),
        identifier='embed',
        encoder=array('float32', 3),
    )
    db.add(Watcher(model=double, key='n', select=coll.find()))
    db.add(Watcher(model=embed, key='n', select=coll.find({'n': {'$gt': 1}})))
    db.execute(coll.insert_one({'n': 10, 'text': 'late'}))  # kept up to date through the same table

    view = f'{table_name}__n__double'
    rows = raw(db, f'SELECT n, output, model_version FROM {quote(db, view)} ORDER BY n')
    assert rows == [(0, 0, 0), (1, 2, 0), (2, 4, 0), (3, 6, 0), (10, 20, 0)]
    assert all(type(output) is int for _, output, _ in rows)  # a typed column, not text or bytes
    ids = raw(db, f'SELECT * FROM {quote(db, view)} ORDER BY n')
    assert len(ids) == 5 and all(isinstance(i[0], str) for i in ids)
    # the key, the input, the output and its version: not the row's other columns (text),
    # which another program may then drop or change (tests/test_drift_migrations.py)
    assert [row[1:] for row in ids] == [(0, 0, 0), (1, 2, 0), (2, 4, 0), (3, 6, 0), (10, 20, 0)]

    vectors = raw(db, f'SELECT n, output FROM {quote(db, f"{table_name}__n__embed")} ORDER BY n')
    assert [n for n, _ in vectors] == [2, 3, 10]  # only the rows the watcher selects
    expected = np.array([10, -10 / 3, 1e-39], dtype='float32')  # a subnormal too
    if db.databackend.dialect == 'postgresql':  # real[]: what psql and BI tools read
        assert isinstance(vectors[2][1], list)
        np.testing.assert_array_equal(np.array(vectors[2][1], dtype='float32'), expected)
    else:  # the stored bytes
        np.testing.assert_array_equal(np.frombuffer(bytes(vectors[2][1]), dtype='float32'), expected)


def test_view_names_are_collision_safe(sql_db, table_name):
    db, coll = sql_db, Collection(table_name)
    db.execute(coll.insert_many([{'n': i} for i in range(3)]))
    # a table of the user's own already has the readable name: it is left alone
    taken = f'{table_name}__n__double'
    db.execute(Collection(taken).insert_one({'mine': 1}))
    db.add(Watcher(model=superduper(lambda x: 2 * x, identifier='double'), key='n', select=coll.find()))
    user_schema = db.databackend.user_schema  # PostgreSQL: superduperdb's views in a schema of their own
    mine = f'{quote(db, user_schema)}.{quote(db, taken)}' if user_schema else quote(db, taken)
    assert raw(db, f'SELECT mine FROM {mine}') == [(1,)]
    other = hashed_name(table_name, 'n', 'double')
    assert other.startswith(f'{table_name}__n__double__') and len(other) == len(taken) + 10
    if user_schema:  # no collision there: the view has the readable name in its own schema
        other = taken
    assert raw(db, f'SELECT n, output FROM {quote(db, other)} ORDER BY n') == [(0, 0), (1, 2), (2, 4)]

    # a model name that is not a plain identifier
    odd = superduper(lambda x: x + 1, identifier='Plus One v1.5')
    db.add(Watcher(model=odd, key='n', select=coll.find()))
    name = readable_name(table_name, 'n', 'Plus One v1.5')
    assert name == hashed_name(table_name, 'n', 'Plus One v1.5') and '__Plus_One_v1_5__' in name
    assert raw(db, f'SELECT output FROM {quote(db, name)} ORDER BY n') == [(1,), (2,), (3,)]
    assert output_views(db.databackend, output_table(table_name, 'n', 'Plus One v1.5')) == [name]


def test_views_go_with_their_outputs(sql_db, table_name):
    db, coll = sql_db, Collection(table_name)
    db.execute(coll.insert_many([{'n': i} for i in range(3)]))
    db.add(Watcher(model=superduper(lambda x: 2 * x, identifier='double'), key='n', select=coll.find()))
    out = output_table(table_name, 'n', 'double')
    assert output_views(db.databackend, out) == [f'{table_name}__n__double']
    db.drop_table(table_name)  # PostgreSQL would refuse while a view reads the table
    assert output_views(db.databackend, out) == []
    assert not db.databackend.has_table(table_name) and not db.databackend.has_table(out)


def test_names():
    assert readable_name('reviews', 'text', 'minilm') == 'reviews__text__minilm'
    for parts in [('a__b', 'c', 'd'), ('a', 'b__c', 'd'), ('_t', 'k', 'm'), ('t', 'k', 'x' * 70)]:
        name = readable_name(*parts)
        assert name == hashed_name(*parts) and len(name) <= 63
    # the same readable prefix, told apart by the hash
    assert hashed_name('a', 'b.c', 'd') != hashed_name('a', 'b_c', 'd')


def test_views_listed_and_made_for_older_outputs(sql_db, table_name):
    db, coll = sql_db, Collection(table_name)
    db.execute(coll.insert_many([{'n': i} for i in range(2)]))
    db.add(Watcher(model=superduper(lambda x: 2 * x, identifier='double'), key='n', select=coll.find()))
    out, view = output_table(table_name, 'n', 'double'), f'{table_name}__n__double'
    assert db.outputs.views() == {out: view}
    with db.databackend.engine.begin() as conn:  # as a database from before views were made
        conn.execute(sa.text(f'DROP VIEW {quote(db, view)}'))
    assert db.outputs.views() == {out: None}
    assert db.outputs.views(create=True) == {out: view}
    assert raw(db, f'SELECT n, output FROM {quote(db, view)} ORDER BY n') == [(0, 0), (1, 2)]


def test_view_columns_do_not_clash_with_the_tables(sql_db, table_name):
    db, coll = sql_db, Collection(table_name)
    db.execute(coll.insert_many([{'n': i, 'output': i} for i in range(2)]))
    # the input column is named output: the model's output gets a '_' in front
    db.add(Watcher(model=superduper(lambda x: 2 * x, identifier='double'), key='output', select=coll.find()))
    view = quote(db, f'{table_name}__output__double')
    assert raw(db, f'SELECT output, _output, model_version FROM {view} ORDER BY output') == [
        (0, 0, 0),
        (1, 2, 0),
    ]
