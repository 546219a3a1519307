"""The invariant of docs/security.md: bytes are decoded by an encoder that runs code only if
superduperdb wrote them for someone trusted to run code.

Issue 23, items 1 and 2, through the real server over HTTP: the readable output views and
``_outputs`` are internal to the query API (on MariaDB a join view is updatable, and writing
raw bytes into one wrote superduperdb's own output table, decoded by a pickle encoder on the
next read); a token holder cannot create an encoder that runs code, a model using one, a
``Precomputed`` with a foreign encoder, or a ``FunctionModel`` without a function. Beneath
those doors, the root: values of such encoders are stored sealed (HMAC under the database's
key) and bytes without a valid seal are never decoded, whoever wrote them.
"""

from __future__ import annotations

import base64
import pickle
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa

from superduperdb import CFG, Collection
from superduperdb.base.exceptions import ComponentError, InvalidName, UnsealedValue
from superduperdb.encoders.numpy import array
from superduperdb.encoders.pickle import PickleEncoder, pickle_encoder
from superduperdb.models.function import FunctionModel
from superduperdb.models.precomputed import Precomputed
from superduperdb.server.app import create_app, running
from tests.helpers import error_of
from tests.test_security import CALLED, Trap, post

TOKEN = 'security-token-1'
three_servers = pytest.mark.parametrize(
    'backend',
    [
        pytest.param('sqlite', marks=pytest.mark.sqlite),
        pytest.param('postgres', marks=pytest.mark.postgres),
        pytest.param('mysql', marks=pytest.mark.mysql),
    ],
    indirect=True,
)


@pytest.fixture(autouse=True)
def _clear() -> None:
    CALLED.clear()


@pytest.fixture
def served(db) -> Iterator[tuple[Any, str]]:
    with running(create_app(db, token=TOKEN)) as url:
        yield db, url


def _pickled_outputs(db: Any, table: str) -> tuple[str, str]:
    """The operator's model whose outputs a pickle encoder stores, run over ``table``; returns
    (the readable view's name, the output table's name)."""
    db.execute(Collection(table).insert_many([{'_id': i, 'x': i} for i in range(3)]))
    model = FunctionModel('boxed', object=lambda x: {'x': x}, encoder=pickle_encoder)
    model.predict(X='x', db=db, select=Collection(table).find())
    (record,) = db.metadata.outputs_of(table)
    (view,) = _views_of(db, record['_id'])
    return view, record['_id']


def _views_of(db: Any, out: str) -> list[str]:
    from superduperdb.backends.sql.views import output_views

    return output_views(db.databackend, out)


# ----- item 1: the output views are internal, and read-only where the database writes through
@three_servers
def test_output_views_cannot_be_read_or_written_through_the_query_api(served, table_name):
    db, url = served
    view, out = _pickled_outputs(db, table_name)
    evil = base64.b64encode(pickle.dumps(Trap())).decode()
    attempts = [
        {'kind': 'find', 'table': view},
        {'kind': 'count', 'table': view.upper()},
        {
            'kind': 'update',
            'table': view,
            'update': {'$set': {'output': {'_content': {'encoder': None, 'bytes': evil}}}},
        },
        {'kind': 'update', 'table': view, 'update': {'$set': {'x': 7}}},
        {'kind': 'insert', 'table': view, 'documents': [{'x': 9}]},
        {'kind': 'delete', 'table': view},
    ]
    for query in attempts:
        status, kind, message = error_of(post(url, '/execute', {'query': query}))
        assert (status, kind) == (400, 'InvalidName'), query
        assert "view over superduperdb's own tables" in message
    # the outputs are as the model wrote them, and read back through the rows they belong to
    docs = db.execute(Collection(table_name).find())
    assert sorted(d['_outputs']['x']['boxed'].x['x'] for d in docs) == [0, 1, 2]
    assert CALLED == []
    with pytest.raises(InvalidName, match='view over'):
        db.execute(Collection(view).find())  # locally too


