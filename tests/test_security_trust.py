"""Issue 23, items 8-10: what a process trusts that another wrote for it.

- a download job keeps the fetch policy of the process that took the write: a re-run (of a
  failed start, of the download itself) never fetches under a wider one;
- the client decodes what a server sends only with encoders that read plain data, unless the
  user trusts that component to run code (``trust_code``);
- artifacts are checked against their content hash on every read.

Each test runs through a real HTTP server (uvicorn, or ``http.server`` for the malicious
one) on SQLite, PostgreSQL and MariaDB.
"""

from __future__ import annotations

import base64
import json
import pickle
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.dummy import DummyClassifier

from superduperdb import CFG, Collection, Watcher, superduper
from superduperdb.base.exceptions import ArtifactCorrupted, CodeNotTrusted, ConfigError
from superduperdb.encoders.numpy import array
from superduperdb.jobs.job import run_job
from superduperdb.server.app import create_app, running
from superduperdb.server.client import Client
from superduperdb.store.artifacts import DatabaseArtifactStore

TOKEN = 'trust-token-1'
AUTH = {'Authorization': f'Bearer {TOKEN}'}
served_backends = pytest.mark.parametrize(
    'backend',
    [
        pytest.param('sqlite', marks=pytest.mark.sqlite),
        pytest.param('postgres', marks=pytest.mark.postgres),
        pytest.param('mysql', marks=pytest.mark.mysql),
    ],
    indirect=True,
)

CALLED: list[Any] = []


def trap(*args: Any) -> None:
    """What unpickling a :class:`Trap` calls: it records that code ran."""
    CALLED.append(args)


class Trap:
    def __reduce__(self) -> Any:
        return (trap, ('unpickled',))


@pytest.fixture(autouse=True)
def _clear() -> None:
    CALLED.clear()


def raw_values(db: Any, table: str) -> list[bytes]:
    """Every stored value of ``table`` as bytes, read past superduperdb's decoding."""
    return [
        bytes(value) if isinstance(value, (bytes, memoryview)) else repr(value).encode()
        for rows in db.databackend.find(table, {})
        for row in rows
        for value in row.values()
    ]


# ----- 8. a re-run download job keeps the fetch policy it was made under ----------------------------
@served_backends
def test_a_rerun_download_job_keeps_the_servers_fetch_policy(db, table_name, tmp_path):
    served = tmp_path / 'served'
    served.mkdir()
    (served / 'ok.txt').write_bytes(b'fine, read this.')
    secret = tmp_path / 'hostname'  # outside server.file_roots: the server must never read it
    secret.write_bytes(b'secret-host-name')  # as long as ok.txt: the encoder reads 16 bytes
    coll = Collection(table_name)
    raw = array('uint8', 16)  # decodes any 16 bytes: what was fetched would be stored as it is
    # the server: a process of its own on the same database (the fixture's db is the operator's)
    server_db = type(db)(db.databackend, db.metadata, db.artifact_store)
    docs = [{'n': 0, 'x': raw(uri=f'file://{served}/ok.txt')}, {'n': 1, 'x': raw(uri=f'file://{secret}')}]
    with (
        CFG.override(**{'server.file_roots': [str(served)]}),
        running(create_app(server_db, token=TOKEN)) as url,
        Client(url, TOKEN) as client,
    ):
        # its jobs cannot start (a Dask executor with no scheduler): the write stands, with
        # a failed trigger job to run again
        with CFG.override(**{'cluster.executor': 'dask', 'cluster.dask_scheduler': None}):
            result = client.execute(coll.insert_many(docs))
        [trigger] = result.jobs
        assert (trigger.method, trigger.status) == ('trigger', 'failed')
        assert 'dask_scheduler' in trigger.error
    ids = dict(zip([0, 1], result.ids))

    # the operator runs it again from a program of their own, as its error says; that program
    # reads any path for its own references (downloads.file_roots unset)
    assert CFG.downloads.file_roots is None
    run_job(db, trigger.id)
    [download] = [j for j in db.jobs(component=f'table/{table_name}') if j.method == 'download']
    assert download.result == {'downloaded': 1, 'failed': 1}
    assert 'file roots: ' + str(served) in download.log
    rows = {d['n']: d for d in db.execute(coll.find())}
    assert rows[0]['x'].x.tobytes() == b'fine, read this.'
    assert rows[1]['x'].pending  # still the reference
    [failure] = db.metadata.failures(f'download:{table_name}.x')
    assert 'not under an allowed file root' in failure['message']

    # the download job run again, by a process whose own policy is wider: still the job's own
    with CFG.override(**{'server.file_roots': [str(tmp_path)], 'downloads.file_roots': [str(tmp_path)]}):
        run_job(db, download.id)
        server_db.serving = True
        run_job(server_db, download.id)
    assert db.job(download.id).result == {'downloaded': 0, 'failed': 1}

    # a download job without a stored policy (written before policies were stored, or forged),
    # or one claiming more than the running process allows: the narrower policy wins
    bare = {'table': table_name, 'fields': ['x'], 'ids': [ids[1]]}
    forged = {**bare, 'policy': {'schemes': ['file'], 'file_roots': None, 'allow_private_addresses': True}}
    forged['policy']['max_bytes'] = 10**9
    for args, where in ((bare, db), (forged, server_db)):
        job = where.submit_job('download', args, component=f'table/{table_name}')
        assert job.refresh().result == {'downloaded': 0, 'failed': 1}, args
    assert db.execute(coll.find_one({'n': 1}))['x'].pending
    assert not any(b'secret-host-name' in value for value in raw_values(db, table_name))
    assert 'secret-host-name' not in json.dumps(db.metadata.failures(f'download:{table_name}.x'))


