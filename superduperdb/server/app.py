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

import base64
import binascii
import contextlib
import dataclasses
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal

from superduperdb.base._deps import require
from superduperdb.base.config import CFG
from superduperdb.base.exceptions import (
    ComponentError,
    ComponentNotFound,
    ConfigError,
    QueryError,
    SuperDuperError,
)
from superduperdb.server import wire
from superduperdb.server.admission import Admission, Turns, WriteLock, overloaded
from superduperdb.server.auth import Access, RevokedSessions, Role, require_write
from superduperdb.server.cursors import Cursors
from superduperdb.server.errors import Forbidden, Overloaded
from superduperdb.server.idempotency import HEADER, IdempotencyKeys, check_key, request_digest

require('fastapi', extra='server', what='The superduperdb server')

from fastapi import Depends, FastAPI, Header, Query, Request  # noqa: E402
from fastapi.exceptions import RequestValidationError  # noqa: E402
from fastapi.responses import HTMLResponse, JSONResponse  # noqa: E402
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer  # noqa: E402
from pydantic import BaseModel, Field  # noqa: E402
from starlette.exceptions import HTTPException  # noqa: E402

logger = logging.getLogger(__name__)


class Response(JSONResponse):
    """JSON that keeps NaN and infinities (Python's json reads them back)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, separators=(',', ':')).encode('utf-8')


_TABLE: Any = Field(
    pattern=r'^[A-Za-z_][A-Za-z0-9_\-]{0,62}$',
    description="A table/collection name (superduperdb's own, _superduper*, are refused).",
)
_FILTER: Any = Field(default_factory=dict, description='A Mongo-style filter, e.g. {"price": {"$lt": 10}}.')


class LikeSpec(BaseModel):
    value: Any = Field(description='{"key": value} to encode with the index model, a vector, or {"_id": id}.')
    index: str = Field(description='The vector index (see GET /components?type_id=vector_index).')
    n: int = Field(10, ge=1)
    first: bool = Field(False, description='Search first, then filter (else filter, then search).')


class FindQuery(BaseModel):
    kind: Literal['find', 'findone']
    table: str = _TABLE
    filter: dict[str, Any] = _FILTER
    projection: dict[str, int] | None = None
    sort: list[tuple[str, int]] = Field(default_factory=list, description='[[key, 1 or -1], ...]')
    limit: int | None = Field(None, ge=0, le=2**63 - 1)
    skip: int = Field(0, ge=0, le=2**63 - 1)
    like: LikeSpec | None = None


class CountQuery(BaseModel):
    kind: Literal['count']
    table: str = _TABLE
    filter: dict[str, Any] = _FILTER


class InsertQuery(BaseModel):
    kind: Literal['insert']
    table: str = _TABLE
    documents: list[dict[str, Any]] = Field(description='Encoded values in the _content form.')


class UpdateQuery(BaseModel):
    kind: Literal['update']
    table: str = _TABLE
    filter: dict[str, Any] = _FILTER
    update: dict[str, Any] = Field(description='{"$set": {...}}, {"$unset": {...}} or {"$inc": {...}}.')
    many: bool = True


class DeleteQuery(BaseModel):
    kind: Literal['delete']
    table: str = _TABLE
    filter: dict[str, Any] = _FILTER
    many: bool = True


class ExecuteRequest(BaseModel):
    query: FindQuery | CountQuery | InsertQuery | UpdateQuery | DeleteQuery = Field(
        discriminator='kind', description="A query in its to_dict() form (the client's wire format)."
    )
    preview: bool = Field(False, description='Values as a browser shows them (find and findone only).')


class AddRequest(BaseModel):
    config: dict[str, Any] = Field(description="The component's to_config() JSON: {cls, params}.")
    artifacts: dict[str, str] = Field(
        default_factory=dict,
        description='Pickled artifacts, base64; accepted only with CFG.server.allow_artifact_upload.',
    )


class PredictRequest(BaseModel):
    values: list[Any] = Field(description='Inputs, as JSON (encoded values in the _content form).')
    version: int | None = None


_KEY: Any = Field(description='The input key, or several keys (a list).')
_SELECT: Any = Field(description='A find query (kind "find") in its to_dict() form: the rows to use.')
_VERSION: Any = Field(None, description='The stored model version (default: the latest).')


class PredictQueryRequest(BaseModel):
    key: str | list[str] = _KEY
    select: FindQuery = _SELECT
    version: int | None = _VERSION
    overwrite: bool = False
    features: dict[str, str] = Field(default_factory=dict)
    watch: bool = Field(False, description='Add a Watcher that keeps the outputs fresh; returns its job.')
    chunk_size: int | None = Field(None, ge=1, le=1_000_000)


class FitRequest(BaseModel):
    X: str | list[str] = _KEY
    y: str | None = Field(None, description='The target key (none for unsupervised models).')
    select: FindQuery = _SELECT
    validation_select: FindQuery | None = None
    version: int | None = _VERSION
    features: dict[str, str] = Field(default_factory=dict)
    kwargs: dict[str, Any] = Field(default_factory=dict, description="JSON options for the model's fit.")


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
    bearer = HTTPBearer(auto_error=False, description='CFG.server.token (or CFG.server.read_token)')
    # logouts recorded in the metadata store: they hold on every server process of the database
    revoked = RevokedSessions(db.metadata.backend, lock=reads) if token else None
    access = Access(token, read_token, revoked=revoked)

    def authenticated(
        request: Request,
        credentials: HTTPAuthorizationCredentials | None = Depends(bearer),  # noqa: B008
    ) -> Role:
        role = access.role_of_request(
            request.method, request.headers.get('authorization'), request.cookies, request.headers
        )
        request.state.role = role
        return role

    def writer(role: Role = Depends(authenticated)) -> None:  # noqa: B008
        require_write(role, 'this request')

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
    writers = [Depends(writer)]
    docs_guard = [] if open_docs else guarded

    @app.get('/openapi.json', include_in_schema=False, dependencies=docs_guard)
    def openapi() -> Any:
        return app.openapi()

    @app.get('/docs', include_in_schema=False, dependencies=docs_guard, response_class=HTMLResponse)
    def docs_page() -> HTMLResponse:
        from superduperdb.server.docs_page import render

        return HTMLResponse(render(app.openapi()))

    def lookup(identifier: str, version: int | None) -> Any:
        with reads:  # the metadata store, in turn where the database cannot be shared
            encoder = db.encoder(identifier, version)
        path = f'{type(encoder).__module__}:{type(encoder).__qualname__}'
        if encoder.runs_code and not uploads:  # see BaseEncoder.runs_code
            raise Forbidden(
                f'Encoder {identifier!r} ({path}) may unpickle what it decodes, and this server does not '
                'decode such values from requests. Use a numpy, pillow, audio or torch encoder, or set '
                'CFG.server.allow_artifact_upload on the server.'
            )
        return encoder

    def stored_model(identifier: str, version: int | None, *, cached: bool = True) -> Any:
        from superduperdb.components.model import Model

        try:
            model = db.load('model', identifier, version, cached=cached)
        except ComponentNotFound as exc:
            raise ComponentNotFound(
                f'{exc} Models run on the server from its own copy: add {identifier!r} on the server '
                '(from a process with direct database access), or enable '
                'CFG.server.allow_artifact_upload there and client.add(model).',
                type_id='model',
                identifier=identifier,
                version=version,
            ) from exc
        if not isinstance(model, Model):
            raise ComponentError(f'{identifier!r} is not a model.')
        return model

    def safe(encoder: Any) -> bool:
        return uploads or not encoder.runs_code

    def request_query(data: dict[str, Any]) -> Any:
        q = wire.query_from_json(data, lookup)
        _check_raw_bytes(db, q, safe)
        return q

    def find_query(select: FindQuery) -> Any:
        from superduperdb.query.objects import Find, FindOne

        if select.kind != 'find' or select.like is not None:  # refused before anything is decoded
            raise QueryError(
                'A model runs over a plain find query (kind "find", no "like"), e.g. coll.find().'
            )
        q = request_query(select.model_dump(exclude_none=True))
        assert isinstance(q, Find) and not isinstance(q, FindOne) and q.similar is None
        return q

    def decoded_query(query: Any) -> Any:
        """A request's query with its values decoded and encoded again for storing, all before
        any lock is taken (decoders are bounded, but a write lock held while decoding would
        make every write wait); a ``like`` is decoded only if its index exists."""
        like = getattr(query, 'like', None)
        if like is not None:
            with reads:
                _check_index(db, query.table, like.index)
        q = wire.query_from_json(query.model_dump(exclude_none=True), lookup)
        _encode_ahead(q)
        return q

    @app.get('/health', tags=['server'])
    def health() -> dict[str, Any]:
        """Open to all: whether the server is up."""
        return {'status': 'ok', 'version': __version__}

    @app.post('/execute', tags=['queries'])
    def execute(
        request: ExecuteRequest,
        role: Role = Depends(authenticated),  # noqa: B008
        idempotency_key: str | None = Header(  # noqa: B008
            None, alias=HEADER, description='Inserts: a retry with the same key gets the first answer.'
        ),
    ) -> Any:
        """Run a query: find, findone, count, insert, update or delete (find with "like": vector search).

        ``preview``: values as a browser shows them (thumbnails, array summaries; see
        ``superduperdb.base.preview``), for reading only; ``seconds``: how long the query took.
        An insert sent with an ``Idempotency-Key`` header is stored once however often it is
        sent (see :mod:`superduperdb.server.idempotency`).
        """
        from superduperdb.datalayer.datalayer import WriteResult

        kind = request.query.kind
        if kind in ('insert', 'update', 'delete'):
            require_write(role, f'{kind} queries')
        if request.preview and kind not in ('find', 'findone'):
            raise QueryError('"preview" is for find and findone queries.')
        if idempotency_key is not None and kind != 'insert':
            raise QueryError(f'{HEADER} is taken with inserts only; send this {kind} without it.')
        key = None if idempotency_key is None else check_key(idempotency_key)
        digest = None if key is None else request_digest(request.query.model_dump(mode='json'))
        show = _previewer(request.preview)
        q = decoded_query(request.query)
        writing = kind in ('insert', 'update', 'delete')
        # a write's jobs (watchers decoding stored values, models running) run after the write
        # lock is let go, where the database can be shared between threads
        later = _deferring(db) if writing and reads is not writes else contextlib.nullcontext()
        with later, writes if writing else reads:
            started = time.perf_counter()
            _check_raw_bytes(db, q, safe)  # under the lock: the table's encoders as the write finds them
            result: Any
            if key is not None and digest is not None:  # stored once, however often it is sent
                result, _ = keys.insert(key, digest, q, db.execute)
            else:
                result = db.execute(q)
            if kind == 'find':  # the first page, and a cursor for the rest
                result, cursor = cursors.first(result.chunks())
            seconds = round(time.perf_counter() - started, 4)
        # the answer's values are encoded (or previewed) after the lock is let go
        if kind == 'find':
            body: dict[str, Any] = {'documents': [show(doc) for doc in result], 'cursor': cursor}
            if request.preview:
                body['seconds'] = seconds
            return body
        if kind == 'findone':
            return {'document': None if result is None else show(result)}
        if isinstance(result, WriteResult):
            return {'ids': wire.to_json(result.ids), 'jobs': [wire.job_to_json(j) for j in result.jobs]}
        return {'count': result}

    @app.get('/cursors/{cursor_id}', tags=['queries'], dependencies=guarded)
    def next_page(cursor_id: str) -> Any:
        """The next page of a find's results; "cursor" is null after the last page."""
        with reads:
            page, cursor = cursors.next(cursor_id)
        return {'documents': [wire.to_json(doc) for doc in page], 'cursor': cursor}

    @app.delete('/cursors/{cursor_id}', tags=['queries'], dependencies=guarded)
    def close_cursor(cursor_id: str) -> Any:
        """Drop a find's cursor before its last page (idle ones expire on their own)."""
        return {'closed': cursors.close(cursor_id)}

    @app.get('/components', tags=['components'], dependencies=guarded)
    def show(type_id: str | None = None, identifier: str | None = None) -> Any:
        """What is registered: {type_id: [identifiers]}, identifiers of a type, or versions of one."""
        if type_id == 'job':
            raise QueryError('Jobs are listed by GET /jobs.')
        if identifier is not None and type_id is None:
            raise QueryError('Pass type_id with identifier.')
        with reads:
            return {'result': db.show(type_id, identifier)}

    @app.post('/components', tags=['components'], dependencies=writers)
    def add(request: AddRequest) -> Any:
        """Add a component from its config (children already added, referenced by version)."""
        with writes:
            component = _component_from_request(db, request, uploads)
            db.add(component)
            jobs = getattr(component, 'jobs_', None) or []
            return {
                'type_id': component.type_id,
                'identifier': component.identifier,
                'version': component.version,
                'jobs': [wire.job_to_json(j) for j in jobs],
            }

    @app.get('/components/{type_id}/{identifier}', tags=['components'], dependencies=guarded)
    def load(type_id: str, identifier: str, version: int | None = None) -> Any:
        """A component's config and its artifacts (pickled, base64), for the client to rebuild it."""
        with reads:
            record = db.metadata.get_component(type_id, identifier, version)
            uid = f'{type_id}/{identifier}/{record["version"]}'
            artifacts = {
                name: base64.b64encode(db.artifact_store.get(key, component=uid)).decode('ascii')
                for name, key in record['artifacts'].items()
            }
            return {'config': record['config'], 'version': record['version'], 'artifacts': artifacts}

    @app.delete('/components/{type_id}/{identifier}', tags=['components'], dependencies=writers)
    def remove(type_id: str, identifier: str, version: int | None = None, force: bool = False) -> Any:
        """Remove a component version (all versions without ``version``)."""
        with writes:
            db.remove(type_id, identifier, version, force=force)
            return {'removed': [type_id, identifier, version]}

    @app.get('/jobs', tags=['jobs'], dependencies=guarded)
    def jobs(
        status: str | None = None,
        component: str | None = None,
        limit: int = Query(100, ge=1, le=10_000),
        log: bool = True,
    ) -> Any:
        """Recent jobs, newest first (``component``: those whose component starts with it;
        ``log=false``: without their logs, ``log_size`` only)."""
        with reads:
            found = db.jobs(status, limit=limit, component=component)
            return {'jobs': [wire.job_to_json(j, log_offset=0 if log else len(j.log)) for j in found]}

    @app.get('/jobs/{job_id}', tags=['jobs'], dependencies=guarded)
    def job(job_id: str, log_offset: int = Query(0, ge=0)) -> Any:
        """One job, its log from character ``log_offset`` on (follow it by passing ``log_size`` back)."""
        with reads:
            return wire.job_to_json(db.job(job_id), log_offset)

    @app.post('/models/{identifier}/predict', tags=['models'], dependencies=guarded)
    def predict(identifier: str, request: PredictRequest) -> Any:
        """Outputs of a stored model on the given values."""
        from superduperdb.base.document import Encodable

        with reads:
            model = stored_model(identifier, request.version)  # before any value is decoded
        values = wire.from_json(request.values, lookup, strict=True)
        values = [v.x if isinstance(v, Encodable) else v for v in values]
        with reads:
            try:
                outputs = model.predict_values(values)
            except SuperDuperError:
                raise
            except Exception as exc:  # the model's own code refused these inputs
                logger.info('model %s failed on request values', identifier, exc_info=True)
                raise QueryError(
                    f'Model {identifier!r} failed on these values: {type(exc).__name__}: {exc}'
                ) from exc
        if model.encoder is not None and model.encoder.version is not None:
            outputs = [model.encoder(y) for y in outputs]
        return {'outputs': wire.to_json(outputs)}

    @app.post('/models/{identifier}/predict_query', tags=['models'], dependencies=writers)
    def predict_query(identifier: str, request: PredictQueryRequest) -> Any:
        """A stored model over the rows of a query, outputs written back (``watch``: kept fresh)."""
        from superduperdb.components.watcher import Watcher
        from superduperdb.predict.over_query import predict_over_query

        key = _key(request.key)
        with writes:
            select = find_query(request.select)
            model = stored_model(identifier, request.version)
            if request.watch:
                watcher = db.add(Watcher(model=model, key=key, select=select, features=request.features))
                backfill = watcher.backfill_  # with partitions, the job that waits for all of them
                return {'job': wire.job_to_json(backfill) if backfill is not None else None}
            report = predict_over_query(
                db,
                model,
                key=key,
                select=select,
                overwrite=request.overwrite,
                features=request.features,
                chunk_size=request.chunk_size,
            )
            return {'report': wire.to_json(dataclasses.asdict(report))}

    @app.post('/models/{identifier}/fit', tags=['models'], dependencies=writers)
    def fit(identifier: str, request: FitRequest) -> Any:
        """Train a stored model on the rows of a query; the trained model is stored as a new version."""
        from superduperdb.predict.over_query import fit_over_query

        key = _key(request.X)
        with writes:
            select = find_query(request.select)
            validation = None if request.validation_select is None else find_query(request.validation_select)
            model = stored_model(identifier, request.version, cached=False)  # trained in place: a copy
            kwargs = wire.from_json(request.kwargs, strict=True)
            try:
                trained = fit_over_query(
                    db,
                    model,
                    X=key,
                    y=request.y,
                    select=select,
                    validation_select=validation,
                    features=request.features,
                    **kwargs,
                )
            except SuperDuperError:
                raise
            except Exception as exc:  # the model's own training code refused these rows or options
                logger.info('fitting model %s failed', identifier, exc_info=True)
                raise QueryError(f'Fitting model {identifier!r} failed: {type(exc).__name__}: {exc}') from exc
            return {
                'identifier': trained.identifier,
                'version': trained.version,
                'metrics': wire.to_json(trained.metrics),
            }

    @app.get('/status', tags=['server'], dependencies=guarded)
    def status() -> Any:
        """How fresh each watcher's outputs are (see db.status()), each vector index's engine in
        this server checked against its outputs, and where change capture stands."""
        from superduperdb.freshness.report import capture_status

        with reads:
            report = db.status()
            return {
                'watchers': wire.to_json(report),
                'vector_indexes': wire.to_json(report.vector_indexes),
                'change_capture': capture_status(db),
            }

    from superduperdb.server import operations

    operations.add_routes(app, db, guarded=guarded, writers=writers, reads=reads, writes=writes)
    if dashboard:
        from superduperdb.ui import install

        install(app, access=access)
    _install_error_handlers(app)
    ready = threading.Event()
    if warm_up:
        threading.Thread(target=_warm_up, args=(db, ready), name='superduperdb-warm-up', daemon=True).start()
    else:
        ready.set()
    app.add_middleware(Admission, turns=turns, timeout=waiting, ready=ready)
    app.add_middleware(BodyLimit, limit=limit)  # outermost: a body too large takes no turn
    return app