@pytest.mark.parametrize('backend', [pytest.param('mysql', marks=pytest.mark.mysql)], indirect=True)
def test_a_mariadb_output_view_is_read_only(db, table_name):
    """What the query API no longer allows, the database refuses as well: an UPDATE of a
    view's output column by any SQL client (MariaDB writes through join views)."""
    view, out = _pickled_outputs(db, table_name)
    quote = db.databackend.engine.dialect.identifier_preparer.quote
    refused = pytest.raises(sa.exc.DatabaseError, match='not updatable')
    with refused, db.databackend.engine.begin() as conn:
        conn.execute(sa.text(f'UPDATE {quote(view)} SET output = :b'), {'b': pickle.dumps(Trap())})
    # the user's own columns stay the user's
    with db.databackend.engine.begin() as conn:
        conn.execute(sa.text(f'UPDATE {quote(view)} SET x = x + 10'))
    assert sorted(d['x'] for d in db.execute(Collection(table_name).find())) == [10, 11, 12]


@pytest.mark.parametrize('backend', [pytest.param('mysql', marks=pytest.mark.mysql)], indirect=True)
def test_a_view_made_before_read_only_views_is_remade_read_only(db, table_name):
    view, out = _pickled_outputs(db, table_name)
    quote = db.databackend.engine.dialect.identifier_preparer.quote
    with db.databackend.engine.begin() as conn:  # the updatable view earlier versions made
        conn.execute(
            sa.text(
                f'CREATE OR REPLACE VIEW {quote(view)} AS SELECT s.*, o.output, o._version AS model_version '
                f'FROM {quote(table_name)} s JOIN {quote(out)} o ON o._id = s._id'
            )
        )
    assert db.outputs.views(create=True) == {out: view}  # what to run once after upgrading
    with pytest.raises(sa.exc.DatabaseError), db.databackend.engine.begin() as conn:
        conn.execute(sa.text(f'UPDATE {quote(view)} SET output = :b'), {'b': b'x'})


@pytest.mark.parametrize(
    'backend',
    [pytest.param('mongodb', marks=pytest.mark.mongodb), pytest.param('sqlite', marks=pytest.mark.sqlite)],
    indirect=True,
)
def test_outputs_are_never_written_by_queries(served, table_name):
    """On MongoDB outputs live in the document under _outputs (decoded with the model's
    encoder when read): a token holder rewrote them with a plain update."""
    db, url = served
    db.execute(Collection(table_name).insert_many([{'_id': i, 'x': i} for i in range(3)]))
    model = FunctionModel('double', object=lambda x: 2 * x)
    model.predict(X='x', db=db, select=Collection(table_name).find())
    attempts = [
        {'kind': 'update', 'table': table_name, 'update': {'$set': {'_outputs.x.double': 99}}},
        {'kind': 'update', 'table': table_name, 'update': {'$set': {'_outputs': {'x': {'double': 99}}}}},
        {'kind': 'update', 'table': table_name, 'update': {'$unset': {'_outputs.x': ''}}},
        {'kind': 'update', 'table': table_name, 'update': {'$inc': {'_outputs.x.double': 1}}},
        {'kind': 'insert', 'table': table_name, 'documents': [{'x': 5, '_outputs': {'x': {'double': 1}}}]},
    ]
    for query in attempts:
        status, kind, message = error_of(post(url, '/execute', {'query': query}))
        assert (status, kind) == (400, 'InvalidName'), query
        assert 'written by superduperdb only' in message
    found = sorted(d['_outputs']['x']['double'] for d in db.execute(Collection(table_name).find()))
    assert found == [0, 2, 4]
    assert db.execute(Collection(table_name).count()) == 3


