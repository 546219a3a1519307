"""Tables in another PostgreSQL schema (MySQL: database): ``Table('shop.items')``."""

from __future__ import annotations

import hashlib
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
        # the view shows the key, the input and the output: the title is a join away
        query = f'SELECT i.title, v.output FROM {view} v JOIN {schema}.items i ON i.id = v.id ORDER BY v.id'
        rows = conn.execute(sa.text(query)).all()
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


@pytest.mark.postgres
def test_superduperdbs_own_objects_in_a_schema_of_their_own(tmp_path):
    from superduperdb import CFG
    from tests.conftest import backend_uri

    internal = f'sd_internal_{uuid.uuid4().hex[:8]}'
    uri = backend_uri('postgres', tmp_path)
    with CFG.override(internal_schema=internal, artifact_store=f'filesystem://{tmp_path}/artifacts'):
        db = superduper(uri)
    try:
        items = Collection(f'items_{uuid.uuid4().hex[:6]}')
        db.execute(items.insert_many([{'n': i} for i in range(3)]))
        db.add(Watcher(model=superduper(lambda x: 2 * x, identifier='double'), key='n', select=items.find()))
        db.cdc.poll_once()  # the change-capture queue and trigger functions
        app = sa.create_engine(db.databackend.engine.url)  # another application, no search path set
        with app.begin() as conn:
            conn.execute(sa.text(f"INSERT INTO {items.name} (_id, n) VALUES ('x', 7)"))
        db.cdc.poll_once()
        assert db.execute(items.find_one({'_id': 'x'}))['_outputs']['n']['double'] == 14

        with app.connect() as conn:
            user = conn.execute(sa.text('SELECT current_schema()')).scalar()
            where = dict(
                conn.execute(
                    sa.text(
                        'SELECT c.relname, n.nspname FROM pg_class c '
                        'JOIN pg_namespace n ON n.oid = c.relnamespace '
                        "WHERE c.relkind IN ('r', 'v') AND n.nspname IN (:a, :b)"
                    ),
                    {'a': user, 'b': internal},
                ).all()
            )
            functions = (
                conn.execute(
                    sa.text(
                        'SELECT n.nspname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace '
                        'WHERE p.proname = :f'
                    ),
                    {'f': f'_superduper_cdc_{hashlib.sha1(items.name.encode()).hexdigest()[:16]}'},
                )
                .scalars()
                .all()
            )
        app.dispose()
        assert where[items.name] == user  # the user's table stays in the user's schema
        ours = {name: schema for name, schema in where.items() if name != items.name}
        assert {'_superduper_components', '_superduper_jobs', '_superduper_cdc_queue'} <= set(ours)
        assert f'{items.name}__n__double' in ours and any(n.startswith('_superduper_out_') for n in ours)
        assert set(ours.values()) == {internal} and functions == [internal]  # its trigger function
    finally:
        db.drop_table(items.name)
        db.close()
        admin = sa.create_engine(uri.split('?')[0])
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA {internal} CASCADE'))
        admin.dispose()


@pytest.mark.sqlite
def test_internal_schema_is_for_postgres_only(tmp_path):
    """One setting for every connection of a process (a PostgreSQL database and a SQLite
    metadata store, say): databases without schemas keep superduperdb's tables beside the user's."""
    from superduperdb import CFG

    with CFG.override(internal_schema='sd'):
        db = superduper(f'sqlite:///{tmp_path}/x.db?create=true')
    db.execute(Collection('items').insert_one({'n': 1}))
    assert {'items', '_superduper_components'} <= set(db.databackend.list_tables())
    db.close()


def test_internal_tables_of_any_schema_are_refused():
    from superduperdb.query.filters import check_user_table

    for name in ('shop._superduper_jobs', 'sd._SUPERDUPER_components', '_superduper_jobs'):
        with pytest.raises(InvalidName, match="superduperdb's own tables"):
            check_user_table(name)
    assert check_user_table('shop.items') == 'shop.items'
