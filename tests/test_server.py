"""The server and the remote client: real HTTP to a uvicorn server in a thread, on SQLite,
PostgreSQL and MongoDB (mongomock here, see conftest); the auth rules, no unpickling of request
bytes, body limits, one error shape, and schemathesis over the OpenAPI spec."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from superduperdb import Collection, VectorIndex, Watcher, superduper
from superduperdb.base.exceptions import (
    ComponentInUse,
    ComponentNotAllowed,
    ComponentNotFound,
    ConnectionFailed,
    InvalidName,
    QueryError,
)
from superduperdb.encoders.numpy import array
from superduperdb.server.app import create_app, running
from superduperdb.server.client import Client, RemoteJob
from superduperdb.server.errors import CursorNotFound, Forbidden, RequestTooLarge, Unauthorized
from superduperdb.server.spawn import free_port

TOKEN = 'test-token-123'
both = pytest.mark.parametrize('backend', ['sqlite', 'postgres', 'mongodb'], indirect=True)
sqlite = pytest.mark.parametrize('backend', ['sqlite'], indirect=True)


@pytest.fixture
def served(db) -> Iterator[tuple[Any, str]]:
    """``(db, url)``: the fixture's database served with token ``TOKEN``."""
    with running(create_app(db, token=TOKEN)) as url:
        yield db, url


@pytest.fixture
def client(served) -> Iterator[Client]:
    # the models these tests load are the operator's own (pickled): this client trusts them
    with Client(served[1], token=TOKEN, trust_code=['double', 'clf', 'waits']) as c:
        yield c


def double(x):
    return 2 * x


# ----- queries --------------------------------------------------------------------------
@both
def test_queries_round_trip(served, client, backend, table_name):
    db, url = served
    coll = Collection(table_name)
    vec = array('float32', (3,))
    docs = [
        {'n': i, 'x': vec(np.full(3, i, dtype='float32')), 'tags': ['a', str(i)], 'meta': {'k': i}}
        for i in range(5)
    ]
    written = client.execute(coll.insert_many(docs))
    assert written.count == 5 and written.jobs == []
    assert client.execute(coll.count()) == 5
    assert client.execute(coll.count({'n': {'$gte': 3}})) == 2

    found = list(client.execute(coll.find({'n': {'$lt': 3}}).sort('n')))
    assert [d['n'] for d in found] == [0, 1, 2]
    assert found[2]['x'].x.tolist() == [2.0, 2.0, 2.0] and found[2]['x'].x.dtype == np.float32
    assert found[1]['tags'] == ['a', '1'] and found[1]['meta'] == {'k': 1}
    assert list(client.execute(coll.find({}, {'n': 1}).sort('n', -1).limit(2).skip(1)))[0]['n'] == 3

    one = client.execute(coll.find_one({'n': 4}))
    assert one['x'].x.tolist() == [4.0] * 3
    # ids read through the client work in the next query (MongoDB's ObjectIds included)
    assert type(one['_id']) is type(db.execute(coll.find_one({'n': 4}))['_id'])
    assert client.execute(coll.find_one({'_id': one['_id']}))['n'] == 4
    assert client.execute(coll.update_one({'_id': one['_id']}, {'$set': {'seen': True}})).ids == [one['_id']]
    if backend == 'mongodb':  # a document written by another program has an ObjectId
        from bson import ObjectId

        oid = db.databackend.database[table_name].insert_one({'n': 50}).inserted_id
        assert isinstance(oid, ObjectId)
        found = client.execute(coll.find_one({'n': 50}))
        assert found['_id'] == oid and isinstance(found['_id'], ObjectId)
        assert client.execute(coll.find_one({'_id': oid}))['n'] == 50
        assert client.execute(coll.delete_one({'_id': oid})).ids == [oid]
    assert client.execute(coll.find_one({'n': 99})) is None

    updated = client.execute(coll.update_one({'n': 4}, {'$set': {'x': vec(np.zeros(3, dtype='float32'))}}))
    assert updated.count == 1
    assert client.execute(coll.find_one({'n': 4}))['x'].x.tolist() == [0.0] * 3
    assert client.execute(coll.update_many({'n': {'$gt': 0}}, {'$inc': {'n': 10}})).count == 4

    assert client.execute(coll.delete_one({'n': 0})).count == 1
    assert client.execute(coll.delete_many({'n': {'$gt': 12}})).count == 2
    assert sorted(d['n'] for d in db.execute(coll.find())) == [11, 12]  # the server's view agrees
    assert 'numpy.float32[3]' in client.show('encoder')


