"""References to data stored elsewhere: ``file://``, ``http(s)://``, ``s3://`` and any fsspec URL.

``pil_image(uri='https://...')`` stores a reference; a download job fetches the
bytes (:func:`fetch`) and stores them in its place. On SQL the column holds
the reference as :data:`MARKER` + the URI until then; in self-describing
documents (MongoDB, nested values) it is ``{'_content': {..., 'uri': ...}}``.

>>> check_uri('file:///tmp/cat.png')
'file:///tmp/cat.png'
>>> stored = to_stored('https://example.com/a.png')
>>> from_stored(stored)
'https://example.com/a.png'
"""

from __future__ import annotations

import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from superduperdb.base.exceptions import EncodingError

#: What a SQL column holds for a reference not downloaded yet (no real encoding starts so).
MARKER = b'\x00superduperdb-ref\x00'


def check_uri(uri: Any) -> str:
    if not isinstance(uri, str) or '://' not in uri or not uri.split('://', 1)[1]:
        raise EncodingError(
            f'uri= takes a URL such as "file:///data/cat.png", "https://host/cat.png" or '
            f'"s3://bucket/cat.png", got {uri!r}.'
        )
    return uri


def to_stored(uri: str) -> bytes:
    return MARKER + uri.encode()


def from_stored(data: Any) -> str | None:
    """The URI if ``data`` (a stored column value) is a reference, else None."""
    if isinstance(data, (bytes, memoryview)) and bytes(data[: len(MARKER)]) == MARKER:
        return bytes(data[len(MARKER) :]).decode()
    return None


class FetchError(Exception):
    """A URI could not be fetched; ``retryable`` says whether trying again may help."""

    def __init__(self, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


def fetch(uri: str, *, timeout: float, retries: int, backoff: float = 0.2) -> bytes:
    """The bytes at ``uri``, retrying transient failures with exponential backoff."""
    for attempt in range(retries + 1):
        try:
            return _fetch_once(uri, timeout)
        except FetchError as exc:
            if not exc.retryable or attempt == retries:
                raise
            time.sleep(backoff * 2**attempt)
    raise AssertionError('unreachable')


def _fetch_once(uri: str, timeout: float) -> bytes:
    scheme = uri.split('://', 1)[0].lower()
    if scheme == 'file':
        path = urllib.parse.unquote(urllib.parse.urlsplit(uri).path)
        try:
            with open(path, 'rb') as f:
                return f.read()
        except OSError as exc:
            raise FetchError(f'{uri}: {exc.strerror or exc}', retryable=False) from exc
    if scheme in ('http', 'https'):
        request = urllib.request.Request(uri, headers={'User-Agent': 'superduperdb'})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return bytes(response.read())
        except urllib.error.HTTPError as exc:
            exc.close()  # it holds the response's socket
            retryable = exc.code == 429 or exc.code >= 500
            raise FetchError(f'{uri}: HTTP {exc.code} {exc.reason}', retryable=retryable) from exc
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, 'reason', exc)
            raise FetchError(f'{uri}: {reason}', retryable=True) from exc
    from superduperdb.base._deps import require

    fsspec = require('fsspec', extra='dask', what=f'Downloading {scheme}:// references')
    try:
        with fsspec.open(uri, 'rb') as f:
            return bytes(f.read())
    except FileNotFoundError as exc:
        raise FetchError(f'{uri}: not found', retryable=False) from exc
    except ImportError as exc:  # the filesystem's own package (s3fs, gcsfs ...)
        raise FetchError(f'{uri}: {exc}', retryable=False) from exc
    except OSError as exc:
        raise FetchError(f'{uri}: {exc}', retryable=True) from exc
