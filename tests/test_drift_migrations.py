"""Other programs' migrations (issue 24, item 7): views and cached statements follow them.

Another program (a real second connection, as a migration tool would open) drops a column
of a watched table, or changes a column's type, while this process keeps working: the
readable view shows only its own columns, so it neither blocks the change (PostgreSQL) nor
breaks (SQLite, MariaDB, DuckDB); this process's cached table definitions and PostgreSQL's
prepared statements follow the change instead of failing until a restart.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from superduperdb import Collection, Watcher, superduper
from superduperdb.store.outputs import output_table
from tests.conftest import _open
from tests.helpers import quote


@pytest.fixture
def pg_db(tmp_path):
    yield from _open('postgres', tmp_path)


def other_program(db, *statements: str) -> None:
    """Run ``statements`` on a connection of another engine (its own pool), as another
    program would; DuckDB allows one database instance per file in a process, so there the
    second connection comes from the same instance (still not superduperdb's)."""
    backend = db.databackend
    if backend.dialect == 'duckdb':
        raw = backend.engine.raw_connection()
        try:
            for statement in statements:
                raw.cursor().execute(statement)
            raw.commit()
        finally:
            raw.close()
        return
    engine = sa.create_engine(backend.engine.url, poolclass=sa.pool.NullPool)
    try:
        with engine.begin() as conn:
            if getattr(backend, 'internal_schema', None):  # a program that knows where superduperdb's are
                conn.execute(
                    sa.text(f'SET LOCAL search_path TO {backend.internal_schema}, {backend.user_schema}')
                )
            for statement in statements:
                conn.execute(sa.text(statement))
    finally:
        engine.dispose()


def view_rows(db, view: str, columns: str = 'n, output') -> list[tuple]:
    with db.databackend.engine.connect() as conn:
        query = sa.text(f'SELECT {columns} FROM {quote(db, view)} ORDER BY n')
        return [tuple(r) for r in conn.execute(query)]


def view_columns(db, view: str) -> list[str]:
    with db.databackend.engine.connect() as conn:
        result = conn.exec_driver_sql(f'SELECT * FROM {quote(db, view)} WHERE 1 = 0')
        names = [d[0] for d in result.cursor.description]
        result.close()
    return names


def test_another_program_drops_a_column_the_view_does_not_show(sql_db, table_name):
    db, coll = sql_db, Collection(table_name)
    db.execute(coll.insert_many([{'n': i, 'text': f'row {i}', 'other': 10 * i} for i in range(3)]))
    db.add(Watcher(model=superduper(lambda x: 2 * x, identifier='double'), key='n', select=coll.find()))
    view = f'{table_name}__n__double'
    assert sorted(view_columns(db, view)) == ['_id', 'model_version', 'n', 'output']
    assert [d['other'] for d in db.execute(coll.find().sort('n', 1))] == [0, 10, 20]  # cached with `other`
    first = db.execute(coll.find_one({'n': 1}))['_id']

    # before: PostgreSQL refused (the view read every column); elsewhere the view broke
    other_program(db, f'ALTER TABLE {quote(db, table_name)} DROP COLUMN {quote(db, "other")}')
    assert view_rows(db, view) == [(0, 0), (1, 2), (2, 4)]

    # this process goes on, its cached definition of the table read again
    docs = list(db.execute(coll.find().sort('n', 1)))
    assert [(d['n'], d['text']) for d in docs] == [(0, 'row 0'), (1, 'row 1'), (2, 'row 2')]
    assert all('other' not in d for d in docs)
    assert db.execute(coll.find_one({'_id': first}))['n'] == 1
    db.execute(coll.insert_one({'n': 5, 'text': 'new'}))
    assert view_rows(db, view) == [(0, 0), (1, 2), (2, 4), (5, 10)]
    assert db.execute(coll.find_one({'n': 5}))['_outputs']['n']['double'] == 10


def test_a_column_dropped_by_another_program_is_read_again_not_failed(sql_db, table_name):
    """This process's definition of a table (read once, cached) goes out of date when another
    program drops a column: reads named the column and failed until a restart."""
    db, coll = sql_db, Collection(table_name)
    db.execute(coll.insert_many([{'_id': f'r{i}', 'n': i, 'other': 'x'} for i in range(3)]))
    assert db.execute(coll.find_one({'_id': 'r1'}))['other'] == 'x'
    assert len(list(db.execute(coll.find({'n': {'$gte': 0}})))) == 3

    other_program(db, f'ALTER TABLE {quote(db, table_name)} DROP COLUMN {quote(db, "other")}')
    assert db.execute(coll.find_one({'_id': 'r1'})) == {'_id': 'r1', 'n': 1}
    assert [d['n'] for d in db.execute(coll.find({'n': {'$gte': 0}}).sort('n', -1))] == [2, 1, 0]
    db.execute(coll.insert_one({'_id': 'r3', 'n': 3}))
    assert db.execute(coll.count({'n': {'$gte': 1}})) == 3

    # writes too (the cached definition still has `n`): a table superduperdb created gets the
    # column again when a write brings it
    other_program(db, f'ALTER TABLE {quote(db, table_name)} DROP COLUMN {quote(db, "n")}')
    assert db.execute(coll.count({'n': {'$gte': 1}})) == 0  # a field no row has now
    db.execute(coll.update_many({'_id': {'$in': ['r0', 'r1']}}, {'$set': {'n': 10}}))
    db.execute(coll.insert_one({'_id': 'r4', 'n': 4}))
    found = {d['_id']: d.get('n') for d in db.execute(coll.find())}
    assert found == {'r0': 10, 'r1': 10, 'r2': None, 'r3': None, 'r4': 4}


def _wide_view(db, table: str, view: str) -> str:
    """The view as versions before this one made it: every column of the table."""
    out = quote(db, output_table(table, 'n', 'double'))
    value = 'coalesce(o.output)' if db.databackend.dialect == 'mysql' else 'o.output'
    return (
        f'CREATE VIEW {quote(db, view)} AS SELECT t.*, {value} AS output, o._version AS model_version '
        f'FROM {quote(db, table)} t JOIN {out} o ON o._id = t._id'
    )


def test_views_of_earlier_versions_are_remade_with_their_own_columns(sql_db, table_name):
    db, coll = sql_db, Collection(table_name)
    db.execute(coll.insert_many([{'n': i, 'text': f'row {i}', 'other': 10 * i} for i in range(3)]))
    db.add(Watcher(model=superduper(lambda x: 2 * x, identifier='double'), key='n', select=coll.find()))
    view = f'{table_name}__n__double'
    other_program(db, f'DROP VIEW {quote(db, view)}', _wide_view(db, table_name, view))
    assert sorted(view_columns(db, view)) == ['_id', 'model_version', 'n', 'other', 'output', 'text']

    assert db.outputs.views(create=True) == {output_table(table_name, 'n', 'double'): view}
    assert sorted(view_columns(db, view)) == ['_id', 'model_version', 'n', 'output']
    other_program(db, f'ALTER TABLE {quote(db, table_name)} DROP COLUMN {quote(db, "other")}')
    assert view_rows(db, view) == [(0, 0), (1, 2), (2, 4)]


def test_a_composite_key_and_a_dotted_key_show_their_columns(pg_db, table_name):
    db = pg_db
    other_program(
        db,
        f'CREATE TABLE {table_name} (a INT, b TEXT, meta JSONB, other TEXT, PRIMARY KEY (a, b))',
        f"""INSERT INTO {table_name} VALUES (1, 'x', '{{"text": "hi"}}', 'o'),"""
        f""" (2, 'y', '{{"text": "hey"}}', 'o')""",
    )
    coll = Collection(table_name)
    size = superduper(lambda x: len(x), identifier='size')
    db.add(Watcher(model=size, key='meta.text', select=coll.find()))
    view = [v for v in db.outputs.views().values() if v][0]
    assert sorted(view_columns(db, view)) == ['a', 'b', 'meta', 'model_version', 'output']
    other_program(db, f'ALTER TABLE {table_name} DROP COLUMN other')
    with db.databackend.engine.connect() as conn:
        shown = conn.execute(sa.text(f'SELECT a, output FROM {quote(db, view)} ORDER BY a')).all()
    assert shown == [(1, 2), (2, 3)]


def test_prepared_statements_survive_a_column_type_change(pg_db, table_name):
    """PostgreSQL: psycopg prepares a statement on a connection after 5 runs; when another
    program changes the type of a column it returns, every later run of it on that connection
    failed with "cached plan must not change result type", until the process restarted."""
    db, coll = pg_db, Collection(table_name)
    db.execute(coll.insert_many([{'_id': f'r{i}', 'text': f'row {i}', 'title': 't'} for i in range(3)]))
    db.add(Watcher(model=superduper(lambda x: len(x), identifier='size'), key='text', select=coll.find()))
    for i in range(12):  # prepared on every pooled connection these reads use
        assert len(list(db.execute(coll.find({'title': 't'})))) == 3 + min(i, 2)
        assert db.execute(coll.find_one({'_id': 'r1'}))['text'] == 'row 1'
        if i < 2:
            db.execute(coll.insert_one({'_id': f'w{i}', 'text': 'seen', 'title': 't'}))

    # a migration: PostgreSQL wants the view of the input column dropped first (and remade after)
    view = f'{table_name}__text__size'
    other_program(
        db,
        f'DROP VIEW {quote(db, view)}',
        f'ALTER TABLE {table_name} ALTER COLUMN text TYPE VARCHAR(200), ALTER COLUMN title TYPE VARCHAR(200)',
    )

    for _ in range(2):  # finds, in the same process
        assert len(list(db.execute(coll.find({'title': 't'})))) == 5
        assert db.execute(coll.find_one({'_id': 'r1'}))['text'] == 'row 1'
    for i in range(2):  # watcher inserts: their jobs read the changed column
        result = db.execute(coll.insert_one({'_id': f'n{i}', 'text': 'x' * (i + 3), 'title': 't'}))
        assert [job.status for job in result.jobs] == ['success']
        assert db.execute(coll.find_one({'_id': f'n{i}'}))['_outputs']['text']['size'] == i + 3
    assert db.outputs.views(create=True)[output_table(table_name, 'text', 'size')] == view
    with db.databackend.engine.connect() as conn:
        shown = conn.execute(sa.text(f'SELECT _id, text, output FROM {quote(db, view)} ORDER BY _id')).all()
    assert [tuple(r) for r in shown if r[0].startswith('n')] == [('n0', 'xxx', 3), ('n1', 'xxxx', 4)]
    assert len(shown) == 7
