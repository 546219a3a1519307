"""Open ``find`` results on the server, read by clients a page at a time.

A ``find`` answers with its first page and, when more rows follow, a cursor id; the client
asks ``GET /cursors/{id}`` for each next page. A cursor holds the query's chunk generator and
one page read ahead (to know whether more follow): the SQL backend reads keyset pages, each
with its own short query, so an open cursor holds no database connection or transaction.
Cursors idle for ``ttl`` seconds are dropped, and at most ``max_open`` stay open (the least
recently used go first): a client that stops reading halfway leaks nothing for long.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from superduperdb.server.errors import CursorNotFound


class Cursors:
    """The open cursors of one server."""

    def __init__(self, *, ttl: float = 300.0, max_open: int = 64) -> None:
        self.ttl = ttl
        self.max_open = max_open
        self._open: OrderedDict[str, tuple[float, list[Any], Iterator[list[Any]]]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._open)

    def first(self, chunks: Iterator[list[Any]]) -> tuple[list[Any], str | None]:
        """The first page of ``chunks``, and a cursor id for the rest (None when there is none)."""
        page = next(chunks, [])
        return page, self._keep(chunks)

    def next(self, cursor_id: str) -> tuple[list[Any], str | None]:
        """The next page of cursor ``cursor_id``, and the id to read on with (None at the end)."""
        with self._lock:
            self._expire()
            entry = self._open.pop(cursor_id, None)
        if entry is None:
            raise CursorNotFound(
                f'No open cursor {cursor_id!r}: it was read to the end, or it was idle for more '
                f'than {self.ttl:g} s, or more than {self.max_open} were open. Run the query again.'
            )
        _, page, chunks = entry
        return page, self._keep(chunks, cursor_id)

    def close(self, cursor_id: str) -> bool:
        """Drop a cursor before its end; whether it was open."""
        with self._lock:
            return self._open.pop(cursor_id, None) is not None

    def _keep(self, chunks: Iterator[list[Any]], cursor_id: str | None = None) -> str | None:
        ahead = next(chunks, None)  # free at the end of a SQL find: a short page ends it
        while ahead is not None and not ahead:
            ahead = next(chunks, None)
        if ahead is None:
            return None
        cursor_id = cursor_id or secrets.token_urlsafe(12)
        with self._lock:
            self._open[cursor_id] = (time.monotonic(), ahead, chunks)
            while len(self._open) > self.max_open:
                self._open.popitem(last=False)
        return cursor_id

    def _expire(self) -> None:
        cutoff = time.monotonic() - self.ttl
        while self._open:
            key, (touched, _, _) = next(iter(self._open.items()))
            if touched >= cutoff:
                return
            del self._open[key]
