"""Operating a database through the server, the client and the CLI: the read-only token, the
dashboard's session cookie and CSRF header, /overview, the failure ledger and its retry, job
filters and cancelling, and values previewed for a browser. The browser itself: test_ui.py."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import cloudpickle
import httpx
import numpy as np
import pytest

from superduperdb import Collection, Watcher, superduper
from superduperdb.base.exceptions import ConfigError, QueryError
from superduperdb.encoders.audio import Audio, audio
from superduperdb.encoders.numpy import array
from superduperdb.server.app import create_app, running
from superduperdb.server.auth import COOKIE, CSRF_HEADER, Access

pytest.importorskip('fastapi')

TOKEN = 'operations-token'
READ = 'operations-read-token'
pytestmark = pytest.mark.sqlite

# the CLI runs in another process: models defined here are stored by value
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def inverse(x: float) -> float:
    return 1 / x


@pytest.fixture
def served(tmp_path):
    db = superduper(f'sqlite:///{tmp_path}/ops.db')
    coll = Collection('nums')
    db.execute(coll.insert_many([{'x': 1}, {'x': 0}, {'x': 4}]))
    db.add(Watcher(model=superduper(inverse, identifier='inverse'), key='x', select=coll.find()))
    with running(create_app(db, token=TOKEN, read_token=READ)) as url:
        yield db, url
    db.close()


def call(url: str, method: str, path: str, token: str = TOKEN, **kw: Any) -> httpx.Response:
    return httpx.request(method, url + path, headers={'Authorization': f'Bearer {token}'}, **kw)


def test_the_read_only_token_reads_everything_and_changes_nothing(served):
    db, url = served
    find = {'query': {'kind': 'find', 'table': 'nums', 'filter': {}}}
    for method, path, body in [
        ('GET', '/status', None),
        ('GET', '/overview', None),
        ('GET', '/jobs', None),
        ('GET', '/components', None),
        ('GET', '/watchers/inverse@nums.x/failures', None),
        ('POST', '/execute', find),
        ('POST', '/execute', {'query': {'kind': 'count', 'table': 'nums'}}),
        ('POST', '/models/inverse/predict', {'values': [2]}),
    ]:
        response = call(url, method, path, READ, json=body)
        assert response.status_code == 200, (path, response.text)
    job = db.jobs(limit=1)[0].id
    writes = [
        ('POST', '/execute', {'query': {'kind': 'insert', 'table': 'nums', 'documents': [{'x': 9}]}}),
        (
            'POST',
            '/execute',
            {'query': {'kind': 'update', 'table': 'nums', 'filter': {}, 'update': {'$set': {'x': 9}}}},
        ),
        ('POST', '/execute', {'query': {'kind': 'delete', 'table': 'nums', 'filter': {}}}),
        ('POST', '/components', {'config': {'cls': 'x:y', 'params': {}}}),
        ('DELETE', '/components/model/inverse', None),
        ('POST', '/models/inverse/predict_query', {'key': 'x', 'select': {'kind': 'find', 'table': 'nums'}}),
        ('POST', '/models/inverse/fit', {'X': 'x', 'select': {'kind': 'find', 'table': 'nums'}}),
        ('POST', '/watchers/inverse@nums.x/retry', None),
        ('POST', f'/jobs/{job}/cancel', None),
    ]
    for method, path, body in writes:
        response = call(url, method, path, READ, json=body)
        assert response.status_code == 403, (path, response.text)
        assert (
            response.json()['error']['type'] == 'Forbidden'
            and 'may only read' in response.json()['error']['message']
        )
    assert db.execute(Collection('nums').count()) == 3 and db.show('model') == ['inverse']
    assert db.failures('inverse@nums.x')[0]['attempts'] == 1  # not retried


def test_the_session_cookie_is_signed_expires_and_needs_the_csrf_header_to_write(served, monkeypatch):
    db, url = served
    login = httpx.post(f'{url}/ui/login', data={'token': TOKEN})
    assert login.status_code == 303 and login.headers['location'] == '/ui/'
    set_cookie = login.headers['set-cookie']
    assert 'HttpOnly' in set_cookie and 'SameSite=strict' in set_cookie and TOKEN not in set_cookie
    value = login.cookies[COOKIE]
    page = httpx.get(f'{url}/ui/', cookies={COOKIE: value})
    assert page.status_code == 200 and "script-src 'self'" in page.headers['content-security-policy']
    csrf = page.text.split('name="csrf-token" content="')[1].split('"')[0]
    insert = {'query': {'kind': 'insert', 'table': 'nums', 'documents': [{'x': 2}]}}
    ok = httpx.post(f'{url}/execute', json=insert, cookies={COOKIE: value}, headers={CSRF_HEADER: csrf})
    assert ok.status_code == 200, ok.text
    for headers in ({}, {CSRF_HEADER: 'wrong'}):
        refused = httpx.post(f'{url}/execute', json=insert, cookies={COOKIE: value}, headers=headers)
        assert refused.status_code == 403
    role, issued, nonce, mac = value.split('.')
    for forged in (
        f'read.{issued}.{nonce}.{mac}',  # another role, same signature
        f'{role}.{int(issued) + 1}.{nonce}.{mac}',
        f'{role}.{issued}.{nonce}.{"0" * 64}',
        TOKEN,
    ):
        assert httpx.get(f'{url}/status', cookies={COOKIE: forged}).status_code == 401
    # a read-only session reads but its CSRF header does not make it a writer
    read_value = httpx.post(f'{url}/ui/login', data={'token': READ}).cookies[COOKIE]
    read_page = httpx.get(f'{url}/ui/freshness', cookies={COOKIE: read_value}).text
    read_csrf = read_page.split('name="csrf-token" content="')[1].split('"')[0]
    assert 'read only' in read_page
    refused = httpx.post(
        f'{url}/execute', json=insert, cookies={COOKIE: read_value}, headers={CSRF_HEADER: read_csrf}
    )
    assert refused.status_code == 403 and 'may only read' in refused.json()['error']['message']
    # expired sessions, and sessions of a token that has changed, are refused
    access = Access(TOKEN, READ)
    import superduperdb.server.auth as auth

    monkeypatch.setattr(auth.time, 'time', lambda: time.time_ns() / 1e9 + auth.SESSION_SECONDS + 5)
    assert access.session_role(value) is None
    monkeypatch.undo()
    assert access.session_role(value) == 'write' and Access('new-token').session_role(value) is None
    with pytest.raises(ConfigError, match='must differ'):
        Access(TOKEN, TOKEN)
    # what a URL carries into a page is escaped there
    hostile = '"><img src=x onerror=alert(1)>'
    shown = httpx.get(f'{url}/ui/jobs/{quote(hostile, safe="")}', cookies={COOKIE: value}).text
    assert '<img src=x' not in shown and '&#34;&gt;&lt;img src=x onerror=alert(1)&gt;' in shown
    # a wrong token at the login page: the form again, no cookie
    wrong = httpx.post(f'{url}/ui/login', data={'token': 'guess'})
    assert wrong.status_code == 401 and COOKIE not in wrong.cookies and 'not a token' in wrong.text


def test_ledger_retry_and_overview_through_the_api_the_client_and_the_cli(served, tmp_path):
    db, url = served
    watcher = 'inverse@nums.x'
    zero = str(db.execute(Collection('nums').find_one({'x': 0}))['_id'])
    ledger = call(url, 'GET', f'/watchers/{watcher}/failures').json()['failures']
    assert [(f['row'], f['error'], f['attempts']) for f in ledger] == [(zero, 'ZeroDivisionError', 1)]
    assert 'division by zero' in ledger[0]['message'] and ledger[0]['failed_at'] <= time.time()
    missing = call(url, 'GET', '/watchers/nope/failures')
    assert missing.status_code == 404 and 'inverse@nums.x' in missing.json()['error']['message']
    with superduper(url, token=TOKEN) as client:
        assert client.failures(watcher) == ledger
        job = client.retry_failed(watcher)
        assert (
            job.status == 'success'
            and job.result['failed'] == 1
            and job.component.startswith(f'watcher/{watcher}/')
        )
        assert client.failures(watcher)[0]['attempts'] == 2
        assert [j.id for j in client.jobs(component=f'watcher/{watcher}/')][0] == job.id
        assert client.jobs(component='vector_index/') == []
        with pytest.raises(QueryError, match='cannot be cancelled'):
            client.cancel_job(job.id)
    overview = call(url, 'GET', '/overview').json()
    assert overview['tables'] == [{'name': 'nums', 'rows': 3}]
    assert overview['components'] == {'model': {'inverse': [0]}, 'watcher': {watcher: [0]}}
    assert overview['dependencies'] == [{'from': ['watcher', watcher, 0], 'to': ['model', 'inverse', 0]}]
    status = call(url, 'GET', '/status').json()
    assert status['change_capture'] == {'running': False, 'error': None, 'positions': []}
    assert status['watchers'][0]['failed'] == 1

    # the CLI: the same ledger, and a retry
    env = {**os.environ, 'PYTHONPATH': str(Path(__file__).resolve().parents[1]), 'COLUMNS': '200'}
    uri = str(db.databackend.engine.url)
    out = subprocess.run(
        [sys.executable, '-m', 'superduperdb', 'failures', watcher, '--uri', uri, '--json'],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    ).stdout
    assert [(f['row'], f['attempts']) for f in json.loads(out)] == [(zero, 2)]
    db.execute(Collection('nums').update_one({'x': 0}, {'$set': {'x': 5}}))  # the row is fixed
    assert db.failures(watcher) == []
    db.execute(Collection('nums').insert_one({'x': 0}))
    done = subprocess.run(
        [sys.executable, '-m', 'superduperdb', 'retry', watcher, '--uri', uri],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 0 and re.search(r'success, 1 row failed; 0 computed, 1 failed', done.stdout), (
        done
    )
    out = subprocess.run(
        [sys.executable, '-m', 'superduperdb', 'failures', 'nope', '--uri', uri],
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode == 1 and "No watcher 'nope'" in out.stderr


def test_preview_sends_thumbnails_summaries_and_playable_audio(tmp_path):
    from PIL import Image

    from superduperdb.encoders.pillow import pil_image

    db = superduper(f'sqlite:///{tmp_path}/media.db')
    clip = Audio(np.sin(np.linspace(0, 1000, 16000 * 60)).astype('float32'), 16000)  # a minute
    db.execute(
        Collection('media').insert_one(
            {
                'img': pil_image(Image.new('RGB', (640, 480), (0, 255, 0))),
                'vec': array('float32', 384)(np.arange(384, dtype='float32')),
                'clip': audio(clip),
                'text': '<b>bold</b>',
            }
        )
    )
    with running(create_app(db, token=TOKEN)) as url:
        body = {'query': {'kind': 'find', 'table': 'media', 'filter': {}}, 'preview': True}
        found = call(url, 'POST', '/execute', json=body).json()
        (doc,) = found['documents']
        assert found['seconds'] >= 0 and doc['text'] == '<b>bold</b>'  # data, escaped by the page
        assert doc['vec'] == {'_array': 'float32 (384,) [0., 1., 2., 3., 4., 5., 6., 7., …]'}
        assert doc['img']['title'] == '640x480 RGB'
        thumbnail = Image.open(io.BytesIO(base64.b64decode(doc['img']['_image'].split(',', 1)[1])))
        assert thumbnail.size == (96, 72) and thumbnail.getpixel((5, 5))[:3] == (0, 255, 0)
        assert doc['clip']['title'] == '60.0 s at 16000 Hz'
        import wave

        with wave.open(io.BytesIO(base64.b64decode(doc['clip']['_audio'].split(',', 1)[1]))) as wav:
            # the first 5 s, at 8 kHz: about 80 KB, whatever the clip's length
            assert (wav.getframerate(), wav.getnframes(), wav.getsampwidth()) == (8000, 40000, 2)
        assert len(json.dumps({k: v for k, v in doc.items() if k != 'clip'})) < 10_000
        bad = call(
            url, 'POST', '/execute', json={'query': {'kind': 'count', 'table': 'media'}, 'preview': True}
        )
        assert bad.status_code == 400 and 'preview' in bad.json()['error']['message']
    db.close()


def test_superduperdb_ui_serves_the_dashboard_locally(tmp_path):
    """`superduperdb ui` prints where the dashboard is and a token for the run, and serves it."""
    import socket

    superduper(f'sqlite:///{tmp_path}/ui.db').close()  # ui shows a database, never creates one
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    env = {**os.environ, 'PYTHONPATH': str(Path(__file__).resolve().parents[1])}
    env.pop('SUPERDUPERDB_SERVER__TOKEN', None)
    process = subprocess.Popen(
        [
            sys.executable,
            '-m',
            'superduperdb',
            'ui',
            '--uri',
            f'sqlite:///{tmp_path}/ui.db',
            '--port',
            str(port),
        ],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        lines = [process.stderr.readline() for _ in range(2)]
        token = lines[0].rsplit(' ', 1)[1].strip()
        assert f'http://127.0.0.1:{port}/ui/' in lines[1]
        deadline = time.monotonic() + 60
        while True:
            try:
                login = httpx.post(f'http://127.0.0.1:{port}/ui/login', data={'token': token})
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and process.poll() is None
                time.sleep(0.2)
        assert login.status_code == 303
        page = httpx.get(f'http://127.0.0.1:{port}/ui/', cookies=login.cookies)
        assert page.status_code == 200 and 'Overview' in page.text
    finally:
        process.terminate()
        process.wait(20)
        process.stderr.close()