def _deferring(db: Any) -> Any:
    """The executor's ``deferring`` block (a write's jobs run after the write lock is let go),
    or none where the executor cannot be made (a Dask executor with no scheduler): the write
    then stands, its jobs recorded as a failed start, as without a server."""
    try:
        executor = db.executor
    except ConfigError:
        return contextlib.nullcontext()
    return executor.deferring(db)


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


def _previewer(preview: bool) -> Callable[[Any], Any]:
    if not preview:
        return wire.to_json
    from superduperdb.base.preview import preview_document

    return preview_document  # row data never passes for a preview (see base/preview.py)


def _key(key: str | list[str]) -> str | tuple[str, ...]:
    return tuple(key) if isinstance(key, list) else key


def _component_from_request(db: Any, request: AddRequest, uploads: bool) -> Any:
    import pickle

    from superduperdb.components.component import Component, resolve_class

    config = request.config
    path = config.get('cls')
    if not isinstance(path, str) or not isinstance(config.get('params'), dict):
        raise ComponentError('A component config is {"cls": "module:Class", "params": {...}}.')
    placeholders = [k for k, v in config['params'].items() if v == {'_artifact': k}]
    if (request.artifacts or placeholders) and not uploads:
        raise Forbidden(
            f'This component ({path}) carries pickled artifacts '
            f'({", ".join(placeholders or request.artifacts)}), '
            'and this server does not accept them: unpickling runs code. Add it from a process with '
            'direct database access, or set CFG.server.allow_artifact_upload on the server.'
        )
    missing = [k for k in placeholders if k not in request.artifacts]
    if missing:
        raise ComponentError(f'The config refers to artifacts that were not sent: {", ".join(missing)}.')
    cls = resolve_class(path)  # the allow-list, checked before anything is imported
    assert issubclass(cls, Component)

    def load_artifact(name: str) -> Any:
        try:
            return pickle.loads(base64.b64decode(request.artifacts[name], validate=True))
        except (binascii.Error, ValueError) as exc:
            raise ComponentError(f'Artifact {name!r} is not base64 text.') from exc
        except Exception as exc:
            raise ComponentError(f'Artifact {name!r} could not be unpickled: {exc}.') from exc

    try:
        component = cls.from_config(config, load_artifact=load_artifact, load_component=db.load)
    except SuperDuperError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise ComponentError(f'Cannot build {path} from this config: {type(exc).__name__}: {exc}.') from exc
    component.check_from_request()
    if not uploads:
        _refuse_code(component, path)
    return component