@both
def test_find_results_come_a_page_per_request(db, table_name, monkeypatch):
    """A find larger than a page streams: each page is its own request, the server keeps a
    cursor for the rest, drops it at the end or when the reader stops, and an unknown or expired
    cursor gets 404 with what to do."""
    monkeypatch.setattr(db, 'chunk_size', 10)  # a page is the server's chunk
    app = create_app(db, token=TOKEN)
    cursors = app.state.cursors
    with running(app) as url, Client(url, token=TOKEN) as client:
        coll = Collection(table_name)
        client.execute(coll.insert_many([{'n': i} for i in range(35)]))
        requests: list[str] = []
        client._http.event_hooks['request'].append(lambda r: requests.append(f'{r.method} {r.url.path}'))

        cursor = client.execute(coll.find({'n': {'$gte': 2}}).sort('n'))
        assert requests == ['POST /execute'] and len(cursors) == 1  # the rest waits on the server
        assert [d['n'] for d in cursor] == list(range(2, 35))
        assert len([r for r in requests if r.startswith('GET /cursors/')]) == 3 and len(cursors) == 0
        assert [d['n'] for d in client.execute(coll.find({'n': {'$lt': 10}}))] == list(range(10))
        assert len(cursors) == 0  # a find that fits one page leaves nothing open

        partial = client.execute(coll.find())
        assert next(partial)['n'] == 0 and len(cursors) == 1
        partial._chunks.close()  # a reader that stops early (what garbage collection does too)
        assert len(cursors) == 0 and requests[-1].startswith('DELETE /cursors/')

        client.execute(coll.find())
        (cursor_id,) = list(cursors._open)
        monkeypatch.setattr(cursors, 'ttl', 0.0)
        with pytest.raises(CursorNotFound, match='Run the query again') as info:
            client._call('GET', f'/cursors/{cursor_id}')
        assert isinstance(info.value, KeyError) and len(cursors) == 0
        response = httpx.get(f'{url}/cursors/nope', headers={'Authorization': f'Bearer {TOKEN}'})
        assert response.status_code == 404 and response.json()['error']['type'] == 'CursorNotFound'


@both
def test_insert_through_client_reads_locally_and_back(served, client, table_name):
    db, _ = served
    coll = Collection(table_name)
    db.execute(coll.insert_one({'v': array('float64', (2,))(np.array([1.5, 2.5])), 'name': 'local'}))
    doc = client.execute(coll.find_one({'name': 'local'}))
    assert doc['v'].x.tolist() == [1.5, 2.5]
    client.execute(coll.insert_one({'v': array('float64', (2,))(np.array([3.0, 4.0])), 'name': 'remote'}))
    assert db.execute(coll.find_one({'name': 'remote'}))['v'].x.tolist() == [3.0, 4.0]


