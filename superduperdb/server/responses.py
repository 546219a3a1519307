"""How the server answers: JSON bodies, errors as ``{'error': {'type', 'message'}}`` with a
fitting status (never a traceback), and a 413 for a body that is too large.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from superduperdb.base.config import CFG
from superduperdb.base.exceptions import SuperDuperError
from superduperdb.server import wire
from superduperdb.server.admission import overloaded
from superduperdb.server.errors import Overloaded

logger = logging.getLogger(__name__)


class Response(JSONResponse):
    """JSON that keeps NaN and infinities (Python's json reads them back)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, separators=(',', ':')).encode('utf-8')


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


def install_error_handlers(app: FastAPI) -> None:
    """Answer superduperdb's errors, invalid requests, HTTP errors and anything else (a 500,
    logged) in the server's JSON form."""

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
