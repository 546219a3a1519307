"""The server is a boundary, even for a holder of its token (docs/security.md).

One test per attack class, each through the real uvicorn server over HTTP on SQLite and
PostgreSQL: internal tables, forged component classes, unpickling request bytes, reading files
and reaching private hosts through data references, artifact keys as paths, and bad values.
Plus: every route but /health refuses a request without the token (routes enumerated from the
app), and the fetch policy's limits against a real HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import pickle
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from superduperdb import CFG, Collection, superduper
from superduperdb.base import http_fetch, references
from superduperdb.base.exceptions import ComponentNotAllowed, EncodingError, InvalidName
from superduperdb.encoders.numpy import array
from superduperdb.encoders.pickle import PickleEncoder, pickle_encoder
from superduperdb.server.app import create_app, running
from superduperdb.server.client import Client
from tests.helpers import error_of

TOKEN = 'security-token-1'
AUTH = {'Authorization': f'Bearer {TOKEN}'}
served_backends = pytest.mark.parametrize(
    'backend',
    [pytest.param('sqlite', marks=pytest.mark.sqlite), pytest.param('postgres', marks=pytest.mark.postgres)],
    indirect=True,
)

CALLED: list[Any] = []


def trap(*args: Any, **kwargs: Any) -> None:
    """Named by forged component configs: calling it (or unpickling a Trap) records it."""
    CALLED.append((args, kwargs))


class Trap:
    def __reduce__(self) -> Any:
        return (trap, ('unpickled',))


@pytest.fixture(autouse=True)
def _clear() -> None:
    CALLED.clear()


@pytest.fixture
def served(db) -> Iterator[tuple[Any, str]]:
    with running(create_app(db, token=TOKEN)) as url:
        yield db, url


def post(url: str, path: str, body: Any) -> httpx.Response:
    """POST ``body`` as JSON (escaped ASCII, so lone surrogates travel as ``\\ud800``); a
    :class:`Deep` value is written out as that many nested objects (too deep for json.dumps)."""
    headers = {**AUTH, 'Content-Type': 'application/json'}
    text = json.dumps(body, default=lambda deep: f'@deep{deep.levels}@')
    for levels in (65, 1100):
        text = text.replace(f'"@deep{levels}@"', '{"a":' * levels + '1' + '}' * levels)
    return httpx.post(url + path, content=text, headers=headers)


class Deep:
    def __init__(self, levels: int) -> None:
        self.levels = levels


# ----- 1. code execution without pickle: internal tables and forged component classes ---------
@served_backends
def test_internal_tables_are_refused_by_the_query_api(served, table_name):
    db, url = served
    forged = {'_id': 'model/evil/0', 'type_id': 'model', 'identifier': 'evil', 'version': 0}
    forged |= {'config': '{"cls": "os:system", "params": {"identifier": "evil"}}', 'artifacts': '{}'}
    attempts = [
        {'kind': 'insert', 'table': '_superduper_components', 'documents': [forged]},
        {'kind': 'insert', 'table': '_superduper_columns', 'documents': [{'_id': 'x', 'table': 't'}]},
        {'kind': 'find', 'table': '_superduper_jobs'},
        {'kind': 'findone', 'table': '_superduper_components'},
        {'kind': 'count', 'table': '_SUPERDUPER_components'},  # SQLite/MySQL ignore case in names
        {'kind': 'update', 'table': '_superduper_components', 'update': {'$set': {'hash': 'x'}}},
        {'kind': 'delete', 'table': '_superduper_cdc_positions', 'filter': {}},
    ]
    for query in attempts:
        status, kind, message = error_of(post(url, '/execute', {'query': query}))
        assert (status, kind) == (400, 'InvalidName'), query
        assert "superduperdb's own tables" in message
    # a model run over an internal table is refused too
    db.add(superduper(trap, identifier='m'))
    body = {'key': 'config', 'select': {'kind': 'find', 'table': '_superduper_components'}}
    assert error_of(post(url, '/models/m/predict_query', body))[:2] == (400, 'InvalidName')
    assert db.metadata.versions('model', 'evil') == []
    # locally, the query API refuses them as well; the component API is the way in
    with pytest.raises(InvalidName, match='own tables'):
        db.execute(Collection('_superduper_components').find())
    assert db.show('model') == ['m']


@served_backends
def test_a_forged_component_class_is_never_imported_or_called(served):
    """Another program sharing the database writes a component record naming a function."""
    db, url = served
    for cls in ('tests.test_security:trap', 'os:system', 'superduperdb.datalayer.datalayer:os.system'):
        db.metadata.add_component(
            'model',
            f'evil{len(CALLED)}{cls[:3]}',
            0,
            config={'cls': cls, 'params': {'identifier': 'echo pwned'}},
            artifacts={},
            dependencies=[],
            hash='x',
        )
    for identifier in db.metadata.identifiers('model'):
        response = post(url, f'/models/{identifier}/predict', {'values': [1]})
        status, kind, message = error_of(response)
        assert (status, kind) == (403, 'ComponentNotAllowed'), response.text
        assert 'allowed_classes' in message or 'not a component class' in message
        with pytest.raises(ComponentNotAllowed):
            db.load('model', identifier)  # locally too: a shared database is a boundary
    assert CALLED == []


@served_backends
def test_a_token_holder_cannot_choose_where_the_server_sends_its_api_key(served):
    """An OpenAIModel added through the server with its own base_url would send the server's
    OpenAI key to that address (and make the server reach it)."""
    db, url = served
    params = {'identifier': 'gpt', 'base_url': 'http://attacker.example/v1'}
    body = {'config': {'cls': 'superduperdb.models.openai:OpenAIModel', 'params': params}}
    status, kind, message = error_of(post(url, '/components', body))
    assert (status, kind) == (403, 'ComponentNotAllowed') and 'API key' in message
    assert db.show('model') == []
    params = {'identifier': 'gpt'}  # the server's own setting is used: fine
    assert post(url, '/components', {'config': {**body['config'], 'params': params}}).status_code == 200


def test_the_allow_list_takes_config_and_exact_class_names():
    from superduperdb.components.component import resolve_class

    with pytest.raises(ComponentNotAllowed, match='allowed_classes'):
        resolve_class('json:JSONDecoder')
    with (
        CFG.override(**{'components.allowed_classes': ['json']}),  # allowed, but not a Component
        pytest.raises(ComponentNotAllowed, match='not a component class'),
    ):
        resolve_class('json:JSONDecoder')
    assert resolve_class('superduperdb.encoders.numpy:ArrayEncoder').__name__ == 'ArrayEncoder'
    with pytest.raises(ComponentNotAllowed):  # an attribute path through a module is no class name
        resolve_class('superduperdb.components.component:importlib.import_module')


# ----- 2. unpickling request bytes ---------------------------------------------------------------
@served_backends
def test_request_bytes_are_never_unpickled(served, table_name):
    db, url = served
    coll = Collection(table_name)
    # the operator keeps a pickle column (written locally, trusted)
    db.execute(coll.insert_one({'n': 0, 'p': pickle_encoder({'ok': 1})}))
    payload = base64.b64encode(pickle.dumps(Trap())).decode()
    raw = {'_content': {'encoder': None, 'bytes': payload}}
    # a pickle encoder registered by a token holder: refused (an encoder that runs code is the
    # operator's to make, see test_security_views.py); one of the operator's, then a column
    # mapped to it by a token holder: refused
    body = {'config': {'cls': 'superduperdb.encoders.pickle:PickleEncoder', 'params': {'identifier': 'pk'}}}
    assert error_of(post(url, '/components', body))[:2] == (403, 'Forbidden')
    db.add(PickleEncoder('pk'))
    columns = {'kind': 'insert', 'table': '_superduper_columns', 'documents': [{'_id': 'x', 'encoder': 'pk'}]}
    assert post(url, '/execute', {'query': columns}).status_code == 400
    # raw bytes into the existing pickle column, by insert or update: refused
    insert = {'kind': 'insert', 'table': table_name, 'documents': [{'n': 1, 'p': raw}]}
    update = {'kind': 'update', 'table': table_name, 'filter': {'n': 0}, 'update': {'$set': {'p': raw}}}
    for query in (insert, update):
        status, kind, _ = error_of(post(url, '/execute', {'query': query}))
        assert (status, kind) == (403, 'Forbidden'), query
    # a value of the pickle encoder itself: refused
    encoded = {'_content': {'encoder': 'pickle', 'bytes': payload}}
    query = {'kind': 'insert', 'table': table_name, 'documents': [{'n': 2, 'p': encoded}]}
    assert error_of(post(url, '/execute', {'query': query}))[:2] == (403, 'Forbidden')
    # half-encoded values that a later read could decode: refused
    half = {'kind': 'insert', 'table': table_name, 'documents': [{'j': {'_content': encoded, 'x': 1}}]}
    inside = {'kind': 'update', 'table': table_name, 'update': {'$set': {'j._content.encoder': 'pk'}}}
    for query in (half, inside):
        assert error_of(post(url, '/execute', {'query': query}))[:2] == (400, 'EncodingError'), query
    # raw bytes into a column without an encoder are plain bytes; that column can never get an
    # encoder later (the operator's pickle values go elsewhere), so they are never decoded
    query = {'kind': 'insert', 'table': table_name, 'documents': [{'n': 4, 'q': raw}]}
    assert post(url, '/execute', {'query': query}).status_code == 200
    with pytest.raises(EncodingError, match='already holds values stored without an encoder'):
        db.execute(coll.insert_one({'n': 5, 'q': pickle_encoder({'ok': 2})}))
    found = post(url, '/execute', {'query': {'kind': 'find', 'table': table_name}})
    assert found.status_code == 200 and len(found.json()['documents']) == 2
    assert {d['n'] for d in db.execute(coll.find())} == {0, 4}
    assert CALLED == []


# ----- 3. reading files and reaching private hosts through data references ------------------------
class Secret(BaseHTTPRequestHandler):
    """``/secret`` answers a secret; ``/hop`` redirects to ``Secret.target``."""

    hits: list[str] = []
    target = ''

    def do_GET(self) -> None:
        self.hits.append(self.path)
        if self.path == '/hop':
            self.send_response(302)
            self.send_header('Location', self.target)
            self.end_headers()
            return
        if self.path == '/slow':
            self.send_response(200)
            self.send_header('Content-Length', '100')
            self.end_headers()
            for _ in range(100):
                self.wfile.write(b'x')
                self.wfile.flush()
                time.sleep(0.05)
            return
        body = b'top secret' * (1000 if self.path == '/big' else 1)
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_secret() -> Iterator[str]:
    Secret.hits = []
    httpd = ThreadingHTTPServer(('127.0.0.1', 0), Secret)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{httpd.server_address[1]}'
    httpd.shutdown()
    httpd.server_close()


@served_backends
def test_references_cannot_read_files_or_reach_private_hosts(served, table_name, tmp_path, http_secret):
    db, url = served
    (tmp_path / 'secret.txt').write_bytes(b'top secret')
    port = http_secret.rsplit(':', 1)[1]
    uris = [
        f'file://{tmp_path}/secret.txt',
        '/etc/hostname',  # no scheme
        f'{http_secret}/secret',
        f'http://localhost:{port}/secret',  # a name: checked after resolving it
        f'http://[::ffff:127.0.0.1]:{port}/secret',
        'ftp://127.0.0.1/secret',
    ]
    with Client(url, TOKEN) as client:
        raw = array('uint8', 1)  # decodes any bytes: what was fetched would come back as is
        docs = [{'n': i, 'x': raw(uri=u)} for i, u in enumerate(uris) if '://' in u]
        result = client.execute(Collection(table_name).insert_many(docs))
        job = result.jobs[0].wait()
        assert job.status == 'success' and job.result == {'downloaded': 0, 'failed': len(docs)}
        found = list(client.execute(Collection(table_name).find()))
    assert all(doc['x'].pending for doc in found)  # still references: nothing was read
    assert Secret.hits == []
    reasons = ' '.join(f['message'] for f in db.metadata.failures(f'download:{table_name}.x'))
    assert 'not under an allowed file root' in reasons and 'private' in reasons
    assert "'ftp' scheme is not allowed" in reasons
    assert 'top secret' not in reasons


@served_backends
def test_artifact_keys_are_content_hashes_only(served, tmp_path):
    db, url = served
    (tmp_path / 'secret.txt').write_bytes(b'top secret')
    for i, key in enumerate([str(tmp_path / 'secret.txt'), '../../secret.txt', 'ab/../../secret.txt']):
        db.metadata.add_component(
            'encoder',
            f'forged{i}',
            0,
            config={'cls': 'superduperdb.encoders.pickle:PickleEncoder', 'params': {'identifier': 'f'}},
            artifacts={'object': key},
            dependencies=[],
            hash='x',
        )
        response = httpx.get(f'{url}/components/encoder/forged{i}', headers=AUTH)
        status, kind, message = error_of(response)
        assert (status, kind) == (400, 'ComponentError') and 'content hash' in message
        assert base64.b64encode(b'top secret').decode() not in response.text


# ----- 4. the docs, auth headers, ids, identifiers and bad values ---------------------------------
def _routes(app: Any) -> list[tuple[str, str]]:
    found = []
    for route in app.routes:
        for method in sorted(getattr(route, 'methods', None) or []):
            if method != 'HEAD':
                found.append((method, route.path.replace('{', '').replace('}', '')))
    return found


@pytest.mark.parametrize('backend', [pytest.param('sqlite', marks=pytest.mark.sqlite)], indirect=True)
def test_every_route_but_health_refuses_a_request_without_the_token(db):
    """Routes come from the app itself, so a route added later is covered without editing this."""
    app = create_app(db, token=TOKEN)
    routes = _routes(app)
    assert ('GET', '/openapi.json') in routes and ('GET', '/docs') in routes
    with running(app) as url:
        for method, path in routes:
            for headers in ({}, {'Authorization': 'Bearer wrong'}, {'Authorization': f'Basic {TOKEN}'}):
                if path.startswith('/ui'):  # the dashboard: every page leads to its login form, no data
                    response = httpx.request(
                        method, url + path, headers=headers, data={}, follow_redirects=True
                    )
                    assert response.url.path == '/ui/login' and 'name="token"' in response.text, (
                        method,
                        path,
                    )
                    continue
                response = httpx.request(method, url + path, headers=headers, json={})
                if path == '/health':
                    assert response.status_code == 200
                    continue
                assert response.status_code == 401, (method, path, headers, response.text)
                assert response.headers['WWW-Authenticate'].startswith('Bearer')
                assert response.json()['error']['type'] == 'Unauthorized'
        assert httpx.get(f'{url}/redoc').status_code == 404  # no second docs page
        docs = httpx.get(f'{url}/docs', headers=AUTH)
        assert docs.status_code == 200 and '/execute' in docs.text
        assert 'cdn' not in docs.text.lower() and '<script' not in docs.text  # nothing from outside
        assert httpx.get(f'{url}/openapi.json', headers=AUTH).json()['paths']
    with running(create_app(db, token=TOKEN, public_docs=True)) as url:
        assert httpx.get(f'{url}/openapi.json').status_code == 200
        assert httpx.get(f'{url}/docs').status_code == 200
        assert httpx.get(f'{url}/jobs').status_code == 401


@served_backends
def test_ids_and_identifiers_are_checked(served):
    _, url = served
    status, kind, _ = error_of(httpx.get(f'{url}/jobs/0123456789abcdef01234567', headers=AUTH))
    assert (status, kind) == (404, 'JobNotFound')
    assert httpx.get(f'{url}/jobs/a%00b', headers=AUTH).status_code == 404
    for identifier in ('', 'a\x00b', 'x' * 300, 'tab\there'):
        config = {'cls': 'superduperdb.encoders.numpy:ArrayEncoder', 'params': {'identifier': identifier}}
        config['params'] |= {'dtype': 'float32', 'shape': [2]}
        status, kind, _ = error_of(post(url, '/components', {'config': config}))
        assert (status, kind) == (400, 'InvalidName'), repr(identifier)
    for path in ('/components/model/a%00b', '/components/model/%01', '/components/a%00/x'):
        status, kind, _ = error_of(httpx.get(url + path, headers=AUTH))
        assert (status, kind) == (400, 'InvalidName'), path


BAD_VALUES = [
    ('int over 64 bits', 2**64),
    ('int below 64 bits', -(2**63) - 1),
    ('huge int', 10**400),
    ('NUL', 'a\x00b'),
    ('lone surrogate', 'a\ud800b'),
    ('NUL in a key', {'k\x00': 1}),
]


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {'a': value}
    return value


@served_backends
def test_bad_values_get_400_with_the_librarys_error_never_5xx(served, table_name):
    db, url = served
    coll = Collection(table_name)
    db.execute(coll.insert_one({'n': 1, 's': 'x'}))  # the table exists, so filters reach SQL
    for name, value in [*BAD_VALUES, ('1100 levels', Deep(1100)), ('65 levels', Deep(65))]:
        queries = [
            {'kind': 'insert', 'table': table_name, 'documents': [{'v': value}]},
            {'kind': 'insert', 'table': table_name, 'documents': [{'v': {'inner': [value]}}]},
            {'kind': 'find', 'table': table_name, 'filter': {'n': value}},
            {'kind': 'count', 'table': table_name, 'filter': {'n': {'$in': [value]}}},
            {'kind': 'update', 'table': table_name, 'filter': {}, 'update': {'$set': {'s': value}}},
        ]
        for query in queries:
            response = post(url, '/execute', {'query': query})
            status, kind, message = error_of(response)
            assert status == 400, (name, query['kind'], response.text)
            assert kind in ('EncodingError', 'QueryError', 'RequestValidationError', 'HTTPError'), kind
            for sql in ('INSERT', 'SELECT', 'UPDATE', '[SQL', 'sqlalche'):
                assert sql not in message, (name, message)
    for query in (
        {'kind': 'find', 'table': table_name, 'skip': 2**64},
        {'kind': 'find', 'table': table_name, 'limit': 10**30},
    ):
        assert error_of(post(url, '/execute', {'query': query}))[0] == 400, query
    db.add(superduper(trap, identifier='m'))
    body = {'key': 'n', 'select': {'kind': 'find', 'table': table_name}, 'chunk_size': 10**30}
    assert error_of(post(url, '/models/m/predict_query', body))[0] == 400
    # the same through the Python API: the library's own error, before the database sees it
    for _name, value in [*BAD_VALUES, ('65 levels', _nested(65))]:
        with pytest.raises((EncodingError, InvalidName)):
            db.execute(coll.insert_one({'v': value}))
        if not isinstance(value, dict):
            with pytest.raises(EncodingError):
                db.execute(coll.find({'n': value}))
    assert db.execute(coll.count()) == 1
    big = {'kind': 'insert', 'table': table_name, 'documents': [{'v': 2**63 - 1, 'w': -(2**63), 'u': 'é😀'}]}
    assert post(url, '/execute', {'query': big}).status_code == 200  # the limits themselves are fine


# ----- the fetch policy's limits (real HTTP server on 127.0.0.1) ----------------------------------
def test_fetch_policy_checks_redirects_size_and_time(http_secret, monkeypatch, tmp_path):
    policy = references.FetchPolicy(allow_private_addresses=True, max_bytes=100)
    assert references.fetch(f'{http_secret}/secret', timeout=5, retries=0, policy=policy) == b'top secret'
    with pytest.raises(references.FetchError, match='max_bytes'):
        references.fetch(f'{http_secret}/big', timeout=5, retries=0, policy=policy)
    with pytest.raises(references.FetchError, match='downloads.timeout'):
        references.fetch(f'{http_secret}/slow', timeout=1, retries=0, policy=policy)
    # the default refuses loopback
    with pytest.raises(references.FetchError, match='private'):
        references.fetch(f'{http_secret}/secret', timeout=5, retries=0, policy=references.FetchPolicy())
    with pytest.raises(references.FetchError, match='private'):
        references.fetch(f'{http_secret}/secret', timeout=5, retries=0)  # CFG's policy: the same
    # a redirect is checked again. 127.0.0.1 stands for a public host here (the classification
    # is replaced for this one check: no public host can be reached from a test), and the
    # redirect goes to 127.0.0.2, which the check refuses before connecting.
    monkeypatch.setattr(http_fetch, '_refused_address', lambda ip: str(ip) != '127.0.0.1')
    Secret.target = 'http://127.0.0.2:9/secret'
    with pytest.raises(references.FetchError, match='127.0.0.2'):
        references.fetch(f'{http_secret}/hop', timeout=5, retries=0, policy=references.FetchPolicy())
    Secret.target = f'file://{tmp_path}/x'
    with pytest.raises(references.FetchError, match='not allowed'):
        references.fetch(f'{http_secret}/hop', timeout=5, retries=0, policy=references.FetchPolicy())
    # file roots: inside is read, outside (or through a link pointing out) is not
    (tmp_path / 'in').mkdir()
    (tmp_path / 'in' / 'a.txt').write_bytes(b'a')
    (tmp_path / 'out.txt').write_bytes(b'b')
    (tmp_path / 'in' / 'link').symlink_to(tmp_path / 'out.txt')
    rooted = references.FetchPolicy(file_roots=(str(tmp_path / 'in'),))
    assert references.fetch(f'file://{tmp_path}/in/a.txt', timeout=1, retries=0, policy=rooted) == b'a'
    for uri in (
        f'file://{tmp_path}/out.txt',
        f'file://{tmp_path}/in/link',
        f'file://{tmp_path}/in/../out.txt',
    ):
        with pytest.raises(references.FetchError, match='file root'):
            references.fetch(uri, timeout=1, retries=0, policy=rooted)