# ----- components, jobs, status, predict ------------------------------------------------
@both
def test_components_jobs_status_and_predict(served, client, table_name):
    db, url = served
    coll = Collection(table_name)
    client.execute(coll.insert_many([{'x': i} for i in range(4)]))
    db.add(superduper(double, identifier='double'))  # a model needs artifacts: added on the server

    assert client.show() == db.show()
    assert client.show('model') == ['double'] and client.show('model', 'double') == [0]
    model = client.load('model', 'double')
    assert model.identifier == 'double' and model.version == 0
    assert model.predict([1, 2]) == [2, 4]  # rebuilt here, artifacts included
    assert client.predict('double', [5, 6]) == [10, 12]  # computed on the server

    watcher = client.add(Watcher(model=model, key='x', select=coll.find()))  # no artifacts of its own
    assert watcher.version == 0 and [type(j) for j in watcher.jobs_] == [RemoteJob]
    assert watcher.jobs_[0].wait().status == 'success'
    assert client.execute(coll.find_one({'x': 3}))['_outputs']['x']['double'] == 6

    written = client.execute(coll.insert_one({'x': 10}))
    assert [j.wait().status for j in written.jobs] == ['success']
    assert client.execute(coll.find_one({'x': 10}))['_outputs']['x']['double'] == 20

    jobs = client.jobs()
    assert {j.id for j in jobs} >= {watcher.jobs_[0].id, written.jobs[0].id}
    assert client.show('job')[0].id == jobs[0].id
    assert client.jobs('success') and client.jobs('failed') == []
    job = client.job(written.jobs[0].id)
    assert job.status == 'success' and job.method == 'predict' and job.done == 1
    out = io.StringIO()
    assert client.watch_job(job.id, out=out, poll=0.01).status == 'success'
    assert f'{job.id} success (1/1)' in out.getvalue()

    (row,) = client.status()
    assert row['watcher'] == watcher.identifier and row['rows'] == 5 and row['backlog'] == 0

    with pytest.raises(ComponentInUse, match='depend'):
        client.remove('model', 'double')
    client.remove('watcher', watcher.identifier)
    client.remove('model', 'double')
    assert client.show('model') == []
    with pytest.raises(ComponentNotFound, match='double'):
        client.load('model', 'double')


@both
def test_a_partitioned_backfill_through_the_client_returns_the_job_that_waits_for_every_part(
    served, client, table_name
):
    from superduperdb import CFG

    db, _ = served
    coll = Collection(table_name)
    client.execute(coll.insert_many([{'x': i} for i in range(30)]))
    db.add(superduper(double, identifier='double'))
    model = client.load('model', 'double')
    with CFG.override(**{'cluster.backfill_partitions': 3, 'cluster.backfill_partition_rows': 5}):
        job = model.predict(X='x', db=client, select=coll.find(), watch=True)
    assert isinstance(job, RemoteJob) and job.method == 'predict_parts'
    done = job.wait()
    assert done.status == 'success' and done.result['computed'] == 30  # the sum over the 3 parts
    found = {d['x']: d['_outputs']['x']['double'] for d in client.execute(coll.find())}
    assert found == {i: 2 * i for i in range(30)}


@both
def test_a_stored_model_predicts_and_fits_over_a_query_through_the_client(served, client, table_name):
    from sklearn.linear_model import LogisticRegression

    from superduperdb.predict.over_query import PredictReport

    db, _ = served
    coll = Collection(table_name)
    client.execute(coll.insert_many([{'x': i} for i in range(4)]))
    db.add(superduper(double, identifier='double'))  # a model needs artifacts: added on the server
    model = client.load('model', 'double')

    report = model.predict(X='x', db=client, select=coll.find({'x': {'$gte': 1}}))
    assert isinstance(report, PredictReport)
    assert (report.model, report.version, report.key, report.computed) == ('double', 0, 'x', 3)
    found = {d['x']: d.get('_outputs', {}).get('x', {}).get('double') for d in client.execute(coll.find())}
    assert found == {0: None, 1: 2, 2: 4, 3: 6}
    again = model.predict(X='x', db=client, select=coll.find(), overwrite=False)
    assert (again.computed, again.skipped) == (1, 3)

    job = model.predict(X='x', db=client, select=coll.find(), watch=True)
    assert isinstance(job, RemoteJob) and job.wait().status == 'success'
    written = client.execute(coll.insert_one({'x': 10}))
    assert [j.wait().status for j in written.jobs] == ['success']
    assert client.execute(coll.find_one({'x': 10}))['_outputs']['x']['double'] == 20

    rows = Collection(f'{table_name}_train')
    client.execute(rows.insert_many([{'f': [float(i)], 'label': int(i >= 2)} for i in range(4)]))
    db.add(superduper(LogisticRegression(), identifier='clf'))
    clf = client.load('model', 'clf')
    trained = clf.fit(X='f', y='label', db=client, select=rows.find())
    assert trained.version == 1 and client.show('model', 'clf') == [0, 1]
    assert trained.metrics['trained_on'] == 4
    assert trained.predict([[0.0], [3.0]]) == [0, 1]  # the trained weights, loaded from the server
    assert client.predict('clf', [[3.0]]) == [1]  # the latest version is the trained one