# ----- item 2: the gadgets -------------------------------------------------------------------
@three_servers
def test_a_token_holder_cannot_create_encoders_or_models_that_run_code(served):
    db, url = served
    db.add(array('float32', 1))  # the operator's: plain data
    gadgets = {
        'a pickle encoder': {
            'cls': 'superduperdb.encoders.pickle:PickleEncoder',
            'params': {'identifier': 'pk'},
        },
        'a model using the operator pickle encoder': {
            'cls': 'superduperdb.models.precomputed:Precomputed',
            'params': {
                'identifier': 'pre',
                'dimensions': 1,
                'encoder': {'_component': ['encoder', 'pickle', 0]},
            },
        },
    }
    db.add(PickleEncoder('pickle'))  # the operator may have one: token holders still cannot use it
    for what, config in gadgets.items():
        status, kind, message = error_of(post(url, '/components', {'config': config}))
        assert (status, kind) == (403, 'Forbidden'), what
        assert 'runs code when it decodes (it may unpickle)' in message
    odd = {
        'a Precomputed with an encoder of another shape': {
            'cls': 'superduperdb.models.precomputed:Precomputed',
            'params': {
                'identifier': 'pre2',
                'dimensions': 3,
                'encoder': {'_component': ['encoder', 'numpy.float32[1]', 0]},
            },
        },
        'a FunctionModel without a function': {
            'cls': 'superduperdb.models.function:FunctionModel',
            'params': {'identifier': 'nothing'},
        },
    }
    for what, config in odd.items():
        status, kind, message = error_of(post(url, '/components', {'config': config}))
        assert (status, kind) == (400, 'ComponentError'), what
    assert db.show('model') == []
    assert db.show('encoder') == ['numpy.float32[1]', 'pickle']
    # a plain-data encoder and a Precomputed that fits are still welcome
    fine = {
        'cls': 'superduperdb.models.precomputed:Precomputed',
        'params': {
            'identifier': 'pre3',
            'dimensions': 1,
            'encoder': {'_component': ['encoder', 'numpy.float32[1]', 0]},
        },
    }
    assert post(url, '/components', {'config': fine}).status_code == 200
    assert db.show('model') == ['pre3']


def test_the_same_checks_hold_locally(tmp_path):
    from superduperdb import superduper

    db = superduper(f'sqlite:///{tmp_path}/local.sqlite')
    with pytest.raises(ComponentError, match='no function'):
        db.add(FunctionModel('nothing'))
    with pytest.raises(ComponentError, match='float32'):
        db.add(Precomputed('pre', dimensions=2, encoder=pickle_encoder))
    db.add(Precomputed('pre', dimensions=2, encoder=array('float32', 2)))
    assert db.show('model') == ['pre']


# ----- the root: sealed values ---------------------------------------------------------------
def _raw_update(db: Any, table: str, column: str, value: bytes) -> None:
    """Another program (or a view that let a write through) replaces stored bytes."""
    with db.databackend.engine.begin() as conn:
        conn.execute(sa.text(f'UPDATE {table} SET {column} = :v'), {'v': value})


@three_servers
def test_bytes_superduperdb_did_not_seal_are_never_decoded(served, table_name):
    db, url = served
    view, out = _pickled_outputs(db, table_name)
    db.execute(Collection(table_name).update_many({}, {'$set': {'p': pickle_encoder({'kept': 1})}}))
    stored = db.databackend.engine.connect().execute(sa.text(f'SELECT p FROM {table_name}')).scalars().first()
    assert pickle.dumps({'kept': 1}, protocol=5) in bytes(stored)  # sealed: the marker and tag before it
    # the attack of item 1, had a write reached the output table; and a column written by someone else
    for table, column in ((out, 'output'), (table_name, 'p')):
        _raw_update(db, table, column, pickle.dumps(Trap()))
        status, kind, message = error_of(
            post(url, '/execute', {'query': {'kind': 'find', 'table': table_name}})
        )
        assert (status, kind) == (400, 'UnsealedValue')
        assert 'not written by superduperdb' in message
        with pytest.raises(UnsealedValue):
            db.execute(Collection(table_name).find_one())
    # a value sealed by another database (another key) does not pass either
    from superduperdb.base.seal import Seal

    _raw_update(db, table_name, 'p', Seal(b'another database key 32 bytes!!!').close(pickle.dumps(Trap())))
    with pytest.raises(UnsealedValue):
        db.execute(Collection(table_name).find_one())
    assert CALLED == []