def _refuse_code(component: Any, path: str) -> None:
    """A token holder may not create an encoder that runs code when it decodes, nor a model
    whose outputs it would decode (docs/security.md, "The invariant"): with one, values
    someone else wrote could run code on every process that reads them."""
    from superduperdb.components.encoder import BaseEncoder

    encoder = component if isinstance(component, BaseEncoder) else getattr(component, 'encoder', None)
    if isinstance(encoder, BaseEncoder) and encoder.runs_code:
        kind = type(encoder).__name__
        raise Forbidden(
            f'This component ({path}) {"is" if encoder is component else "uses"} the encoder '
            f'{encoder.identifier!r} ({kind}), which runs code when it decodes (it may unpickle), and this '
            'server lets only '
            'its operator create those. Use a numpy, pillow, audio or torch encoder, add it from a '
            'process with direct database access, or set CFG.server.allow_artifact_upload on the server.'
        )


def _check_index(db: Any, table: str, index: str) -> None:
    """A ``like`` names an existing vector index of its table (ComponentNotFound, QueryError),
    checked before its value is decoded: a request decodes only what it needs."""
    found = db.vectors.get(index)
    if found.table != table:
        raise QueryError(f'Vector index {index!r} indexes table {found.table!r}, not {table!r}.')


def _encode_ahead(q: Any) -> None:
    """Encode the values an insert or update will store now (``Encodable.data``), so that the
    write, under the server's write lock, only writes bytes."""
    from superduperdb.base.document import Document
    from superduperdb.query.objects import Insert, Update

    parts: list[Any]
    if isinstance(q, Insert):
        parts = list(q.documents)
    elif isinstance(q, Update):
        parts = [part for part in q.update.values() if isinstance(part, dict)]
    else:
        return
    for part in parts:
        for _, value in Document(part).encodables():
            encoder: Any = value.encoder
            if not value.pending and value.data is None and not encoder.runs_code:
                value.data = encoder.encode(value.x)