RELEASE = __import__('threading').Event()
STARTED = __import__('threading').Event()


def waits(x):
    """A model that holds its predict until the test releases it."""
    STARTED.set()
    assert RELEASE.wait(30), 'never released'
    return x


@pytest.mark.parametrize('backend', ['sqlite', 'postgres'], indirect=True)
def test_reads_do_not_wait_for_a_long_predict(served, client, table_name):
    """While one client's predict over a query runs, other clients' queries are answered."""
    import concurrent.futures

    db, url = served
    coll = Collection(table_name)
    client.execute(coll.insert_many([{'x': i} for i in range(3)]))
    db.add(superduper(waits, identifier='waits'))
    db.add(superduper(double, identifier='double'))
    model = client.load('model', 'waits')
    STARTED.clear()
    RELEASE.clear()
    with concurrent.futures.ThreadPoolExecutor(1) as pool, Client(url, token=TOKEN) as other:
        running_predict = pool.submit(model.predict, X='x', db=client, select=coll.find())
        try:
            assert STARTED.wait(30)
            started = time.monotonic()
            assert other.execute(coll.count()) == 3
            assert sorted(d['x'] for d in other.execute(coll.find())) == [0, 1, 2]
            assert sorted(other.show('model')) == ['double', 'waits'] and other.jobs() is not None
            assert other.predict('double', [7]) == [14]  # a predict on values is a read
            assert time.monotonic() - started < 10 and not running_predict.done()
        finally:
            RELEASE.set()
        assert running_predict.result(30).computed == 3


@pytest.mark.parametrize('backend', ['sqlite', 'postgres'], indirect=True)
def test_concurrent_clients_read_and_write_consistently(served, table_name):
    """Four clients in threads insert (a watcher computing outputs) and read at the same time."""
    import concurrent.futures

    db, url = served
    coll = Collection(table_name)
    db.execute(coll.insert_one({'x': -1, 'who': 'seed'}))
    db.add(superduper(double, identifier='double')).predict(X='x', db=db, select=coll.find(), watch=True)

    def work(who: int) -> int:
        seen = 0
        with Client(url, token=TOKEN) as c:
            for i in range(15):
                written = c.execute(coll.insert_one({'x': i, 'who': f'c{who}'}))
                assert [j.status for j in written.jobs] == ['success']
                mine = list(c.execute(coll.find({'who': f'c{who}'})))
                assert len(mine) == i + 1
                assert all(d['_outputs']['x']['double'] == 2 * d['x'] for d in mine)
                seen = max(seen, c.execute(coll.count()))
        return seen

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        seen = list(pool.map(work, range(4)))
    assert max(seen) == 61 and db.execute(coll.count()) == 61
    docs = list(db.execute(coll.find()))
    assert all(d['_outputs']['x']['double'] == 2 * d['x'] for d in docs)


def test_databases_that_cannot_share_threads_take_turns(tmp_path):
    from superduperdb.server.app import _one_thread_only

    for uri, alone in [
        ('sqlite:///:memory:', True),
        (f'sqlite:///{tmp_path}/file.db', False),
        (f'duckdb:///{tmp_path}/file.duckdb', True),
        ('mongomock://localhost/test', True),
    ]:
        db = superduper(uri)
        try:
            assert _one_thread_only(db) is alone, uri
        finally:
            db.close()


