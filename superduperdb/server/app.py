"""The HTTP server: the Datalayer over FastAPI (``superduperdb serve``).

Every route but ``GET /health`` (the docs and the OpenAPI spec included, unless
``CFG.server.public_docs``) needs ``Authorization: Bearer <CFG.server.token>`` (or the
read-only ``CFG.server.read_token``, or the dashboard's session cookie: see
:mod:`superduperdb.server.auth`); the dashboard's pages are under ``/ui``. Errors are
``{'error': {'type': ..., 'message': ...}}`` with a fitting status, never a traceback.
Pickled bytes from a request are never unpickled unless ``CFG.server.allow_artifact_upload``
is on. docs/security.md says who may do what.

>>> from superduperdb import superduper
>>> app = create_app(superduper('sqlite:///:memory:'), token='secret')
>>> sorted(route.path for route in app.routes if route.path.startswith('/jobs'))
['/jobs', '/jobs/{job_id}', '/jobs/{job_id}/cancel']
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from superduperdb.base._deps import require
from superduperdb.base.config import CFG
from superduperdb.base.exceptions import ConfigError
from superduperdb.server.admission import Admission, Turns, WriteLock
from superduperdb.server.auth import Access, RevokedSessions
from superduperdb.server.cursors import Cursors
from superduperdb.server.idempotency import IdempotencyKeys

require('fastapi', extra='server', what='The superduperdb server')

from fastapi import Depends, FastAPI  # noqa: E402

from superduperdb.server import routes  # noqa: E402
from superduperdb.server.responses import BodyLimit, Response, install_error_handlers  # noqa: E402
from superduperdb.server.state import ServerState, guards  # noqa: E402

logger = logging.getLogger(__name__)


def create_app(
    db: Any,
    *,
    token: str | None = None,
    read_token: str | None = None,
    insecure: bool = False,
    allow_artifact_upload: bool | None = None,
    max_body_mb: float | None = None,
    public_docs: bool | None = None,
    dashboard: bool = True,
    max_concurrency: int | None = None,
    queue_timeout: float | None = None,
    warm_up: bool = False,
) -> FastAPI:
    """A FastAPI app serving ``db``.

    ``token``: the bearer token clients must send (default ``CFG.server.token``); with none,
    ``insecure=True`` must say that every route is open. ``read_token`` (default
    ``CFG.server.read_token``): a token that may only read (see :mod:`superduperdb.server.auth`).
    ``allow_artifact_upload``, ``max_body_mb`` and ``public_docs`` default to ``CFG.server``.
    ``max_concurrency`` and ``queue_timeout`` (default ``CFG.server``): requests handled at
    once, and how long the others wait before a 503 (see :mod:`superduperdb.server.admission`);
    fewer at once where ``db``'s connection pool cannot serve that many. ``warm_up``: load the
    watchers' models and build the vector engines in a background thread now, once, with
    requests waiting for it (503 past ``queue_timeout``), instead of the first requests each
    waiting on them (``superduperdb serve`` does).
    ``dashboard``: serve the web dashboard under ``/ui`` (see docs/dashboard.md). From now on, download jobs
    that ``db`` starts fetch data references under the server's policy (``db.serving``; no
    ``file://`` outside ``CFG.server.file_roots``: see docs/security.md).
    """
    from superduperdb.base.version import __version__

    token = token if token is not None else CFG.server.token
    read_token = read_token if read_token is not None else CFG.server.read_token
    if not token and not insecure:
        raise ConfigError(
            'No server token is configured: set SUPERDUPERDB_SERVER__TOKEN (or server.token in '
            'superduperdb.toml), or pass insecure=True to serve without authentication.'
        )
    uploads = CFG.server.allow_artifact_upload if allow_artifact_upload is None else allow_artifact_upload
    open_docs = CFG.server.public_docs if public_docs is None else public_docs
    db.serving = True  # jobs it starts fetch references under the server's policy
    limit = int((CFG.server.max_body_mb if max_body_mb is None else max_body_mb) * 1024 * 1024)
    # Requests that change the database or its components run one at a time; reads run
    # alongside them (each on its own pooled connection), so a long predict or fit does not
    # hold up queries. Databases that cannot be shared across threads serve one request at
    # a time (see _one_thread_only). A request waits for the write lock no longer than its
    # deadline, giving its turn back meanwhile (see admission.py).
    writes = WriteLock()
    reads: Any = writes if _one_thread_only(db) else contextlib.nullcontext()
    wanted = CFG.server.max_concurrency if max_concurrency is None else max_concurrency
    turns = Turns(_concurrency(db, wanted))
    waiting = CFG.server.queue_timeout if queue_timeout is None else queue_timeout
    keys = IdempotencyKeys(db, ttl=CFG.server.idempotency_ttl)
    cursors = Cursors(ttl=CFG.server.cursor_ttl)
    # logouts recorded in the metadata store: they hold on every server process of the database
    revoked = RevokedSessions(db.metadata.backend, lock=reads) if token else None
    access = Access(token, read_token, revoked=revoked)
    authenticated, writer = guards(access)

    app = FastAPI(
        title='superduperdb',
        version=__version__,
        description='The superduperdb Datalayer over HTTP. Every route but /health needs a bearer token.',
        default_response_class=Response,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.db = db
    app.state.cursors = cursors
    app.state.writes = writes  # the write lock: nothing is decoded or encoded while it is held
    app.state.access = access
    guarded = [Depends(authenticated)]
    state = ServerState(
        db=db,
        uploads=uploads,
        reads=reads,
        writes=writes,
        keys=keys,
        cursors=cursors,
        access=access,
        authenticated=authenticated,
        guarded=guarded,
        writers=[Depends(writer)],
        docs_guard=[] if open_docs else guarded,
    )
    routes.add_routes(app, state)
    if dashboard:
        from superduperdb.ui import install

        install(app, access=access)
    install_error_handlers(app)
    ready = threading.Event()
    if warm_up:
        threading.Thread(target=_warm_up, args=(db, ready), name='superduperdb-warm-up', daemon=True).start()
    else:
        ready.set()
    app.add_middleware(Admission, turns=turns, timeout=waiting, ready=ready)
    app.add_middleware(BodyLimit, limit=limit)  # outermost: a body too large takes no turn
    return app


def _warm_up(db: Any, ready: threading.Event) -> None:
    """Do once, before requests, the work the first requests of a cold server would each wait
    on: load every active watcher's model, build every vector index's engine. What cannot load
    here is logged and left to the requests that need it (they get its error)."""
    started = time.perf_counter()
    try:
        for record in db.metadata.latest('vector_index'):
            with _logged('building vector index %r', record['identifier']):
                db.vectors.loaded(db.vectors.get(record['identifier']))
        tables = {r['config']['params']['select']['_query']['table'] for r in db.metadata.latest('watcher')}
        for table in sorted(tables):
            with _logged('loading the watchers of %r', table):
                db.watchers_on(table, broken=[])
    except Exception:
        logger.warning('warming up failed; requests load what they need', exc_info=True)
    finally:
        ready.set()
        logger.info('warmed up in %.1f s', time.perf_counter() - started)


@contextlib.contextmanager
def _logged(what: str, name: str) -> Iterator[None]:
    try:
        yield
    except Exception:
        logger.warning(
            'warming up: %s failed; requests that need it get the error', what % (name,), exc_info=True
        )


def _concurrency(db: Any, wanted: int) -> int:
    """Requests to handle at once: ``wanted``, or fewer where ``db``'s connection pool could
    not serve that many without a request waiting for a connection (which is how 50 clients
    on a cold server all stalled 30 s: see admission.py)."""
    from superduperdb.backends.uri import BACKGROUND_CONNECTIONS, CONNECTIONS_PER_REQUEST, pool_capacity

    capacity = pool_capacity(db.databackend)
    if capacity is None:
        return wanted
    fits = max(1, (capacity - BACKGROUND_CONNECTIONS) // CONNECTIONS_PER_REQUEST)
    if fits < wanted:
        logger.warning(
            'serving %d requests at once, not server.max_concurrency = %d: the database pool holds %d '
            'connections (pool_size); superduperdb serve sizes it itself',
            fits,
            wanted,
            capacity,
        )
    return min(wanted, fits)


def _one_thread_only(db: Any) -> bool:
    """Whether requests must take turns on ``db`` (see ``DataBackend.one_thread_at_a_time``)."""
    return bool(db.databackend.one_thread_at_a_time())


def serve(
    uri: str | None = None,
    *,
    host: str | None = None,
    port: int | None = None,
    insecure: bool = False,
) -> None:
    """Serve the database ``uri`` (default ``CFG.data_backend``) until interrupted."""
    require('uvicorn', extra='server', what='The superduperdb server')
    import uvicorn

    from superduperdb.connect import connect

    if not CFG.server.token and not insecure:
        raise ConfigError(
            'No server token is configured, so anyone who can reach the port could read and change '
            'the database. Set SUPERDUPERDB_SERVER__TOKEN (or server.token in superduperdb.toml), or '
            'pass --insecure to serve without authentication.'
        )
    from superduperdb.backends.uri import connections_needed

    # enough pooled connections that no request waits for one (see admission.py)
    pool_size = max(CFG.pool_size, connections_needed(CFG.server.max_concurrency))
    with CFG.override(pool_size=pool_size):
        db = connect(uri)  # a database (superduper(uri) would make a client of a URL)
    try:
        app = create_app(db, insecure=insecure, warm_up=True)
        uvicorn.run(app, host=host or CFG.server.host, port=port or CFG.server.port, log_level='info')
    finally:
        db.close()


@contextlib.contextmanager
def running(app: Any, *, host: str = '127.0.0.1', port: int = 0) -> Iterator[str]:
    """Serve ``app`` with uvicorn in a background thread (``port=0``: a free one); yields its URL.

    For notebooks, tests and examples; ``superduperdb serve`` is the way to run a server.
    """
    require('uvicorn', extra='server', what='The superduperdb server')
    import uvicorn

    from superduperdb.server.spawn import free_port

    if port == 0:
        port = free_port(host)
    config = uvicorn.Config(app, host=host, port=port, log_level='warning', ws='none', lifespan='off')
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name='superduperdb-server', daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise ConfigError(f'The server did not start on {host}:{port} (is the port in use?).')
        time.sleep(0.01)
    try:
        yield f'http://{host}:{port}'
    finally:
        server.should_exit = True
        thread.join(10)
