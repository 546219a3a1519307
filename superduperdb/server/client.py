"""The remote client: the Datalayer API over HTTP, what ``superduper('http://host:3223')`` returns.

``execute``, ``add``, ``show``, ``load``, ``remove``, ``job``, ``jobs``, ``watch_job``,
``status`` and ``close`` work as on a local Datalayer; ``predict(identifier, values)`` runs a
stored model on the server, and ``model.predict(X=key, db=client, select=...)`` /
``model.fit(..., db=client, ...)`` run a model over the server's rows, from the server's copy
(a model never stored is uploaded first, where the server accepts uploads:
:meth:`Client.predict_over_query`, :meth:`Client.fit_over_query`). A ``find`` is read a page
per request as the cursor is iterated. Errors the server reports
are raised as the same :class:`~superduperdb.base.exceptions.SuperDuperError` class, with the
server's message.

A request the server sheds (503 :class:`~superduperdb.server.errors.Overloaded`: nothing was
done) is sent again after its ``Retry-After``, and one that never reached the server (connection
refused) after a short pause, up to ``retries`` times. A request whose answer was lost (the
connection dropped after it was sent, the server killed) is sent again only where that cannot
do it twice: reads, and inserts, each of which carries an ``Idempotency-Key`` (one per call, or
the one given to :meth:`Client.execute`), so the server stores it once and answers the retry
with the first answer.

The client trusts the server with data, not with code. Values come back decoded only with
encoders that read plain data (numpy ``array``, ``pil_image``, ``audio``, torch ``tensor``);
a value of an encoder that runs code when it decodes (``pickle``, an ``Encoder`` of your
functions), and a component's pickled artifacts (a model's weights, an encoder's functions),
are decoded here only for the components the user names in ``trust_code``: otherwise
:class:`~superduperdb.base.exceptions.CodeNotTrusted` says what was refused and how to trust
it. Trust a component only from a server you would let run code in this process.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import dataclasses
import json
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from superduperdb.base._deps import require
from superduperdb.base.config import CFG
from superduperdb.base.exceptions import (
    CodeNotTrusted,
    ConfigError,
    ConnectionFailed,
    EncodingError,
    QueryError,
    SuperDuperError,
)
from superduperdb.components.component import Component
from superduperdb.components.encoder import BaseEncoder
from superduperdb.datalayer.datalayer import WriteResult
from superduperdb.jobs.job import Job
from superduperdb.query import objects as query
from superduperdb.query.cursor import Cursor
from superduperdb.server import wire
from superduperdb.server.errors import Forbidden, Overloaded, ServerError

#: Seconds before sending again a request that did not reach the server, per further try.
_BACKOFF = (0.5, 1.0, 2.0, 4.0)
#: The longest ``Retry-After`` the client waits for by itself; longer, the error is raised.
_MAX_RETRY_AFTER = 30.0


def _unsent(exc: ConnectionFailed) -> bool:
    """Whether the request failed before it was sent (the connection was refused), so the
    server cannot have acted on it."""
    import httpx

    return isinstance(exc.__cause__, (httpx.ConnectError, httpx.ConnectTimeout))


def _retry_after(header: str | None) -> float:
    """Seconds from a ``Retry-After`` header (a number of seconds; 1 when absent or a date)."""
    try:
        return max(0.0, float(header)) if header is not None else 1.0
    except ValueError:
        return 1.0


@dataclass
class RemoteJob(Job):
    """A job on the server: ``refresh()`` and ``wait()`` ask the server."""

    client: Client | None = field(default=None, repr=False, compare=False)

    def refresh(self) -> RemoteJob:
        fresh = self._client().job(self.id)
        for f in dataclasses.fields(Job):
            if f.name != 'db':
                setattr(self, f.name, getattr(fresh, f.name))
        return self

    def _wait_for_executor(self, timeout: float | None) -> None:
        """The server's executor is not reachable from here: ``wait`` polls the server."""

    def _client(self) -> Client:
        if self.client is None:
            raise QueryError('This job is not bound to a client; get it with client.job(id).')
        return self.client