@sqlite
def test_a_model_not_on_the_server_is_refused_or_not_found(served, client, table_name):
    coll = Collection(table_name)
    client.execute(coll.insert_one({'x': 1}))
    model = superduper(double, identifier='local-only')
    # never stored: it would be uploaded, and this server does not take pickled models
    with pytest.raises(Forbidden, match='allow_artifact_upload') as info:
        model.predict(X='x', db=client, select=coll.find())
    assert 'client.load("model", \'local-only\')' in str(info.value)
    with pytest.raises(Forbidden, match='local-only'):
        model.predict(X='x', db=client, select=coll.find(), watch=True)
    with pytest.raises(Forbidden, match='local-only'):
        model.fit(X='x', y='x', db=client, select=coll.find())
    assert client.show('model') == []
    # a version the server does not hold
    model.version = 3
    with pytest.raises(ComponentNotFound, match='add .local-only. on the server') as info:
        model.predict(X='x', db=client, select=coll.find())
    assert 'client.add(model)' in str(info.value)
    # the query is checked before anything is uploaded or run
    with pytest.raises(QueryError, match='find query'):
        model.predict(X='x', db=client, select=coll.find_one())
    with pytest.raises(QueryError, match='plain find'):  # the server checks too
        client._call(
            'POST',
            '/models/local-only/predict_query',
            json_body={'key': 'x', 'select': {'kind': 'findone', 'table': table_name}},
        )


@both
def test_the_seed_snippets_run_unchanged_against_a_server_that_takes_uploads(db, table_name):
    """DESIGN's first snippets, with ``db`` a client: fit, predict and watch a new model."""
    from sklearn.svm import SVC

    with running(create_app(db, token=TOKEN, allow_artifact_upload=True)) as url:
        client = superduper(url, token=TOKEN, trust_code=['SVC'])  # the trained SVC comes back pickled
        try:
            coll = Collection(table_name)
            rows = [{'input_col': [float(i), float(i % 3)], 'predict_col': int(i >= 10)} for i in range(20)]
            for i, row in enumerate(rows):
                row['_fold'] = 'valid' if i % 4 == 0 else 'train'
            client.execute(coll.insert_many(rows))

            model = superduper(SVC())
            model.fit(X='input_col', y='predict_col', db=client, select=coll.find({'_fold': 'train'}))
            assert model.version == 1  # uploaded as 0, trained on the server as 1
            report = model.predict(X='input_col', db=client, select=coll.find({'_fold': 'valid'}))
            assert report.computed == 5 and report.version == 1

            job = model.predict(X='input_col', db=client, select=coll.find(), watch=True)
            assert job.wait().status == 'success'
            written = client.execute(coll.insert_one({'input_col': [25.0, 1.0], 'predict_col': 1}))
            assert [j.wait().status for j in written.jobs] == ['success']
            found = {
                tuple(d['input_col']): d['_outputs']['input_col'][model.identifier]
                for d in db.execute(coll.find())  # read back locally: written on the server
            }
            assert len(found) == 21 and found[(25.0, 1.0)] == 1 and found[(0.0, 0.0)] == 0
            assert client.load('model', model.identifier, 0).version == 0  # the untrained upload
        finally:
            client.close()