@pytest.mark.parametrize('backend', [pytest.param('sqlite', marks=pytest.mark.sqlite)], indirect=True)
def test_values_stored_before_seals_are_read_once_by_the_operators_choice(db, table_name):
    db.execute(Collection(table_name).insert_one({'_id': 1, 'p': pickle_encoder([1, 2])}))
    _raw_update(db, table_name, 'p', pickle.dumps([3, 4]))  # as versions before 2026-12 stored it
    with pytest.raises(UnsealedValue, match='decode_unsealed_values'):
        db.execute(Collection(table_name).find_one())
    with CFG.override(**{'components.decode_unsealed_values': True}):
        value = db.execute(Collection(table_name).find_one())['p'].x
        db.execute(Collection(table_name).update_one({'_id': 1}, {'$set': {'p': pickle_encoder(value)}}))
    assert db.execute(Collection(table_name).find_one())['p'].x == [3, 4]  # written back sealed
    # the setting never lets a wrongly sealed value through
    _raw_update(db, table_name, 'p', b'\x00sdseal1' + b'\x00' * 32 + pickle.dumps(Trap()))
    with CFG.override(**{'components.decode_unsealed_values': True}), pytest.raises(UnsealedValue):
        db.execute(Collection(table_name).find_one())
    assert CALLED == []


@pytest.mark.parametrize('backend', [pytest.param('sqlite', marks=pytest.mark.sqlite)], indirect=True)
def test_every_process_shares_one_key(db, tmp_path, table_name):
    """A second Datalayer (another process: a worker, the server, cdc) reads what the first sealed."""
    from superduperdb import superduper

    db.execute(Collection(table_name).insert_one({'p': pickle_encoder(np.arange(3))}))
    other = superduper(db.spec['uri'] if db.spec and 'uri' in db.spec else str(db.databackend.engine.url))
    try:
        assert other.execute(Collection(table_name).find_one())['p'].x.tolist() == [0, 1, 2]
    finally:
        other.close()
    assert db.metadata.positions() == []  # the key's record is not a change-capture stream


@pytest.mark.parametrize(
    'backend',
    [pytest.param('mongodb', marks=pytest.mark.mongodb), pytest.param('sqlite', marks=pytest.mark.sqlite)],
    indirect=True,
)
def test_references_of_encoders_that_run_code_are_never_fetched(db, tmp_path, table_name):
    """A reference fetches bytes whoever controls the address chose: for pickle, code."""
    from superduperdb.base.exceptions import EncodingError

    payload = tmp_path / 'evil.pkl'
    payload.write_bytes(pickle.dumps(Trap()))
    with pytest.raises(EncodingError, match='does not fetch'):
        pickle_encoder(uri=payload.as_uri())
    if db.databackend.self_describing:  # another program writes a reference into a document
        db.add(PickleEncoder('pickle'))
        raw = {'_content': {'encoder': 'pickle', 'version': 0, 'uri': payload.as_uri()}}
        db.databackend.insert(table_name, [{'_id': 1, 'p': raw}], new_columns=True)
        from superduperdb.jobs.local import run_job  # noqa: F401  (the job runs in the foreground)

        (job,) = db.submit_jobs(
            [db.new_job('download', {'table': table_name, 'fields': ['p'], 'ids': [1], 'policy': None})]
        )
        assert job.result == {'downloaded': 0, 'failed': 1}
        assert 'does not fetch' in db.metadata.failures(f'download:{table_name}.p')[0]['message']
    assert CALLED == []
