"""Names that fail silently no more (issue 14): typo'd tables and columns on SQL, and a
predict/fit input key that no row has, on every backend, get a QueryError with a suggestion."""

from __future__ import annotations

import pytest
from sklearn.linear_model import LogisticRegression

from superduperdb import Collection, superduper
from superduperdb.base.exceptions import QueryError

# MongoDB documents have no fixed fields: queries there are not checked (by design, not a gap)
SQL = pytest.mark.parametrize(
    'backend',
    [pytest.param(b, marks=getattr(pytest.mark, b)) for b in ('sqlite', 'duckdb', 'postgres', 'mysql')],
    indirect=True,
)


@pytest.fixture
def people(db, table_name):
    coll = Collection(table_name)
    db.execute(coll.insert_many([{'name': n, 'age': a} for n, a in [('Ada', 36), ('Alan', 41)]]))
    return db, coll, table_name


def refused(fn, *needles):
    try:
        fn()
    except QueryError as exc:
        for needle in needles:
            assert needle in str(exc), str(exc)
        return
    raise AssertionError('not refused')


@SQL
def test_a_typo_in_the_table_name(people):
    db, _, table = people
    typo = Collection(table[:-1] + 'x')  # one letter off
    for q in (
        typo.find(),
        typo.find_one({}),
        typo.count(),
        typo.update_many({}, {'$set': {'age': 1}}),
        typo.delete_one({}),
    ):
        refused(lambda q=q: db.execute(q), 'does not exist', f'Did you mean {table!r}')
    assert table[:-1] + 'x' not in db.databackend.list_tables()  # nothing created


@SQL
def test_a_typo_in_a_field(people):
    db, coll, table = people
    for q, where in (
        (coll.find({'nmae': 'Ada'}), 'filter'),
        (coll.find({'$or': [{'name': 'Ada'}, {'aeg': 3}]}), 'filter'),
        (coll.find_one({'nmae.first': 'Ada'}), 'filter'),
        (coll.count({'nmae': 'Ada'}), 'filter'),
        (coll.find().sort('aeg'), 'sort'),
        (coll.find({}, {'nmae': 1}), 'projection'),
        (coll.delete_many({'nmae': 'Ada'}), 'filter'),
    ):
        refused(lambda q=q: db.execute(q), f'in the {where}', 'Did you mean')
    assert db.execute(coll.count()) == 2


@SQL
def test_update_many_with_a_typo_adds_no_column(people):
    db, coll, table = people
    before = db.databackend.table(table, refresh=True).c.keys()
    refused(lambda: db.execute(coll.update_many({'nmae': 'Ada'}, {'$set': {'flag': True}})), "'name'")
    assert db.databackend.table(table, refresh=True).c.keys() == before  # no 'flag' column
    # a right filter may still add a column to a table superduperdb made
    db.execute(coll.update_many({'name': 'Ada'}, {'$set': {'flag': True}}))
    assert db.execute(coll.count({'flag': True})) == 1


def test_right_names_and_new_tables_still_work(people):
    db, coll, table = people
    assert [d['name'] for d in db.execute(coll.find({'age': {'$gt': 40}}, {'name': 1}).sort('age'))] == [
        'Alan'
    ]
    assert db.execute(coll.find_one({'_outputs.x.m': {'$exists': False}})) is not None
    fresh = Collection(table + '_new')
    assert db.execute(fresh.insert_one({'a': 1})).count == 1  # inserts create tables
    assert db.execute(fresh.count({'a': 1})) == 1


@SQL
def test_a_column_another_program_added_is_found(people):
    """The reflected table is cached; an unknown name is checked again before refusing."""
    db, coll, table = people
    assert db.execute(coll.count({'age': 36})) == 1  # reflected and cached
    import sqlalchemy as sa

    with db.databackend.engine.begin() as conn:
        q = db.databackend.engine.dialect.identifier_preparer.quote
        conn.execute(sa.text(f'ALTER TABLE {q(table)} ADD COLUMN city VARCHAR(20)'))
    assert db.execute(coll.count({'city': None})) == 2


def test_predict_with_a_missing_key_is_refused_before_it_runs(people):
    db, coll, table = people
    model = superduper(lambda x: len(x), identifier='length')
    refused(lambda: model.predict(X='nmae', db=db, select=coll.find()), "'nmae'", "Did you mean 'name'")
    refused(lambda: model.predict(X='nmae', db=db, select=coll.find(), watch=True), "Did you mean 'name'")
    assert db.show('watcher') == []
    assert not any(j.method == 'predict' for j in db.jobs())  # nothing ran
    report = model.predict(X='name', db=db, select=coll.find())
    assert report.failed == 0


def test_a_watcher_added_with_a_missing_key_is_refused_before_it_is_stored(people):
    from superduperdb import VectorIndex, Watcher

    db, coll, table = people
    model = superduper(lambda x: len(x), identifier='length')
    refused(lambda: db.add(Watcher(model=model, key='nmae', select=coll.find())), "'nmae'", "'name'", 'key=')
    typo = Watcher(model=model, key='nmae', select=coll.find())
    refused(lambda: db.add(VectorIndex('v', indexing_watcher=typo)), "Did you mean 'name'")
    assert db.show('watcher') == [] and db.show('vector_index') == [] and db.show('model') == []
    assert not any(j.method == 'predict' for j in db.jobs())
    assert db.add(Watcher(model=model, key='name', select=coll.find())).jobs_[0].status == 'success'


def test_fit_with_a_missing_key_is_refused(people):
    db, coll, table = people
    clf = superduper(LogisticRegression())
    refused(lambda: clf.fit(X='aeg', y='name', db=db, select=coll.find()), "'aeg'", "Did you mean 'age'")
    refused(lambda: clf.fit(X='age', y='nmae', db=db, select=coll.find()), "'nmae'", 'y=')


def test_a_watcher_on_a_table_yet_to_come_is_allowed(db, table_name):
    model = superduper(lambda x: x, identifier='same')
    job = model.predict(X='x', db=db, select=Collection(table_name).find(), watch=True)
    assert job.status == 'success'
    db.execute(Collection(table_name).insert_one({'x': 5}))
    assert db.execute(Collection(table_name).find_one())['_outputs']['x']['same'] == 5