@both
def test_like_over_a_vector_index(served, client, table_name):
    db, _ = served
    coll = Collection(table_name)
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(50, 8)).astype('float32')
    brands = ['Nike' if i % 5 == 0 else 'Other' for i in range(50)]
    client.execute(
        coll.insert_many(
            [{'n': i, 'v': v.tolist(), 'brand': b} for i, (v, b) in enumerate(zip(vectors, brands))]
        )
    )
    identity = superduper(lambda v: np.asarray(v, dtype='float32'), identifier='identity')
    index = db.add(VectorIndex('vecs', indexing_watcher=Watcher(model=identity, key='v', select=coll.find())))
    assert [j.status for j in index.jobs_] == ['success']

    q = rng.normal(size=8).astype('float32')
    local = list(db.execute(coll.like({'v': q}, 'vecs', n=5)))
    remote = list(client.execute(coll.like({'v': q}, 'vecs', n=5)))
    assert [d['n'] for d in remote] == [d['n'] for d in local]
    assert [d['_score'] for d in remote] == pytest.approx([d['_score'] for d in local])
    assert remote[0]['_outputs']['v']['identity'].x.tolist() == pytest.approx(
        vectors[remote[0]['n']].tolist()
    )

    assert [d['n'] for d in client.execute(coll.like(q, 'vecs', n=3))] == [d['n'] for d in local[:3]]
    filtered = list(client.execute(coll.find({'brand': 'Nike'}).like({'v': q}, 'vecs', n=4)))
    assert len(filtered) == 4 and all(d['brand'] == 'Nike' for d in filtered)
    assert [d['n'] for d in filtered] == [
        d['n'] for d in db.execute(coll.find({'brand': 'Nike'}).like({'v': q}, 'vecs', n=4))
    ]
    then = list(client.execute(coll.like({'v': q}, 'vecs', n=5).find({'brand': 'Other'})))
    assert [d['n'] for d in then] == [d['n'] for d in local if d['brand'] == 'Other']
    with pytest.raises(ComponentNotFound):
        client.execute(coll.like(q, 'no-such-index', n=3))


# ----- security -------------------------------------------------------------------------
@sqlite
def test_every_route_but_health_needs_the_token(served):
    _, url = served
    assert httpx.get(f'{url}/health').json()['status'] == 'ok'
    routes = [
        ('POST', '/execute', {'query': {'kind': 'count', 'table': 't'}}),
        ('GET', '/components', None),
        ('POST', '/components', {'config': {}}),
        ('GET', '/components/model/m', None),
        ('DELETE', '/components/model/m', None),
        ('GET', '/jobs', None),
        ('GET', '/jobs/abc', None),
        ('POST', '/models/m/predict', {'values': [1]}),
        ('POST', '/models/m/predict_query', {'key': 'x', 'select': {'kind': 'find', 'table': 't'}}),
        ('POST', '/models/m/fit', {'X': 'x', 'select': {'kind': 'find', 'table': 't'}}),
        ('GET', '/status', None),
    ]
    for headers in ({}, {'Authorization': 'Bearer wrong'}, {'Authorization': 'Basic dXNlcjpwYXNz'}):
        for method, path, body in routes:
            response = httpx.request(method, url + path, json=body, headers=headers)
            assert response.status_code == 401, (method, path, headers)
            assert response.json()['error']['type'] == 'Unauthorized'
    good = {'Authorization': f'Bearer {TOKEN}'}
    assert httpx.get(f'{url}/jobs', headers=good).status_code == 200
    assert httpx.get(f'{url}/docs').status_code == 401  # the docs need the token too
    assert httpx.get(f'{url}/docs', headers=good).status_code == 200
    with Client(url) as anonymous, pytest.raises(Unauthorized, match='token'):
        anonymous.show()
    with Client(url, token='nope') as wrong, pytest.raises(Unauthorized, match='Wrong token'):
        wrong.show()


def test_an_app_without_a_token_must_be_insecure_explicitly(tmp_path):
    from superduperdb import CFG
    from superduperdb.base.exceptions import ConfigError

    db = superduper(f'sqlite:///{tmp_path}/x.db')
    try:
        with CFG.override(**{'server.token': None}):
            with pytest.raises(ConfigError, match='insecure'):
                create_app(db)
            with running(create_app(db, insecure=True)) as url, Client(url) as c:
                assert c.show() == {}
    finally:
        db.close()


def test_serve_refuses_to_start_without_a_token(monkeypatch):
    from typer.testing import CliRunner

    from superduperdb import CFG
    from superduperdb.cli import app

    with CFG.override(**{'server.token': None}):
        result = CliRunner().invoke(app, ['serve', '--uri', 'sqlite:///:memory:'])
    assert result.exit_code == 1
    assert '--insecure' in result.output and 'token' in result.output


UNPICKLED: list[str] = []


def _mark() -> str:
    UNPICKLED.append('unpickled')
    return 'x'


