"""The web dashboard, served by ``superduperdb serve`` under ``/ui`` (docs/dashboard.md).

Pages are Jinja2 templates (autoescaped) that carry no data of their own: one small script,
``static/app.js``, fills them from the server's JSON API, the same routes the remote client
and the CLI use (``/overview``, ``/status``, ``/watchers/{identifier}/failures``, ``/jobs``,
``/execute`` ...), and draws values from data as text only, never as markup. Every asset
ships in the package: the dashboard works offline.

Access: the login page takes a token once and sets the session cookie of
:mod:`superduperdb.server.auth` (HttpOnly, SameSite=Strict); the token never appears in a
URL. Pages send the cookie and their ``X-CSRF-Token``; a read-only token sees every page but
the actions (retry, cancel) are refused by the API. Logging out ends the session on the
server; the login and logout forms posted from another site get 403.

>>> from superduperdb import superduper
>>> from superduperdb.server.app import create_app
>>> app = create_app(superduper('sqlite:///:memory:'), token='secret')
>>> sorted(r.path for r in app.routes if r.path.startswith('/ui/') and 'login' in r.path)
['/ui/login', '/ui/login']
"""

from __future__ import annotations

import asyncio
import urllib.parse
from pathlib import Path
from typing import Any

from superduperdb.base._deps import require

require('fastapi', extra='server', what='The dashboard')

from fastapi import Request  # noqa: E402 - FastAPI reads the pages' annotations from this module
from fastapi.responses import HTMLResponse, RedirectResponse, Response  # noqa: E402

HERE = Path(__file__).parent
#: the pages, in the order of the navigation bar: (path under /ui, template, title)
PAGES = (
    ('', 'overview.html', 'Overview'),
    ('freshness', 'freshness.html', 'Freshness'),
    ('jobs', 'jobs.html', 'Jobs'),
    ('tables', 'tables.html', 'Tables'),
    ('search', 'search.html', 'Search'),
    ('evaluation', 'evaluation.html', 'Evaluation'),
)
#: what a dashboard page may load: itself, its own static files, thumbnails sent as data: URLs
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)


def _environment() -> Any:
    jinja2 = require('jinja2', extra='server', what='The dashboard')
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(HERE / 'templates')),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        auto_reload=False,
    )
    return env


def install(app: Any, *, access: Any) -> None:
    """Add the dashboard's pages, its login and its static files to the FastAPI ``app``."""
    from starlette.staticfiles import StaticFiles

    from superduperdb.base.version import __version__
    from superduperdb.server.auth import COOKIE, SESSION_SECONDS, same_origin
    from superduperdb.server.errors import Unauthorized

    class Assets(StaticFiles):
        """The script and stylesheet, cached by browsers for a day: pages name them with the
        package's version (``?v=``), so an upgrade is fetched at once."""

        async def get_response(self, path: str, scope: Any) -> Any:
            response = await super().get_response(path, scope)
            if response.status_code == 200:
                response.headers['Cache-Control'] = 'public, max-age=86400'
            return response

    env = _environment()
    app.mount('/ui/static', Assets(directory=str(HERE / 'static')), name='ui-static')

    def page(template: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = env.get_template(template).render(version=__version__, pages=PAGES, **context)
        headers = {
            'Content-Security-Policy': CSP,
            'X-Content-Type-Options': 'nosniff',
            # our own forms then carry their true Origin (no-referrer would make it "null"),
            # and other sites still learn nothing
            'Referrer-Policy': 'same-origin',
            'Cache-Control': 'no-store',
        }
        return HTMLResponse(html, status_code=status, headers=headers)

    def session(request: Request) -> tuple[str, str] | None:
        """(role, csrf token) of the request's session; None when it must log in."""
        if access.open:
            return 'write', access.csrf_token('')
        value = request.cookies.get(COOKIE)
        role = access.session_role(value)
        return None if role is None else (role, access.csrf_token(value))

    def to_login() -> RedirectResponse:
        return RedirectResponse('/ui/login', status_code=303)

    @app.get('/ui', include_in_schema=False)
    def ui_root() -> RedirectResponse:
        return RedirectResponse('/ui/', status_code=307)

    @app.get('/ui/login', include_in_schema=False)
    def login_page(request: Request) -> Response:
        if session(request) is not None:
            return RedirectResponse('/ui/', status_code=303)
        return page('login.html', error=None)

    def cross_site(request: Request) -> Response | None:
        """403 for a form another site posted (login CSRF: a visitor logged in to the
        attacker's session, whose pages then show what the attacker put there)."""
        if same_origin(request.headers):
            return None
        return page(
            'login.html',
            status=403,
            error="This form was sent from another site; log in from this server's own login page.",
        )

    @app.post('/ui/login', include_in_schema=False)
    async def login(request: Request) -> Response:
        refused = cross_site(request)
        if refused is not None:
            return refused
        body = (await request.body()).decode('utf-8', 'replace')
        given = (urllib.parse.parse_qs(body).get('token') or [''])[0].strip()
        if not given:
            return page('login.html', status=400, error="Enter the server's token.")
        try:
            _role, value = access.login(given)
        except Unauthorized:
            await asyncio.sleep(0.2)  # a little friction for guessing, without holding up others
            return page('login.html', status=401, error='That is not a token of this server.')
        response = RedirectResponse('/ui/', status_code=303)
        secure = request.url.scheme == 'https'
        response.set_cookie(
            COOKIE,
            value,
            max_age=SESSION_SECONDS,
            path='/',
            httponly=True,
            samesite='strict',
            secure=secure,
        )
        return response

    @app.post('/ui/logout', include_in_schema=False)
    def logout(request: Request) -> Response:
        refused = cross_site(request)
        if refused is not None:
            return refused
        # ended on the server, so a copy of the cookie (another tab, a stolen one) stops working
        access.logout(request.cookies.get(COOKIE))
        response = to_login()
        response.delete_cookie(COOKIE, path='/', httponly=True, samesite='strict')
        return response

    def add_page(path: str, template: str, title: str) -> None:
        def show(request: Request) -> Response:
            found = session(request)
            if found is None:
                return to_login()
            role, csrf = found
            params = dict(request.path_params)
            return page(template, title=title, active=path.split('/')[0], role=role, csrf=csrf, params=params)

        show.__name__ = f'ui_{template.split(".")[0]}'
        app.get(f'/ui/{path}', include_in_schema=False, response_class=HTMLResponse)(show)

    for path, template, title in PAGES:
        add_page(path, template, title)
    add_page('jobs/{job_id}', 'job.html', 'Job')
    add_page('tables/{table}', 'table.html', 'Table')