def _check_raw_bytes(db: Any, q: Any, safe: Callable[[Any], bool]) -> None:
    """Refuse raw bytes from a request in a SQL column that has an encoder (or gets one in
    the same request): a later read would decode them with it, and an encoder that
    unpickles would run what they hold."""
    from superduperdb.base.document import Encodable
    from superduperdb.base.exceptions import EncodingError
    from superduperdb.query.objects import Insert, Update

    if db.databackend.self_describing:  # raw bytes stay raw bytes there
        return
    if isinstance(q, Insert):
        documents = list(q.documents)
    elif isinstance(q, Update) and isinstance(q.update.get('$set'), dict):
        documents = [q.update['$set']]
    else:
        return
    raw = {k for doc in documents for k, v in doc.items() if isinstance(v, (bytes, bytearray, memoryview))}
    if not raw:
        return
    encoders = dict(db.encoders_of(q.table))
    for doc in documents:
        for k, v in doc.items():
            if isinstance(v, Encodable):
                encoders.setdefault(k, v.encoder)
    for column in sorted(raw):
        encoder = encoders.get(column)
        if encoder is None:
            continue
        if not safe(encoder):
            raise Forbidden(
                f'Column {q.table}.{column} holds values of encoder {encoder.identifier!r}, which may '
                'unpickle what it reads, so this server does not take raw bytes for it.'
            )
        raise EncodingError(
            f'Column {q.table}.{column} holds values of encoder {encoder.identifier!r}: send them as '
            f'{{"_content": {{"encoder": "{encoder.identifier}", "bytes": base64}}}}, not raw bytes.'
        )