class Client:
    """A superduperdb server, used like a local Datalayer.

    ``token``: the server's token (default ``CFG.server.token``). ``timeout``: seconds per request.
    ``trust_code``: identifiers of the server's components whose code this process may run:
    their pickled artifacts are unpickled by :meth:`load`, and values of such an encoder that
    runs code when it decodes (``pickle``) are decoded. Nothing else the server sends is (see
    the module's docstring): ``Client(url, token, trust_code=['my-pickle', 'my-model'])``.
    ``retries``: how often a request is sent again after a 503 or a lost connection, where that
    is safe (see the module's docstring); 0: never.
    """

    #: tells ``Model.predict``/``fit`` to run over queries on the server (duck-typed: no import)
    is_remote: bool = True

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float = 300.0,
        trust_code: Iterable[str] = (),
        retries: int = 3,
    ) -> None:
        require('httpx', extra='server', what='The superduperdb client')
        import httpx

        names = None if isinstance(trust_code, str) else list(trust_code)  # a str is one name, not many
        if names is None or not all(isinstance(name, str) and name for name in names):
            raise ConfigError(
                'trust_code= takes a list of component identifiers, e.g. trust_code=["my-pickle"], '
                f'got {trust_code!r}.'
            )
        #: the components whose code this client may run (see ``trust_code``)
        self.trust_code = frozenset(names)
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ConfigError(f'retries= is how often a request is sent again: 0 or more, got {retries!r}.')
        self.retries = retries

        parts = urlsplit(url)
        if parts.scheme not in ('http', 'https') or not parts.hostname:
            raise QueryError(f'A server URL looks like http://127.0.0.1:3223, got {url!r}.')
        self.url = url.rstrip('/')
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == 'https' else 80)
        token = token if token is not None else CFG.server.token
        headers = {'Authorization': f'Bearer {token}'} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        self._loaded: dict[str, Component] = {}
        self._registered: dict[tuple[str, str], BaseEncoder] = {}

    def __repr__(self) -> str:
        return f'Client({self.url!r})'

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----- HTTP ---------------------------------------------------------------------
    def _call(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Any = None,
        headers: dict[str, str] | None = None,
        repeatable: bool | None = None,
    ) -> Any:
        """One request, sent again where that is safe (see the module's docstring).
        ``repeatable``: whether sending it twice does it once (default: GET requests)."""
        if params:
            params = {k: v for k, v in params.items() if v is not None}
        repeatable = method == 'GET' if repeatable is None else repeatable
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                return self._send(method, path, json_body=json_body, params=params, headers=headers)
            except Overloaded as exc:  # shed by the server: nothing was done
                wait = exc.retry_after if exc.retry_after is not None else 1.0
                if last or wait > _MAX_RETRY_AFTER:
                    raise
                time.sleep(wait)
            except ConnectionFailed as exc:
                # never sent (refused): safe to send again; sent and cut off: only if repeatable
                if last or not (repeatable or _unsent(exc)):
                    raise
                time.sleep(_BACKOFF[min(attempt, len(_BACKOFF) - 1)])
        raise AssertionError('unreachable')  # the last attempt returns or raises

    def _send(
        self, method: str, path: str, *, json_body: Any, params: Any, headers: dict[str, str] | None
    ) -> Any:
        import httpx

        try:
            response = self._http.request(method, path, json=json_body, params=params, headers=headers)
        except httpx.TransportError as exc:
            raise ConnectionFailed(
                f'Cannot reach the superduperdb server at {self.host}:{self.port} '
                f'({type(exc).__name__}: {exc}). Is `superduperdb serve` running there?',
                host=self.host,
                port=self.port,
            ) from exc
        try:
            body = response.json()
        except json.JSONDecodeError:
            body = None
        if response.status_code >= 400:
            refused = wire.error_from_json(response.status_code, body)
            if isinstance(refused, Overloaded):
                refused.retry_after = _retry_after(response.headers.get('retry-after'))
            raise refused
        if body is None:
            raise ServerError(f'The server answered {path} with something other than JSON.')
        return body

    def health(self) -> dict[str, Any]:
        """``{'status': 'ok', 'version': ...}`` when the server is up (needs no token)."""
        result: dict[str, Any] = self._call('GET', '/health')
        return result

    # ----- queries --------------------------------------------------------------------
    def execute(self, q: Any, *, idempotency_key: str | None = None) -> Any:
        """Run a query on the server: a Cursor for ``find``, a Document or None for ``find_one``,
        an int for ``count`` and a :class:`WriteResult` for writes.

        An insert carries ``idempotency_key`` (default: a new one per call), so it is stored once
        however often it is sent: this call sends it again after a lost connection, and a
        program that got :class:`ConnectionFailed` may call again with the same key to learn
        the first call's outcome (its ids), with nothing stored twice.
        """
        if isinstance(q, query.LikeFirst):
            q = q.find()
        if not isinstance(q, (query.Find, query.Count, query.Insert, query.Update, query.Delete)):
            raise QueryError(
                f'client.execute() takes a query such as Collection("name").find(), got {type(q).__name__} '
                '(SQLAlchemy statements run only with direct database access).'
            )
        if idempotency_key is not None and not isinstance(q, query.Insert):
            raise QueryError('idempotency_key= is taken with inserts only.')
        headers = None
        if isinstance(q, query.Insert):
            headers = {'Idempotency-Key': idempotency_key or uuid.uuid4().hex}
        data = wire.query_to_json(q, self._register)
        reads = not isinstance(q, (query.Update, query.Delete))  # finds, counts, keyed inserts
        body = self._call('POST', '/execute', json_body={'query': data}, headers=headers, repeatable=reads)
        if isinstance(q, query.FindOne):
            doc = body['document']
            return None if doc is None else wire.document_from_json(doc, self._encoder)
        if isinstance(q, query.Find):
            cursor = Cursor(self._pages(body))
            cursor.timings = dict(body.get('timings') or {})  # a search's, measured on the server
            return cursor
        if isinstance(q, query.Count):
            return body['count']
        return WriteResult(wire.from_json(body['ids']), [self._job(j) for j in body['jobs']])

    def _pages(self, body: dict[str, Any]) -> Iterator[list[Any]]:
        """A find's documents a page per request, decoded; the server's cursor is dropped there
        if the reader stops early (the generator is closed)."""
        cursor = body.get('cursor')
        try:
            while True:
                yield [wire.document_from_json(d, self._encoder) for d in body['documents']]
                if cursor is None:
                    return
                body = self._call('GET', f'/cursors/{cursor}')
                cursor = body.get('cursor')
        finally:
            if cursor is not None and not self._http.is_closed:
                with contextlib.suppress(SuperDuperError):
                    self._call('DELETE', f'/cursors/{cursor}')

    def _register(self, encoder: Any) -> BaseEncoder:
        """The server's version of ``encoder``, adding it there if new."""
        config = json.dumps(encoder.to_config()[0], sort_keys=True)
        key = (encoder.identifier, config)
        if key not in self._registered:
            self._registered[key] = self.add(copy.copy(encoder))
        return self._registered[key]

    def _encoder(self, identifier: str, version: int | None) -> BaseEncoder:
        """The encoder a value from the server names, if this client may decode with it: one
        that reads plain data, or one of ``trust_code`` (the server chose the bytes)."""
        loaded = self.load('encoder', identifier, version)  # pickled parts: only if trusted
        if not isinstance(loaded, BaseEncoder):
            raise EncodingError(
                f'The server named {identifier!r} as an encoder, but it is a {loaded.type_id}.'
            )
        if loaded.runs_code and identifier not in self.trust_code:
            cls = f'{type(loaded).__module__}:{type(loaded).__qualname__}'
            raise CodeNotTrusted(
                f'The server at {self.host}:{self.port} sent a value of encoder {identifier!r} ({cls}), '
                "and decoding it runs code of the server's choosing (unpickling): refused. If you trust "
                'that server to run code in this process, opt in for this encoder: '
                f'Client(url, token, trust_code=[{identifier!r}]).',
                identifier=identifier,
            )
        return loaded

    # ----- components -----------------------------------------------------------------
    def add(self, component: Any) -> Any:
        """Add ``component`` on the server (children without a version first); returns it, versioned.

        Components with pickled parts (models, functions) are accepted only by a server with
        ``CFG.server.allow_artifact_upload``; others get :class:`Forbidden`.
        """
        if not isinstance(component, Component):
            raise QueryError(
                f'add() takes a component (Encoder, Model, Watcher, ...), got {type(component).__name__}.'
            )
        for child in component.child_components():
            if child.version is None:
                self.add(child)
        config, artifacts = component.to_config()
        encoded = {
            name: base64.b64encode(_pickle(value)).decode('ascii') for name, value in artifacts.items()
        }
        body = self._call('POST', '/components', json_body={'config': config, 'artifacts': encoded})
        if component.version is not None and self._loaded.get(component.unique_id) is component:
            del self._loaded[component.unique_id]  # cached as the version it was: now another
        component.version = body['version']
        if hasattr(component, 'jobs_'):
            component.jobs_ = [self._job(j) for j in body['jobs']]
        self._loaded[component.unique_id] = component
        return component

    def show(self, type_id: str | None = None, identifier: str | None = None) -> Any:
        """As ``db.show``: ``{type_id: [identifiers]}``, identifiers, versions, or jobs."""
        if type_id == 'job':
            return self.jobs() if identifier is None else self.job(identifier)
        params = {'type_id': type_id, 'identifier': identifier}
        return self._call('GET', '/components', params=params)['result']

    def load(self, type_id: str, identifier: str, version: int | None = None) -> Component:
        """Rebuild a component here from the server's config and artifacts.

        Pickled artifacts (a model's weights, an Encoder's functions) are unpickled only for
        components named in ``trust_code``: unpickling runs code the server chose. Others
        raise :class:`CodeNotTrusted` saying how to opt in.
        """
        if version is not None and f'{type_id}/{identifier}/{version}' in self._loaded:
            return self._loaded[f'{type_id}/{identifier}/{version}']
        body = self._call('GET', f'/components/{type_id}/{identifier}', params={'version': version})
        uid = f'{type_id}/{identifier}/{body["version"]}'
        if uid not in self._loaded:
            artifacts = body['artifacts']

            def load_artifact(name: str) -> Any:
                if identifier not in self.trust_code:
                    raise self._untrusted(type_id, identifier, f'has a pickled artifact ({name!r})')
                if not isinstance(artifacts, dict) or not isinstance(artifacts.get(name), str):
                    raise ServerError(f'The server sent {uid} without its artifact {name!r}.')
                return _unpickle(base64.b64decode(artifacts[name]))

            self._loaded[uid] = Component.from_config(
                body['config'],
                load_artifact=load_artifact,
                load_component=self.load,
                version=body['version'],
            )
        return self._loaded[uid]

    def remove(
        self, type_id: str, identifier: str, version: int | None = None, *, force: bool = False
    ) -> None:
        """Remove a component version (all versions if None) on the server."""
        params = {'version': version, 'force': force}
        self._call('DELETE', f'/components/{type_id}/{identifier}', params=params)
        prefix = f'{type_id}/{identifier}/'
        self._loaded = {k: v for k, v in self._loaded.items() if not k.startswith(prefix)}
        self._registered.clear()

    def predict(self, identifier: str, values: Any, *, version: int | None = None) -> list[Any]:
        """Outputs of the stored model ``identifier`` on ``values``, computed on the server."""
        body = self._call(
            'POST',
            f'/models/{identifier}/predict',
            json_body={'values': wire.to_json(list(values), self._register), 'version': version},
        )
        outputs = wire.from_json(body['outputs'], self._encoder)
        from superduperdb.base.document import Encodable

        return [y.x if isinstance(y, Encodable) else y for y in outputs]

    def predict_over_query(
        self,
        model: Any,
        *,
        key: Any,
        select: Any,
        overwrite: bool = False,
        features: dict[str, str] | None = None,
        watch: bool = False,
        chunk_size: int | None = None,
    ) -> Any:
        """Run ``model`` over ``select`` on the server, outputs written there.

        ``model`` is a model loaded from the server (it runs from the server's copy of that
        version), a model never stored (uploaded first, as a local predict stores it first:
        see :meth:`_stored`), or the identifier of a model stored there (its latest version).
        Returns a :class:`~superduperdb.predict.over_query.PredictReport`; with ``watch=True``
        a Watcher is added there instead and its backfill job is returned (with partitions
        the ``predict_parts`` job that is done when all of them are). What
        ``model.predict(X=key, db=client, select=...)`` calls.
        """
        from superduperdb.predict.over_query import PredictReport

        select_json = self._find_to_json(select)
        identifier, version = self._stored(model)
        body = self._call(
            'POST',
            f'/models/{identifier}/predict_query',
            json_body={
                'key': _key_to_json(key),
                'select': select_json,
                'version': version,
                'overwrite': overwrite,
                'features': features or {},
                'watch': watch,
                'chunk_size': chunk_size,
            },
        )
        if watch:  # None: nothing to compute (a precomputed watcher)
            return self._job(body['job']) if body['job'] is not None else None
        report = wire.from_json(body['report'])
        key = report['key']
        report['key'] = tuple(key) if isinstance(key, list) else key
        return PredictReport(**report)

    def fit_over_query(
        self,
        model: Any,
        *,
        X: Any,
        y: Any = None,
        select: Any,
        validation_select: Any = None,
        features: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> Component:
        """Train ``model`` (as for :meth:`predict_over_query`) on ``select`` on the server.

        The server stores the trained model as a new version; it is loaded here (artifacts
        unpickled: the model must be in ``trust_code``, see :meth:`load`) and ``model`` (a Model)
        becomes that version, as a local fit trains it in place. ``kwargs`` are JSON options for
        the model's fit. What ``model.fit(X=..., y=..., db=client, select=...)`` calls.
        """
        select_json = self._find_to_json(select)
        validation = None if validation_select is None else self._find_to_json(validation_select)
        identifier, version = self._stored(model)
        if isinstance(model, Component) and identifier not in self.trust_code and model.artifact_names():
            # refused before the server trains: the trained version comes back pickled
            raise self._untrusted('model', identifier, 'comes back from a fit with pickled artifacts')
        body = self._call(
            'POST',
            f'/models/{identifier}/fit',
            json_body={
                'X': _key_to_json(X),
                'y': y,
                'select': select_json,
                'validation_select': validation,
                'version': version,
                'features': features or {},
                'kwargs': wire.to_json(kwargs),
            },
        )
        trained = self.load('model', body['identifier'], body['version'])
        if isinstance(model, str):
            return trained
        if self._loaded.get(f'model/{identifier}/{version}') is model:
            del self._loaded[f'model/{identifier}/{version}']  # it is about to be another version
        vars(model).update(vars(trained))
        self._loaded[trained.unique_id] = model
        return model

    def _stored(self, model: Any) -> tuple[str, int | None]:
        """``(identifier, version)`` of ``model`` on the server, uploading a model never stored."""
        if isinstance(model, str):
            return model, None
        if model.version is None:
            try:
                self.add(model)
            except Forbidden as exc:
                raise Forbidden(
                    f'Model {model.identifier!r} is not stored yet, and this server does not accept '
                    'uploaded models (they are pickled, and unpickling runs code). Add it on the '
                    "server from a process with direct database access and use the server's copy "
                    f'(client.load("model", {model.identifier!r})), or set '
                    'CFG.server.allow_artifact_upload on the server.'
                ) from exc
        return model.identifier, model.version

    def _find_to_json(self, select: Any) -> dict[str, Any]:
        if not isinstance(select, query.Find) or isinstance(select, query.FindOne):
            raise QueryError(
                'A model runs over a find query such as Collection("docs").find(), '
                f'got {type(select).__name__}.'
            )
        return wire.query_to_json(select, self._register)

    def _untrusted(self, type_id: str, identifier: str, what: str) -> CodeNotTrusted:
        return CodeNotTrusted(
            f'{type_id} {identifier!r} from the server at {self.host}:{self.port} {what}, and unpickling '
            "runs code of the server's choosing: refused. If you trust that server to run code in this "
            f'process, opt in for this component: Client(url, token, trust_code=[{identifier!r}]).',
            identifier=identifier,
        )

    # ----- jobs -----------------------------------------------------------------------
    def _job(self, data: dict[str, Any]) -> RemoteJob:
        names = {f.name for f in dataclasses.fields(Job)} - {'db'}
        return RemoteJob(**{k: v for k, v in data.items() if k in names}, client=self)

    def job(self, job_id: str) -> RemoteJob:
        """A job by id, as recorded now."""
        return self._job(self._call('GET', f'/jobs/{job_id}'))

    def jobs(
        self, status: str | None = None, *, limit: int | None = 100, component: str | None = None
    ) -> list[RemoteJob]:
        """Recent jobs, newest first (``component``: those whose component starts with it)."""
        body = self._call('GET', '/jobs', params={'status': status, 'limit': limit, 'component': component})
        return [self._job(j) for j in body['jobs']]

    def failures(self, watcher: str) -> list[dict[str, Any]]:
        """A watcher's failure ledger (see :func:`superduperdb.freshness.ledger.failures`)."""
        return list(self._call('GET', f'/watchers/{quote(watcher, safe="")}/failures')['failures'])

    def retry_failed(self, watcher: str) -> RemoteJob:
        """Run a watcher's model again over its failed rows, on the server; returns the job."""
        return self._job(self._call('POST', f'/watchers/{quote(watcher, safe="")}/retry')['job'])

    def cancel_job(self, job_id: str) -> RemoteJob:
        """Cancel a pending job where the server's executor can (Dask)."""
        return self._job(self._call('POST', f'/jobs/{job_id}/cancel'))

    def watch_job(self, job_id: str, *, out: Any = None, poll: float = 0.5) -> RemoteJob:
        """Print a job's log and progress as they grow, until it finishes; returns the job."""
        out = out or sys.stdout
        printed = 0
        while True:
            data = self._call('GET', f'/jobs/{job_id}', params={'log_offset': printed})
            if data['log']:
                out.write(data['log'] + '\n')
            printed = data['log_size']
            job = self._job({**data, 'log': ''})
            if job.finished:
                job.refresh()
                out.write(f'{job.id} {job.status} ({job.progress})\n')
                if job.error:
                    out.write(job.error + '\n')
                return job
            time.sleep(poll)

    def status(self) -> list[dict[str, Any]]:
        """How fresh each watcher's outputs are (see ``Datalayer.status``)."""
        result: list[dict[str, Any]] = self._call('GET', '/status')['watchers']
        return result

    def close(self) -> None:
        self._http.close()


def _key_to_json(key: Any) -> Any:
    return list(key) if isinstance(key, (list, tuple)) else key


def _pickle(value: Any) -> bytes:
    import cloudpickle

    return cloudpickle.dumps(value)  # type: ignore[no-any-return]


def _unpickle(data: bytes) -> Any:
    import pickle

    return pickle.loads(data)
