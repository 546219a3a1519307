"""What the server shows and who it still trusts (docs/security.md): secrets masked in every
form for every role, sessions that end on the server at logout, login forms refused from
other sites, and previews that row data cannot forge.

Through the real uvicorn server over HTTP on SQLite, PostgreSQL and MariaDB, the CLI in its
own process, a second ``superduperdb serve`` process on the same database, and Debian's
chromium (playwright) for what the dashboard draws.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from superduperdb import CFG, Collection, superduper
from superduperdb.base.exceptions import ConfigError
from superduperdb.base.masking import mask_secrets

pytest.importorskip('fastapi')

from superduperdb.server.app import create_app, running  # noqa: E402
from superduperdb.server.auth import COOKIE, CSRF_HEADER  # noqa: E402
from superduperdb.server.spawn import serve_process  # noqa: E402

TOKEN = 'sessions-token'
READ = 'sessions-read-token'
ALL_SERVED = pytest.mark.parametrize(
    'backend',
    [
        pytest.param('sqlite', marks=pytest.mark.sqlite),
        pytest.param('postgres', marks=pytest.mark.postgres),
        pytest.param('mysql', marks=pytest.mark.mysql),
    ],
    indirect=True,
)

# ----- secrets ----------------------------------------------------------------------------
S3_KEY = 'AKIAEXAMPLEKEYID'
#: AWS secret keys hold '/' and '+': a URL parser ends the user info at the '/'
S3_SECRET = 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYs3cr3t'
ARTIFACTS = f's3://{S3_KEY}:{S3_SECRET}@bucket/artifacts?region=eu-west-1&aws_secret_access_key=q-s3cr3t-1'
PG_SECRETS = ('pg-userinfo-s3cr3t', 'pg-query-s3cr3t')
SECRETS = (S3_SECRET, 'wJalrXUtnFEMI', 'q-s3cr3t-1', *PG_SECRETS)


def _no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, (secret, text)


@pytest.mark.parametrize(
    ('shown', 'hidden'),
    [
        ('postgresql://u:p@ss/w@host/db', 'ss/w'),  # '@' and '/' in the password
        ('s3://AKIA:wJal/rXUt+nFE@bucket/prefix', 'rXUt'),  # '/' in the password
        ('postgresql://u:p?ss#x@host/db', 'ss#x'),  # '?' and '#' in the password
        ('postgresql://u@host/db?sslmode=require&password=hunter3', 'hunter3'),
        ('mysql://root@h/db?pass=p1x&pwd=p2x', 'p1x'),
        ('mysql://root@h/db?pass=p1x&pwd=p2x', 'p2x'),
        ('mongodb://h/db?authSource=admin&secret=s1x&token=t1x', 's1x'),
        ('mongodb://h/db?authSource=admin&secret=s1x&token=t1x', 't1x'),
        ('s3://b/p?access_key=ak1&secret_key=sk1', 'sk1'),
        ('s3://b/p?aws_secret_access_key=aws1&x=1', 'aws1'),
        ('https://acct.blob.core.windows.net/c?sv=2022-11-02&sig=abc%2Bsig', 'abc%2Bsig'),
        ('https://acct.blob.core.windows.net/c?sas_token=sastok', 'sastok'),
        ('https://s3.example/b/k?X-Amz-Signature=deadbeef&X-Amz-Credential=AKIA%2F1', 'deadbeef'),
        ("could not open 'postgresql://u:hunter4@host/db': refused", 'hunter4'),
        ('host=db user=app password=hunter5 dbname=x', 'hunter5'),
    ],
)
def test_secrets_are_masked_in_every_form(shown: str, hidden: str) -> None:
    """The one masking function, as `superduperdb config` and repr(CFG) apply it."""
    masked = mask_secrets(shown)
    assert hidden not in masked and '***' in masked, masked
    with CFG.override(data_backend=shown, artifact_store=shown):
        assert hidden not in repr(CFG) and hidden not in json.dumps(CFG.to_dict(hide_secrets=True))
    assert mask_secrets('postgresql://u:hunter2@host/db') == 'postgresql://u:***@host/db'
    # what is not a secret stays readable
    assert mask_secrets('postgresql://app@db.internal:5432/shop?sslmode=require&authSource=admin') == (
        'postgresql://app@db.internal:5432/shop?sslmode=require&authSource=admin'
    )


@pytest.fixture
def secret_db(backend, tmp_path) -> Iterator[tuple[Any, str]]:
    """A database opened with secrets in its URI (PostgreSQL: trust auth ignores them) and an
    artifact store URL holding S3 credentials."""
    from tests.conftest import _drop_superduper_tables, backend_uri

    uri = backend_uri(backend, tmp_path)
    if backend == 'postgres':
        uri = uri.replace('://postgres@', f'://postgres:{PG_SECRETS[0]}@', 1) + f'&password={PG_SECRETS[1]}'
    if backend in ('postgres', 'mysql'):
        _drop_superduper_tables(uri)
    with CFG.override(artifact_store=ARTIFACTS, metadata_store=None):
        db = superduper(uri)
    try:
        yield db, uri
    finally:
        db.close()
        if backend in ('postgres', 'mysql'):
            _drop_superduper_tables(uri)


@ALL_SERVED
def test_overview_status_and_errors_show_no_secret_to_either_token(secret_db) -> None:
    from superduperdb.models.openai import OpenAIModel

    db, _uri = secret_db
    db.execute(Collection('things').insert_one({'x': 1}))
    with running(create_app(db, token=TOKEN, read_token=READ)) as url:
        for token in (TOKEN, READ):
            auth = {'Authorization': f'Bearer {token}'}
            overview = httpx.get(f'{url}/overview', headers=auth)
            assert overview.status_code == 200
            _no_secret(overview.text)
            assert f'{S3_KEY}:***@bucket' in overview.json()['artifacts']
            assert 'aws_secret_access_key=***' in overview.json()['artifacts']
            if db.databackend.name == 'postgresql':
                assert (
                    'postgres:***@' in overview.json()['backend']
                    and 'password=***' in overview.json()['backend']
                )
            for path in ('/status', '/components', '/jobs'):
                response = httpx.get(url + path, headers=auth)
                assert response.status_code == 200
                _no_secret(response.text)
        # an error quoting what it refused: the key in the URL stays hidden
        leaky = 'http://user:oa-s3cr3t@127.0.0.1:9/v1?api_key=oa-key-s3cr3t'
        config, _ = OpenAIModel(identifier='leaky', base_url=leaky).to_config()
        refused = httpx.post(
            f'{url}/components',
            json={'config': config, 'artifacts': {}},
            headers={'Authorization': f'Bearer {TOKEN}'},
        )
        assert refused.status_code == 403 and 'base_url' in refused.json()['error']['message']
        assert 'oa-s3cr3t' not in refused.text and 'oa-key-s3cr3t' not in refused.text


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, '-m', 'superduperdb', *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )


@pytest.mark.postgres
def test_cli_config_info_errors_and_logs_show_no_secret(tmp_path) -> None:
    from tests.conftest import POSTGRES_URI, _admin

    schema = f'sd_secret_cli_{os.getpid()}'  # a schema of its own, dropped after
    _admin('postgres', f'CREATE SCHEMA IF NOT EXISTS {schema}')
    try:
        _cli_shows_no_secret(POSTGRES_URI, schema)
    finally:
        _admin('postgres', f'DROP SCHEMA IF EXISTS {schema} CASCADE')


def _cli_shows_no_secret(postgres_uri: str, schema: str) -> None:
    uri = postgres_uri.replace('://postgres@', f'://postgres:{PG_SECRETS[0]}@', 1)
    uri += ('&' if '?' in uri else '?') + f'password={PG_SECRETS[1]}&options=-csearch_path%3D{schema}'
    env = {'SUPERDUPERDB_DATA_BACKEND': uri, 'SUPERDUPERDB_ARTIFACT_STORE': ARTIFACTS}
    config = _cli('config', env=env)
    assert config.returncode == 0, config.stderr
    _no_secret(config.stdout)
    settings = json.loads(config.stdout)
    assert settings['artifact_store'].startswith(f's3://{S3_KEY}:***@bucket/artifacts')
    assert 'password=***' in settings['data_backend']
    info = _cli('info', '--json', env=env)
    assert info.returncode == 0, info.stderr
    _no_secret(info.stdout + info.stderr)
    assert f'{S3_KEY}:***@bucket' in json.loads(info.stdout)['artifacts']
    # a password holding '@': refused without showing any of it
    broken = _cli('info', '--uri', 'postgresql://u:p@ss-s3cr3t@127.0.0.1:5432/test', env={})
    assert broken.returncode == 1 and 'Percent-encode' in broken.stderr, broken.stderr
    assert 'ss-s3cr3t' not in broken.stderr and 'postgresql://u:***@127.0.0.1' in broken.stderr
    # log lines on stderr
    logged = subprocess.run(
        [
            sys.executable,
            '-c',
            'import logging; from superduperdb import CFG; '
            f"logging.getLogger('superduperdb.test').warning('could not reach %s', {ARTIFACTS!r})",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert 'could not reach s3://' in logged.stderr, logged.stderr
    _no_secret(logged.stderr)


def test_a_password_holding_an_at_sign_is_refused_without_showing_it() -> None:
    for uri in (
        'postgresql://u:p@ss-s3cr3t@127.0.0.1:5432/test',
        'mysql://u:p@ss-s3cr3t@127.0.0.1:3306/test',
        'postgresql://u:p@ss-s3cr3t/x@127.0.0.1:5432/test',  # '/' too: the rest would be the database
    ):
        with pytest.raises(ConfigError, match='Percent-encode') as caught:
            superduper(uri)
        assert 'ss-s3cr3t' not in str(caught.value) and ':***@127.0.0.1' in str(caught.value)


# ----- sessions ---------------------------------------------------------------------------
def _login(url: str, token: str = TOKEN, **headers: str) -> httpx.Response:
    return httpx.post(f'{url}/ui/login', data={'token': token}, headers=headers)


def _csrf(url: str, cookie: str) -> str:
    page = httpx.get(f'{url}/ui/', cookies={COOKIE: cookie})
    assert page.status_code == 200, page.status_code
    return page.text.split('name="csrf-token" content="')[1].split('"')[0]


def _serve_elsewhere(uri: str, tmp_path: Any) -> Any:
    """``superduperdb serve`` on ``uri`` in a process of its own; (process, url)."""
    env = {
        'SUPERDUPERDB_SERVER__TOKEN': TOKEN,
        'SUPERDUPERDB_ARTIFACT_STORE': f'filesystem://{tmp_path}/artifacts',
    }
    return serve_process(uri, env=env, log=tmp_path / 'second-server.log', timeout=60)


@ALL_SERVED
def test_logout_ends_the_session_on_every_server_process(db, backend, tmp_path) -> None:
    from tests.conftest import backend_uri

    insert = {'query': {'kind': 'insert', 'table': 'notes', 'documents': [{'text': 'mine'}]}}
    process, other = _serve_elsewhere(backend_uri(backend, tmp_path), tmp_path)
    try:
        with running(create_app(db, token=TOKEN, read_token=READ)) as url:
            cookie = _login(url).cookies[COOKIE]
            csrf = _csrf(url, cookie)
            stolen = {COOKIE: cookie}  # a copy of the cookie: another tab, or a thief's
            for server in (url, other):  # the same token signs it: both servers take it
                assert httpx.get(f'{server}/status', cookies=stolen).status_code == 200
            wrote = httpx.post(f'{url}/execute', json=insert, cookies=stolen, headers={CSRF_HEADER: csrf})
            assert wrote.status_code == 200, wrote.text
            out = httpx.post(f'{url}/ui/logout', cookies=stolen)
            assert out.status_code == 303 and out.headers['location'] == '/ui/login'
            for server in (url, other):
                assert httpx.get(f'{server}/status', cookies=stolen).status_code == 401, server
                again = httpx.post(
                    f'{server}/execute', json=insert, cookies=stolen, headers={CSRF_HEADER: csrf}
                )
                assert again.status_code == 401, (server, again.text)
                page = httpx.get(f'{server}/ui/', cookies=stolen)
                assert page.status_code == 303 and page.headers['location'] == '/ui/login'
            assert db.execute(Collection('notes').count()) == 1
            # a new login works, and the revoked sessions table is superduperdb's own
            fresh = _login(url, READ).cookies[COOKIE]
            # the other server has no read token: the read session means nothing there
            assert httpx.get(f'{other}/status', cookies={COOKIE: fresh}).status_code == 401
            assert httpx.get(f'{url}/status', cookies={COOKIE: fresh}).status_code == 200
            peek = {'query': {'kind': 'find', 'table': '_superduper_revoked_sessions', 'filter': {}}}
            denied = httpx.post(f'{url}/execute', json=peek, headers={'Authorization': f'Bearer {TOKEN}'})
            assert denied.status_code == 400 and denied.json()['error']['type'] == 'InvalidName'
    finally:
        process.terminate()
        process.wait(10)
        if process.stderr:
            process.stderr.close()


@pytest.mark.sqlite
def test_login_and_logout_forms_from_another_site_are_refused(tmp_path) -> None:
    db = superduper(f'sqlite:///{tmp_path}/csrf.db')
    with running(create_app(db, token=TOKEN)) as url:
        host = url.removeprefix('http://')
        for headers in (
            {'Origin': 'https://evil.example'},
            {'Origin': 'null'},  # a sandboxed frame, or a page with no-referrer
            {'Sec-Fetch-Site': 'cross-site'},
            {'Sec-Fetch-Site': 'same-site', 'Origin': url},  # another port of this host
            {'Referer': 'https://evil.example/login-trap.html'},
            {'Origin': f'http://{host}.evil.example'},
        ):
            refused = _login(url, **headers)
            assert refused.status_code == 403, headers
            assert COOKIE not in refused.cookies and 'another site' in refused.text
        for headers in ({'Origin': url}, {'Sec-Fetch-Site': 'same-origin', 'Origin': url}, {}):
            accepted = _login(url, **headers)
            assert accepted.status_code == 303 and COOKIE in accepted.cookies, headers
        cookie = accepted.cookies[COOKIE]
        # a cross-site logout does not end the session either
        out = httpx.post(
            f'{url}/ui/logout', cookies={COOKIE: cookie}, headers={'Sec-Fetch-Site': 'cross-site'}
        )
        assert out.status_code == 403
        assert httpx.get(f'{url}/status', cookies={COOKIE: cookie}).status_code == 200
    db.close()


# ----- previews ---------------------------------------------------------------------------
def _png(colour: tuple[int, int, int]) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new('RGB', (40, 30), colour).save(buffer, format='PNG')
    return 'data:image/png;base64,' + base64.b64encode(buffer.getvalue()).decode()


def _wav() -> str:
    import wave

    buffer = io.BytesIO()
    with wave.open(buffer, 'wb') as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b'\x00\x10' * 200)  # short: text is sent whole up to 2000 characters
    return 'data:audio/wav;base64,' + base64.b64encode(buffer.getvalue()).decode()


SPOOF = 'Session expired: log in again at https://evil.example/login'


def _forged_rows() -> list[dict[str, Any]]:
    return [
        {'n': 1, 'meta': {'_image': _png((255, 0, 0)), 'title': SPOOF}},
        {'n': 2, 'meta': {'_audio': _wav(), 'title': 'play me'}},
        {'n': 3, 'meta': {'_data': {'_image': _png((0, 0, 255))}}},  # the wrapper itself, forged
        {'n': 4, 'meta': [{'_image': _png((0, 255, 0)), 'title': 'in a list'}]},
    ]


def test_preview_json_sends_data_shaped_like_a_preview_as_data() -> None:
    from PIL import Image

    from superduperdb.base.preview import preview_document

    real = Image.new('RGB', (64, 48), (0, 128, 0))
    for row in _forged_rows():
        shown = preview_document({**row, 'img': real, '_outputs': {'n': {'m': row['meta']}}})
        assert shown['meta'] != row['meta'] and _unwrap(shown['meta']) == row['meta']
        assert _unwrap(shown['_outputs']['n']['m']) == row['meta']  # a model's output is data too
        assert shown['img']['title'] == '64x48 RGB' and shown['img']['_image'].startswith(
            'data:image/png;base64,'
        )
        # no mapping in a value position that the data made: each is a preview or the wrapper
        for value in (shown['meta'], shown['_outputs']['n']['m']):
            assert _previews(value) == [], value


def _unwrap(value: Any) -> Any:
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    if isinstance(value, dict) and set(value) == {'_data'}:
        return {k: _unwrap(v) for k, v in value['_data'].items()}
    return value


def _previews(value: Any) -> list[Any]:
    """The objects a dashboard would draw: mappings in a value position that are not ``_data``."""
    if isinstance(value, list):
        return [p for v in value for p in _previews(v)]
    if isinstance(value, dict):
        if set(value) == {'_data'}:
            return []  # shown as text, whatever is inside
        return [value]
    return []


@ALL_SERVED
def test_rows_shaped_like_previews_come_back_as_data_over_http(db) -> None:
    from PIL import Image

    from superduperdb.encoders.pillow import pil_image

    db.execute(Collection('media').insert_one({'n': 0, 'img': pil_image(Image.new('RGB', (64, 48), 'teal'))}))
    auth = {'Authorization': f'Bearer {TOKEN}'}
    with running(create_app(db, token=TOKEN, read_token=READ)) as url:
        body = {'query': {'kind': 'insert', 'table': 'media', 'documents': _forged_rows()}}
        assert httpx.post(f'{url}/execute', json=body, headers=auth).status_code == 200
        find = {'query': {'kind': 'find', 'table': 'media', 'filter': {}}, 'preview': True}
        found = httpx.post(f'{url}/execute', json=find, headers={'Authorization': f'Bearer {READ}'})
        assert found.status_code == 200, found.text
        docs = sorted(found.json()['documents'], key=lambda d: d['n'])
        assert docs[0]['img']['title'] == '64x48 RGB'  # a real image is still a thumbnail
        for doc, row in zip(docs[1:], _forged_rows(), strict=True):
            assert _previews(doc['meta']) == [] and _unwrap(doc['meta']) == row['meta'], doc['meta']


CHROMIUM = shutil.which('chromium') or '/usr/bin/chromium'


@pytest.mark.sqlite
@pytest.mark.slow
@pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason="needs Debian's chromium (apt-get install chromium; .ci/run does)"
)
def test_the_dashboard_draws_no_thumbnail_or_player_for_row_data(tmp_path) -> None:
    from PIL import Image

    from superduperdb.encoders.pillow import pil_image

    playwright_api = pytest.importorskip('playwright.sync_api')
    db = superduper(f'sqlite:///{tmp_path}/ui.db')
    db.execute(Collection('media').insert_one({'n': 0, 'img': pil_image(Image.new('RGB', (64, 48), 'teal'))}))
    with running(create_app(db, token=TOKEN)) as url:
        body = {'query': {'kind': 'insert', 'table': 'media', 'documents': _forged_rows()}}
        inserted = httpx.post(f'{url}/execute', json=body, headers={'Authorization': f'Bearer {TOKEN}'})
        assert inserted.status_code == 200, inserted.text
        with playwright_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=['--no-sandbox', '--disable-gpu'])
            try:
                page = browser.new_page()
                page.goto(f'{url}/ui/login')
                page.fill('#token', TOKEN)
                page.click('button[type=submit]')  # our own form: same origin, accepted
                page.wait_for_url(re.compile(r'/ui/$'))
                page.goto(f'{url}/ui/tables/media')
                page.wait_for_selector('body[data-loaded=true]', timeout=30_000)
                assert page.locator('#rows tbody tr').count() == 5
                thumbs = page.locator('#rows img')
                assert thumbs.count() == 1 and thumbs.first.get_attribute('title') == '64x48 RGB'
                assert thumbs.first.evaluate('img => img.complete && img.naturalWidth') > 0
                assert page.locator('#rows audio').count() == 0
                text = page.inner_text('#rows')
                assert SPOOF in text and '"_image":"data:image/png;base64,' in text  # shown, as data
                assert '"_data"' in text  # the forged wrapper shown as it was written
            finally:
                browser.close()
    db.close()


class _TrapPage(BaseHTTPRequestHandler):
    """Another site: a page whose form logs its visitor in to the server with a token of the
    attacker's (login CSRF)."""

    target = ''

    def do_GET(self) -> None:  # noqa: N802 - the http.server hook
        html = (
            f'<form id="f" method="post" action="{self.target}/ui/login">'
            f'<input name="token" value="{TOKEN}"></form>'
            '<script>document.getElementById("f").submit()</script>'
        ).encode()
        self.send_response(200)
        self.send_header('Content-Type', 'text/html')
        self.send_header('Content-Length', str(len(html)))
        self.end_headers()
        self.wfile.write(html)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.sqlite