class Trap:
    """Unpickling this calls ``_mark``: the test sees whether the server unpickled it."""

    def __reduce__(self) -> Any:
        return (_mark, ())


@sqlite
def test_the_server_never_unpickles_request_bytes_by_default(served, client, table_name):
    import base64

    import cloudpickle

    from superduperdb.encoders.pickle import pickle_encoder

    UNPICKLED.clear()
    with pytest.raises(Forbidden, match='allow_artifact_upload'):
        client.add(superduper(double, identifier='double'))
    payload = base64.b64encode(cloudpickle.dumps(Trap())).decode()
    config = {
        'cls': 'superduperdb.models.function:FunctionModel',
        'params': {'identifier': 'm', 'object': {'_artifact': 'object'}},
    }
    response = httpx.post(
        f'{served[1]}/components',
        json={'config': config, 'artifacts': {'object': payload}},
        headers={'Authorization': f'Bearer {TOKEN}'},
    )
    assert response.status_code == 403 and response.json()['error']['type'] == 'Forbidden'
    # a value encoded with an encoder that unpickles is not decoded either
    with pytest.raises(Forbidden, match='unpickle'):
        client.execute(Collection(table_name).insert_one({'p': pickle_encoder(Trap())}))
    # nor a component class outside superduperdb
    with pytest.raises(ComponentNotAllowed, match='not allowed'):
        client._call('POST', '/components', json_body={'config': {'cls': 'os:system', 'params': {}}})
    assert UNPICKLED == []


def test_artifact_upload_when_switched_on(tmp_path, table_name):
    db = superduper(f'sqlite:///{tmp_path}/x.db')
    try:
        with running(create_app(db, token=TOKEN, allow_artifact_upload=True)) as url, Client(url, TOKEN) as c:
            model = c.add(superduper(double, identifier='double'))
            assert model.version == 0 and c.predict('double', [1, 2]) == [2, 4]
            assert db.load('model', 'double').predict([3]) == [6]
    finally:
        db.close()


def test_request_body_over_the_limit_gets_413(tmp_path, table_name):
    db = superduper(f'sqlite:///{tmp_path}/x.db')
    try:
        with running(create_app(db, token=TOKEN, max_body_mb=0.01)) as url, Client(url, TOKEN) as c:
            big = [{'text': 'x' * 1000} for _ in range(20)]
            with pytest.raises(RequestTooLarge, match='max_body_mb'):
                c.execute(Collection(table_name).insert_many(big))
            headers = {'Authorization': f'Bearer {TOKEN}', 'Content-Type': 'application/json'}

            def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
                yield b'{"query": {"kind": "insert", "table": "t", "documents": ['
                for _ in range(30):
                    yield b'{"text": "' + b'x' * 1000 + b'"},'
                yield b'{}]}}'

            response = httpx.post(f'{url}/execute', content=chunks(), headers=headers)
            assert response.status_code == 413 and response.json()['error']['type'] == 'RequestTooLarge'
            assert c.execute(Collection(table_name).insert_many(big[:2])).count == 2
    finally:
        db.close()