# ----- 9. the client trusts the server with data, not with code ----------------------------------------
def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode('ascii')


def _content(encoder: str, data: bytes) -> dict[str, Any]:
    return {'_content': {'encoder': encoder, 'version': 0, 'bytes': _b64(data)}}


PICKLED_TRAP = pickle.dumps(Trap())
#: What the malicious server answers for GET /components/encoder/<name>
ENCODERS: dict[str, dict[str, Any]] = {
    # the pickle encoder: no artifacts, but decoding its values unpickles
    'evil': {
        'config': {'cls': 'superduperdb.encoders.pickle:PickleEncoder', 'params': {'identifier': 'evil'}}
    },
    # an Encoder of functions: its artifacts are pickles
    'funcs': {
        'config': {
            'cls': 'superduperdb.components.encoder:Encoder',
            'params': {
                'identifier': 'funcs',
                'encode': {'_artifact': 'encode'},
                'decode': {'_artifact': 'decode'},
            },
        },
        'artifacts': {'encode': _b64(PICKLED_TRAP), 'decode': _b64(PICKLED_TRAP)},
    },
    # a plain-data class whose config smuggles an artifact into a field
    'sneaky': {
        'config': {
            'cls': 'superduperdb.encoders.numpy:ArrayEncoder',
            'params': {'identifier': 'sneaky', 'dtype': {'_artifact': 'dtype'}, 'shape': [2]},
        },
        'artifacts': {'dtype': _b64(PICKLED_TRAP)},
    },
    # a plain-data encoder: decoded without asking
    'vec': {
        'config': {
            'cls': 'superduperdb.encoders.numpy:ArrayEncoder',
            'params': {'identifier': 'vec', 'dtype': 'float32', 'shape': [2]},
        }
    },
}
VALUES = {
    'evil': _content('evil', PICKLED_TRAP),
    'funcs': _content('funcs', b'x'),
    'sneaky': _content('sneaky', b'\0' * 8),
    'vec': _content('vec', np.array([1.5, 2.5], dtype='float32').tobytes()),
}
MODEL = {
    'config': {
        'cls': 'superduperdb.models.function:FunctionModel',
        'params': {'identifier': 'm', 'object': {'_artifact': 'object'}},
    },
    'artifacts': {'object': _b64(PICKLED_TRAP)},
}


class Malicious(BaseHTTPRequestHandler):
    """A server that answers finds and predicts with values only code can decode."""

    def _send(self, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        parts = urllib.parse.urlsplit(self.path).path.strip('/').split('/')
        if parts[:2] == ['components', 'encoder'] and parts[2] in ENCODERS:
            self._send({'version': 0, 'artifacts': {}, **ENCODERS[parts[2]]})
        elif parts == ['components', 'model', 'm']:
            self._send({'version': 0, **MODEL})
        else:
            self.send_error(404)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers['Content-Length'])))
        if self.path == '/execute':
            doc = {'n': 1, 'x': VALUES[body['query']['table']]}
            self._send({'document': doc} if body['query']['kind'] == 'findone' else {'documents': [doc]})
        elif self.path == '/models/m/predict':
            self._send({'outputs': [VALUES['evil']]})
        else:
            self.send_error(404)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def malicious() -> Iterator[str]:
    httpd = ThreadingHTTPServer(('127.0.0.1', 0), Malicious)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f'http://127.0.0.1:{httpd.server_address[1]}'
    httpd.shutdown()
    httpd.server_close()


def test_the_client_never_runs_code_a_server_sends_unless_trusted(malicious):
    with Client(malicious, 't') as client:
        # plain data comes back as it always did
        [doc] = client.execute(Collection('vec').find())
        assert doc['x'].x.tolist() == [1.5, 2.5]
        # a value of the pickle encoder, by find, find_one or predict: refused, nothing run
        for call in (
            lambda: list(client.execute(Collection('evil').find())),
            lambda: client.execute(Collection('evil').find_one()),
            lambda: client.predict('m', [1]),
        ):
            with pytest.raises(CodeNotTrusted) as info:
                call()
            assert info.value.identifier == 'evil'
            message = str(info.value)
            assert "encoder 'evil'" in message and 'PickleEncoder' in message
            assert "trust_code=['evil']" in message
        # pickled artifacts: an Encoder's functions, a plain class's smuggled field, a model
        for name in ('funcs', 'sneaky'):
            with pytest.raises(CodeNotTrusted, match=rf"encoder '{name}' .* pickled artifact"):
                list(client.execute(Collection(name).find()))
        with pytest.raises(CodeNotTrusted, match=r"model 'm' .* trust_code=\['m'\]"):
            client.load('model', 'm')
    assert CALLED == []

    # the user opts in per component: exactly that one is trusted
    with Client(malicious, 't', trust_code=['evil', 'm']) as client:
        [doc] = client.execute(Collection('evil').find())
        assert CALLED == [('unpickled',)]
        client.load('model', 'm')
        assert len(CALLED) == 2
        with pytest.raises(CodeNotTrusted):
            list(client.execute(Collection('funcs').find()))
    assert len(CALLED) == 2
    with pytest.raises(ConfigError, match='list of component identifiers'):
        Client(malicious, 't', trust_code='evil')  # one name, not the letters e, v, i, l


