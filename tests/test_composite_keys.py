"""Existing tables whose primary key has several columns (issue 14): outputs, watchers, updates,
deletes, views and vector search keyed by the whole key, never by its first column."""

from __future__ import annotations

import numpy as np
import pytest
import sqlalchemy as sa

from superduperdb import Collection, VectorIndex, Watcher, superduper
from superduperdb.base.exceptions import QueryError

SQL = pytest.mark.parametrize(
    'backend',
    [pytest.param(b, marks=getattr(pytest.mark, b)) for b in ('sqlite', 'duckdb', 'postgres', 'mysql')],
    indirect=True,
)

# rows that share each key column with another row: keyed by one column, they would collide
LINES = [(1, 'a', 'pen'), (1, 'b', 'ink'), (2, 'a', 'pad')]


def create_lines(db, name: str, key_types: str = 'o INTEGER NOT NULL, n VARCHAR(10) NOT NULL') -> None:
    """An order-lines table made by another application, keyed by (order, line)."""
    with db.databackend.engine.begin() as conn:
        conn.execute(sa.text(f'CREATE TABLE {name} ({key_types}, item VARCHAR(20), PRIMARY KEY (o, n))'))
        conn.execute(
            sa.text(f'INSERT INTO {name} (o, n, item) VALUES (:o, :n, :item)'),
            [{'o': o, 'n': n, 'item': item} for o, n, item in LINES],
        )


def upper():
    return superduper(lambda s: s.upper(), identifier='up')


def outputs(db, coll):
    return {d['_key']: d['_outputs']['item']['up'] for d in db.execute(coll.find())}


@SQL
def test_outputs_and_watchers_are_keyed_by_the_whole_key(db, table_name):
    create_lines(db, table_name)
    coll = Collection(table_name)
    assert db.databackend.primary_key(table_name) == '_key'
    job = upper().predict(X='item', db=db, select=coll.find(), watch=True)
    assert job.status == 'success'
    assert outputs(db, coll) == {'[1,"a"]': 'PEN', '[1,"b"]': 'INK', '[2,"a"]': 'PAD'}
    first = db.execute(coll.find_one({'o': 1, 'n': 'b'}))
    assert (first['o'], first['n'], first['_key']) == (1, 'b', '[1,"b"]')

    # the watcher: a new row, an update (reported by its whole key), a delete
    result = db.execute(coll.insert_one({'o': 2, 'n': 'b', 'item': 'cap'}))
    assert result.ids == ['[2,"b"]'] and [j.status for j in result.jobs] == ['success']
    updated = db.execute(coll.update_one({'item': 'ink'}, {'$set': {'item': 'inky'}}))
    assert updated.ids == ['[1,"b"]']
    deleted = db.execute(coll.delete_one({'o': 1, 'n': 'a'}))
    assert deleted.ids == ['[1,"a"]']
    assert outputs(db, coll) == {'[1,"b"]': 'INKY', '[2,"a"]': 'PAD', '[2,"b"]': 'CAP'}

    # a second run computes nothing: fingerprints are found by the whole key
    again = upper().predict(X='item', db=db, select=coll.find())
    assert (again.computed, again.skipped) == (0, 3), str(again)


@SQL
def test_a_row_is_found_and_filtered_by_its_whole_key(db, table_name):
    create_lines(db, table_name)
    coll = Collection(table_name)
    assert [d['item'] for d in db.execute(coll.find({'_key': '[1,"b"]'}))] == ['ink']
    among = db.execute(coll.find({'_key': {'$in': ['[2,"a"]', '[1,"a"]']}}).sort('_key', 1))
    assert [d['item'] for d in among] == ['pen', 'pad']
    assert db.execute(coll.count({'_key': {'$nin': ['[1,"a"]']}})) == 2
    assert db.databackend.get(table_name, '[2,"a"]')['item'] == 'pad'
    # paged reads continue after the last row's whole key (a page boundary inside order 1)
    chunks = list(db.databackend.find(table_name, {}, chunk_size=1))
    assert [c[0]['_key'] for c in chunks] == ['[1,"a"]', '[1,"b"]', '[2,"a"]']
    # a projection keeps the whole key; its columns follow the projection
    assert db.execute(coll.find_one({}, {'item': 1})).unpack() == {'item': 'pen', '_key': '[1,"a"]'}
    # written back, the derived field is not a column
    doc = db.execute(coll.find_one({'o': 2})).unpack()
    db.execute(coll.delete_one({'o': 2}))
    db.execute(coll.insert_one(doc))
    assert db.execute(coll.count()) == 3
    for bad, needle in (('1,b', 'JSON array'), ('[1]', 'JSON array'), (7, 'got 7')):
        with pytest.raises(QueryError, match='whole primary key') as info:
            db.execute(coll.find_one({'_key': bad}))
        assert needle in str(info.value)
    with pytest.raises(QueryError, match='update those instead'):
        db.execute(coll.update_one({'o': 1}, {'$set': {'_key': '[9,"z"]'}}))


@SQL
def test_the_outputs_view_joins_on_the_whole_key(db, table_name):
    create_lines(db, table_name)
    coll = Collection(table_name)
    upper().predict(X='item', db=db, select=coll.find())
    from superduperdb.store.outputs import output_table

    view = db.outputs.views()[output_table(table_name, 'item', 'up')]
    assert view == f'{table_name}__item__up'
    with db.databackend.engine.connect() as conn:
        rows = conn.execute(sa.text(f'SELECT o, n, item, output FROM {view} ORDER BY o, n')).all()
    expected = [(1, 'a', 'pen', 'PEN'), (1, 'b', 'ink', 'INK'), (2, 'a', 'pad', 'PAD')]
    assert [tuple(r) for r in rows] == expected


@SQL
def test_vector_search_over_a_composite_key_table(db, table_name):
    create_lines(db, table_name)
    coll = Collection(table_name)
    letters = superduper(
        lambda s: np.array([s.count(c) for c in 'aeiknpd'], dtype='float32'), identifier='letters'
    )
    db.add(VectorIndex('lines', indexing_watcher=Watcher(model=letters, key='item', select=coll.find())))
    top = list(db.execute(coll.like({'item': 'ink'}, 'lines', n=1)))
    assert [(d['o'], d['n'], d['item']) for d in top] == [(1, 'b', 'ink')]
    filtered = list(db.execute(coll.find({'o': 2}).like({'item': 'ink'}, 'lines', n=1)))
    assert [d['_key'] for d in filtered] == ['[2,"a"]']
    db.execute(coll.insert_one({'o': 3, 'n': 'a', 'item': 'kin'}))  # same letters as 'ink'
    near = {d['_key'] for d in db.execute(coll.like({'item': 'ink'}, 'lines', n=2))}
    assert near == {'[1,"b"]', '[3,"a"]'}


@SQL
def test_a_composite_key_of_other_types_is_refused_before_anything_runs(db, table_name):
    create_lines(db, table_name, key_types='o FLOAT NOT NULL, n VARCHAR(10) NOT NULL')
    coll = Collection(table_name)
    for watch in (False, True):
        with pytest.raises(QueryError, match=r'neither integers nor strings \(o\)'):
            upper().predict(X='item', db=db, select=coll.find(), watch=watch)
    assert db.show('watcher') == []
    assert not [t for t in db.databackend.list_tables() if t.startswith('_superduper_out_')]
