"""Errors of the server and the remote client, beside the tree in ``base/exceptions.py``::

SuperDuperError
├── Unauthorized(PermissionError)        no token, or the wrong one (401)
├── Forbidden(PermissionError)           refused by the server's settings (403)
├── RequestTooLarge(ValueError)          a request body over CFG.server.max_body_mb (413)
├── CursorNotFound(KeyError)             a find's cursor read to the end or expired (404)
├── Overloaded                           too busy now: retry after ``retry_after`` seconds (503)
├── IdempotencyKeyReused(ValueError)     an Idempotency-Key sent before with another request (422)
├── IdempotencyKeyInUse                  the first request with this key has not finished (409)
└── ServerError                          the server failed (500), or answered something unreadable
"""

from __future__ import annotations

from superduperdb.base.exceptions import SuperDuperError


class Unauthorized(SuperDuperError, PermissionError):
    """The request carried no token, or not the server's token."""


class Forbidden(SuperDuperError, PermissionError):
    """The server's settings refuse this request (for example uploading pickled artifacts)."""


class RequestTooLarge(SuperDuperError, ValueError):
    """The request body is larger than the server accepts."""


class CursorNotFound(SuperDuperError, KeyError):
    """No open cursor by that id: read to the end, idle too long, or never issued."""

    def __str__(self) -> str:  # not KeyError's quoted repr
        return str(self.args[0]) if self.args else ''


class Overloaded(SuperDuperError):
    """The server is handling as many requests as it can (``CFG.server.max_concurrency``) and
    this one waited its turn ``CFG.server.queue_timeout`` seconds, or a database connection
    could not be had in time. Nothing was done: send it again after ``retry_after`` seconds
    (the ``Retry-After`` header)."""

    def __init__(self, message: str, *, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class IdempotencyKeyReused(SuperDuperError, ValueError):
    """An ``Idempotency-Key`` sent before with a different request: a key names one request."""


class IdempotencyKeyInUse(SuperDuperError):
    """The first request with this ``Idempotency-Key`` has not finished: it is running
    elsewhere, or was cut off where whether its rows were stored cannot be told."""


class ServerError(SuperDuperError):
    """The server failed while handling the request; its log has the details."""