@served_backends
def test_a_trusted_server_still_serves_pickled_values_and_models_by_opt_in(db, table_name):
    """The honest case: the operator's pickle column and function model, read over HTTP."""
    from superduperdb.encoders.pickle import pickle_encoder

    coll = Collection(table_name)
    db.execute(coll.insert_one({'n': 0, 'p': pickle_encoder({'ok': (1, 2)})}))
    db.add(superduper(lambda x: 2 * x, identifier='double'))
    with running(create_app(db, token=TOKEN)) as url:
        with Client(url, TOKEN) as client:
            with pytest.raises(CodeNotTrusted, match="encoder 'pickle'"):
                client.execute(coll.find_one())
            with pytest.raises(CodeNotTrusted, match="model 'double'"):
                client.load('model', 'double')
        with Client(url, TOKEN, trust_code=['pickle', 'double']) as client:
            assert client.execute(coll.find_one())['p'].x == {'ok': (1, 2)}
            assert client.load('model', 'double').predict([3]) == [6]


# ----- 10. artifacts are checked against their hash on every read ---------------------------------------
def _sklearn(identifier: str, constant: int) -> Any:
    return superduper(
        DummyClassifier(strategy='constant', constant=constant).fit([[0], [1]], [constant, 99]),
        identifier=identifier,
    )


def _replace(store: Any, db: Any, key: str, data: bytes) -> None:
    """Overwrite the bytes stored under ``key``, as a damaged disk or another program would."""
    if isinstance(store, DatabaseArtifactStore):
        db.databackend.set_fields(store.TABLE, [(key, {'data': data})])
    else:
        path = Path(store.root) / key[:2] / key
        path.write_bytes(data)


@served_backends
@pytest.mark.parametrize('store_kind', ['filesystem', 'database'])
def test_artifact_bytes_that_do_not_match_their_key_are_never_loaded(db, table_name, store_kind):
    store = db.artifact_store if store_kind == 'filesystem' else DatabaseArtifactStore(db.databackend)
    owner = type(db)(db.databackend, db.metadata, store)  # the operator's process
    coll = Collection(table_name)
    sevens, threes = owner.add(_sklearn('sevens', 7)), owner.add(_sklearn('threes', 3))
    owner.add(Watcher(model=sevens, key='x', select=coll.find()))
    key = db.metadata.get_component('model', 'sevens', 0)['artifacts']['object']
    other = db.metadata.get_component('model', 'threes', 0)['artifacts']['object']
    original = store.get(key)
    assert threes.predict([0.0]) == [3]

    def check(error: str) -> None:
        assert key in error and 'model/sevens/0' in error and 'does not match its hash' in error
        assert store.describe() in error

    for damaged, n in ((store.get(other), 1), (original[: len(original) // 2], 2)):  # swapped, cut short
        _replace(store, db, key, damaged)
        # a server process that has not loaded the model yet (a restart, a worker)
        server_db = type(db)(db.databackend, db.metadata, store)
        with running(create_app(server_db, token=TOKEN)) as url, Client(url, TOKEN) as client:
            result = client.execute(coll.insert_one({'n': n, 'x': float(n)}))
            [job] = result.jobs
            assert job.refresh().status == 'failed'
            check(job.error)
            assert 'ArtifactCorrupted' in job.error and 'UnpicklingError' not in job.error
            [status] = [s for s in client.status() if s['watcher'].startswith('sevens@')]
            assert status['current'] == 0 and status['rows'] == n
            assert '_outputs' not in client.execute(coll.find_one({'n': n}))
            response = httpx.get(f'{url}/components/model/sevens', headers=AUTH)
            assert response.status_code == 500
            error = response.json()['error']
            assert error['type'] == 'ArtifactCorrupted'
            check(error['message'])
        with pytest.raises(ArtifactCorrupted) as info:
            type(db)(db.databackend, db.metadata, store).load('model', 'sevens')
        assert (info.value.key, info.value.component) == (key, 'model/sevens/0')
        assert info.value.store == store.describe()
    # put back, it loads and computes its own outputs again
    _replace(store, db, key, original)
    fresh = type(db)(db.databackend, db.metadata, store)
    assert fresh.load('model', 'sevens').predict([0.0]) == [7]
