"""Tables in another PostgreSQL schema (MySQL: database): ``Table('shop.items')``."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from superduperdb import Collection, Table, Watcher, superduper
from superduperdb.base.exceptions import InvalidName, QueryError
from tests.conftest import _open


@pytest.fixture(params=[pytest.param(b, marks=getattr(pytest.mark, b)) for b in ('postgres', 'mysql')])
def server_db(request, tmp_path):
    yield from _open(request.param, tmp_path)


@pytest.fixture
def shop(server_db):
    """A schema (database, on MySQL) of the user's with a table made in SQL: ``<schema>.items``."""
    db = server_db
    name = f'shop_{uuid.uuid4().hex[:8]}'
    kind = 'SCHEMA' if db.databackend.dialect == 'postgresql' else 'DATABASE'
    key = 'SERIAL PRIMARY KEY' if kind == 'SCHEMA' else 'INTEGER AUTO_INCREMENT PRIMARY KEY'
    with db.databackend.engine.begin() as conn:
        conn.execute(sa.text(f'CREATE {kind} {name}'))
        conn.execute(sa.text(f'CREATE TABLE {name}.items (id {key}, title TEXT, price FLOAT)'))
        conn.execute(sa.text(f"INSERT INTO {name}.items (title, price) VALUES ('mug', 4.5), ('lamp', 30.0)"))
    yield db, name
    with db.databackend.engine.begin() as conn:
        conn.execute(sa.text(f'DROP {kind} {name}' + (' CASCADE' if kind == 'SCHEMA' else '')))


def test_schema_qualified_table_reads_writes_and_watches(shop):
    db, schema = shop
    items = Table(f'{schema}.items')
    assert db.execute(items.count()) == 2
    assert db.execute(items.find_one({'title': 'mug'}))['price'] == 4.5
    db.execute(items.insert_one({'id': 3, 'title': 'pen', 'price': 1.0}))
    db.execute(items.update_one({'id': 3}, {'$set': {'price': 1.5}}))
    db.add(Watcher(model=superduper(lambda p: p > 10, identifier='pricey'), key='price', select=items.find()))
    db.execute(items.insert_one({'id': 4, 'title': 'desk', 'price': 120.0}))
    found = {d['title']: d['_outputs']['price']['pricey'] for d in db.execute(items.find())}
    assert found == {'mug': False, 'lamp': True, 'pen': False, 'desk': True}
    db.execute(items.delete_one({'id': 3}))
    assert db.execute(items.count()) == 3
    with db.databackend.engine.connect() as conn:  # the user's table, in the user's schema
        assert conn.execute(sa.text(f'SELECT COUNT(*) FROM {schema}.items')).scalar() == 3
    (status,) = db.status()
    assert (status['table'], status['rows'], status['current']) == (f'{schema}.items', 3, 3)
    (view,) = db.outputs.views().values()  # a readable view, in the default schema
    assert view.startswith(f'{schema}_items__price__pricey__')
    with db.databackend.engine.connect() as conn:
        rows = conn.execute(sa.text(f'SELECT title, output FROM {view} ORDER BY id')).all()
    assert [(t, bool(o)) for t, o in rows] == [('mug', False), ('lamp', True), ('desk', True)]


def test_a_new_table_in_a_schema(shop):
    db, schema = shop
    made = Collection(f'{schema}.made')
    db.execute(made.insert_many([{'x': 1}, {'x': 2}]))
    db.execute(made.update_many({}, {'$set': {'y': 'new column'}}))
    with db.databackend.engine.connect() as conn:
        assert conn.execute(sa.text(f'SELECT COUNT(y) FROM {schema}.made')).scalar() == 2
    assert not db.databackend.has_table('made')  # not in the default schema


@pytest.mark.sqlite
def test_schemas_are_refused_where_there_are_none():
    db = superduper('sqlite:///:memory:')
    with pytest.raises(QueryError, match='schema-qualified tables are for PostgreSQL'):
        db.execute(Collection('shop.items').find_one())
    for bad in ('a.b.c', '.items', 'shop.', 'sh op.items'):
        with pytest.raises(InvalidName):
            Collection(bad)


def test_change_capture_with_a_table_in_another_schema(shop):
    db, schema = shop
    items = Table(f'{schema}.items')
    db.add(Watcher(model=superduper(lambda p: p > 10, identifier='pricey'), key='price', select=items.find()))
    db.cdc.poll_once()  # follows the table: triggers (PostgreSQL), a high-water mark (MySQL)
    app = sa.create_engine(db.databackend.engine.url)  # another application (superduperdb's own
    with app.begin() as conn:  # writes are not captured: they started their jobs already)
        conn.execute(sa.text(f"INSERT INTO {schema}.items (id, title, price) VALUES (9, 'sofa', 400.0)"))
    db.cdc.poll_once()
    sofa = db.execute(items.find_one({'id': 9}))
    assert sofa['_outputs']['price']['pricey'] is True
    with app.begin() as conn:
        conn.execute(sa.text(f'UPDATE {schema}.items SET price = 2.0 WHERE id = 9'))
    app.dispose()
    db.cdc.poll_once(reconcile=True)  # MySQL finds updates by reconciling; PostgreSQL by its queue
    assert db.execute(items.find_one({'id': 9}))['_outputs']['price']['pricey'] is False