@pytest.mark.slow
@pytest.mark.skipif(
    not os.path.exists(CHROMIUM), reason="needs Debian's chromium (apt-get install chromium; .ci/run does)"
)
def test_a_login_form_on_another_site_logs_no_one_in(tmp_path) -> None:
    playwright_api = pytest.importorskip('playwright.sync_api')
    db = superduper(f'sqlite:///{tmp_path}/trap.db')
    with running(create_app(db, token=TOKEN)) as url:
        handler = type('Trap', (_TrapPage,), {'target': url})
        # another site: another host name for this machine, so the browser sees two sites
        trap = ThreadingHTTPServer(('127.0.0.2', 0), handler)
        threading.Thread(target=trap.serve_forever, daemon=True).start()
        try:
            with playwright_api.sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=['--no-sandbox', '--disable-gpu'])
                try:
                    context = browser.new_context()
                    page = context.new_page()
                    answers: list[int] = []
                    page.on('response', lambda r: answers.append(r.status) if '/ui/login' in r.url else None)
                    page.goto(f'http://127.0.0.2:{trap.server_address[1]}/')
                    page.wait_for_load_state('load')
                    deadline = time.monotonic() + 10
                    while not answers and time.monotonic() < deadline:
                        page.wait_for_timeout(100)
                    assert answers == [403], answers
                    assert context.cookies(url) == []  # no session was set
                finally:
                    browser.close()
        finally:
            trap.shutdown()
            trap.server_close()
    db.close()
