"""Errors of the server and the remote client, beside the tree in ``base/exceptions.py``::

SuperDuperError
├── Unauthorized(PermissionError)        no token, or the wrong one (401)
├── Forbidden(PermissionError)           refused by the server's settings (403)
├── RequestTooLarge(ValueError)          a request body over CFG.server.max_body_mb (413)
├── CursorNotFound(KeyError)             a find's cursor read to the end or expired (404)
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


class ServerError(SuperDuperError):
    """The server failed while handling the request; its log has the details."""