# ----- errors ---------------------------------------------------------------------------
@sqlite
def test_errors_have_one_shape_and_the_client_raises_the_same_class(served, client):
    _, url = served
    headers = {'Authorization': f'Bearer {TOKEN}'}
    cases = [
        ('GET', '/components/model/nope', None, 404, 'ComponentNotFound'),
        ('POST', '/execute', {'query': {'kind': 'find', 'table': 'a b'}}, 400, 'RequestValidationError'),
        (
            'POST',
            '/execute',
            {'query': {'kind': 'find', 'table': 't', 'filter': {'a b': 1}}},
            400,
            'InvalidName',
        ),
        (
            'POST',
            '/execute',
            {'query': {'kind': 'find', 'table': 't', 'filter': {'$where': 1}}},
            400,
            'QueryError',
        ),
        ('POST', '/execute', {'query': {'kind': 'drop', 'table': 't'}}, 400, 'RequestValidationError'),
        ('POST', '/execute', {'nothing': 1}, 400, 'RequestValidationError'),
        (
            'POST',
            '/execute',
            {
                'query': {
                    'kind': 'insert',
                    'table': 't',
                    'documents': [{'x': {'_content': {'encoder': 'nope', 'bytes': 'AA=='}}}],
                }
            },
            400,
            'UnknownEncoder',
        ),
        ('GET', '/jobs/nope', None, 404, 'JobNotFound'),
        ('GET', '/no/such/route', None, 404, 'HTTPError'),
        ('PUT', '/execute', None, 405, 'HTTPError'),
    ]
    for method, path, body, status, kind in cases:
        response = httpx.request(method, url + path, json=body, headers=headers)
        assert response.status_code == status, (path, response.text)
        error = response.json()['error']
        assert set(response.json()) == {'error'} and set(error) == {'type', 'message'}
        assert error['type'] == kind and error['message']
        assert 'Traceback' not in response.text
    with pytest.raises(ComponentNotFound, match="'nope'") as info:
        client.load('model', 'nope')
    assert isinstance(info.value, KeyError)
    with pytest.raises(QueryError, match='table'):
        client.execute(_bad_table())
    with pytest.raises(InvalidName, match='Invalid field name'):
        client._call(
            'POST',
            '/execute',
            json_body={'query': {'kind': 'count', 'table': 't', 'filter': {'$or': [{'a b': 1}]}}},
        )
    with pytest.raises(QueryError, match='SQLAlchemy'):
        client.execute('select 1')


def _bad_table() -> Any:
    from superduperdb.query.objects import Count

    q = Count('ok')
    object.__setattr__(q, 'table', 'a b')  # skip local validation: the server checks too
    return q


def test_unreachable_server_names_host_and_port():
    port = free_port()
    with (
        Client(f'http://127.0.0.1:{port}', token='t') as c,
        pytest.raises(ConnectionFailed, match=f'127.0.0.1:{port}') as info,
    ):
        c.show()
    assert info.value.port == port


def test_superduper_with_a_url_returns_a_client():
    c = superduper('http://127.0.0.1:3223', token='t')
    assert isinstance(c, Client) and (c.host, c.port) == ('127.0.0.1', 3223)
    c.close()
    with superduper('https://example.com') as remote:
        assert isinstance(remote, Client) and remote.port == 443


# ----- the OpenAPI spec, fuzzed ---------------------------------------------------------
@pytest.mark.parametrize('backend', ['sqlite', 'postgres'], indirect=True)
def test_schemathesis_finds_no_server_errors(served):
    """Every route of the spec, fuzzed with a valid token: no 5xx (PostgreSQL refuses more
    values than SQLite: NUL in text, integers over 64 bits)."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    _, url = served
    headers = {'Authorization': f'Bearer {TOKEN}'}
    schema = schemathesis.openapi.from_url(f'{url}/openapi.json', headers=headers)
    failures: list[Any] = []
    started = time.monotonic()

    def fuzz(operation: Any) -> None:
        @settings(
            max_examples=200 if operation.path == '/execute' else 25,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        @given(case=operation.as_strategy())
        def check(case: Any) -> None:
            response = case.call(headers=headers)
            body = response.json()
            if response.status_code >= 500:
                failures.append((operation.method, operation.path, case.body, case.query, body))
            if response.status_code >= 400:
                assert set(body) == {'error'} and set(body['error']) == {'type', 'message'}, body

        check()

    for result in schema.get_all_operations():
        fuzz(result.ok())
    assert failures == []
    assert time.monotonic() - started < 90


def test_every_route_is_documented():
    from pathlib import Path

    db = superduper('sqlite:///:memory:')
    try:
        app = create_app(db, token=TOKEN)
    finally:
        db.close()
    guide = (Path(__file__).parent.parent / 'docs' / 'server.md').read_text()
    builtin = {'/openapi.json', '/docs', '/docs/oauth2-redirect', '/redoc'}
    for route in app.routes:
        if route.path not in builtin:
            assert f'{route.path}`' in guide, f'{route.path} is missing from docs/server.md'