def _one_thread_only(db: Any) -> bool:
    """Whether requests must take turns on ``db``: DuckDB, SQLite in memory, and mongomock
    (an in-process stand-in for MongoDB that is not thread-safe)."""
    backend = db.databackend
    if getattr(backend, 'single_writer', False):
        return True
    if type(getattr(backend, 'database', None)).__module__.startswith('mongomock'):
        return True
    engine = getattr(backend, 'engine', None)
    if engine is None or engine.dialect.name != 'sqlite':
        return False
    return engine.url.database in (None, '', ':memory:') or 'mode=memory' in str(engine.url)


def _no_connection(exc: BaseException) -> Overloaded | None:
    """An :class:`Overloaded` (503) for an error caused by waiting too long for a pooled
    database connection (SQLAlchemy's pool TimeoutError, raised as is or inside a
    BackendError): the request did nothing and may be sent again; it is not the server's bug."""
    pool_errors = sys.modules.get('sqlalchemy.exc')
    if pool_errors is None:
        return None
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return None
        if isinstance(seen, pool_errors.TimeoutError):
            return overloaded(f'no database connection came free in {CFG.pool_timeout:g} s (pool_timeout)')
        seen = seen.__cause__ or seen.__context__
    return None


def _install_error_handlers(app: FastAPI) -> None:
    def superduper_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, SuperDuperError)
        exc = _no_connection(exc) or exc
        status = wire.status_of(exc)
        headers = {'WWW-Authenticate': 'Bearer realm="superduperdb"'} if status == 401 else None
        if isinstance(exc, Overloaded):
            headers = {'Retry-After': str(max(1, round(exc.retry_after)))}
        return Response(wire.error_body(type(exc).__name__, str(exc)), status_code=status, headers=headers)

    def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        problems = '; '.join(
            f'{".".join(str(p) for p in e.get("loc", ()))}: {e.get("msg", "")}' for e in exc.errors()[:5]
        )
        return Response(wire.error_body('RequestValidationError', problems), status_code=400)

    def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        headers = getattr(exc, 'headers', None)
        return Response(wire.error_body('HTTPError', str(exc.detail)), exc.status_code, headers=headers)

    def internal_error(request: Request, exc: Exception) -> Response:
        shed = _no_connection(exc)
        if shed is not None:
            return superduper_error(request, shed)
        logger.error('error handling %s %s', request.method, request.url.path, exc_info=exc)
        message = 'The server failed on this request; its log has the details.'
        return Response(wire.error_body('ServerError', message), status_code=500)

    app.add_exception_handler(SuperDuperError, superduper_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, internal_error)


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``limit`` bytes (declared or streamed)."""

    def __init__(self, app: Callable[..., Any], limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope['type'] != 'http':
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get('headers') or []).get(b'content-length')
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        if declared is None:  # streamed (chunked): read it, up to the limit, before the app sees it
            received, seen = [], 0
            while True:
                message = await receive()
                received.append(message)
                seen += len(message.get('body', b''))
                if seen > self.limit:
                    await self._refuse(send)
                    return
                if message['type'] != 'http.request' or not message.get('more_body'):
                    break
            pending = iter(received)

            async def replay() -> Any:
                return next(pending, None) or await receive()

            await self.app(scope, replay, send)
            return
        await self.app(scope, receive, send)

    def _message(self) -> str:
        return (
            f'The request body is larger than this server accepts ({self.limit / 2**20:g} MiB, '
            'CFG.server.max_body_mb). Send fewer documents per request.'
        )

    async def _refuse(self, send: Any) -> None:
        body = json.dumps(wire.error_body('RequestTooLarge', self._message())).encode()
        headers = [(b'content-type', b'application/json'), (b'content-length', str(len(body)).encode())]
        await send({'type': 'http.response.start', 'status': 413, 'headers': headers})
        await send({'type': 'http.response.body', 'body': body})


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
