"""References to data stored elsewhere: ``file://``, ``http(s)://``, ``s3://`` and any fsspec URL.

``pil_image(uri='https://...')`` stores a reference; a download job fetches the
bytes (:func:`fetch`) and stores them in its place, under a :class:`FetchPolicy`
(allowed schemes, ``file://`` roots, no private addresses, size and time limits:
docs/security.md). On SQL the column holds
the reference as :data:`MARKER` + the URI until then; in self-describing
documents (MongoDB, nested values) it is ``{'_content': {..., 'uri': ...}}``.

>>> check_uri('file:///tmp/cat.png')
'file:///tmp/cat.png'
>>> stored = to_stored('https://example.com/a.png')
>>> from_stored(stored)
'https://example.com/a.png'
"""

from __future__ import annotations

import os
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
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


@dataclass(frozen=True)
class FetchPolicy:
    """What a download may fetch (docs/security.md): schemes, ``file://`` roots (None: any
    path), whether ``http(s)://`` may reach private addresses, and the largest body."""

    schemes: frozenset[str] = frozenset({'file', 'http', 'https', 's3', 'gs'})
    file_roots: tuple[str, ...] | None = None
    allow_private_addresses: bool = False
    max_bytes: int = 100 * 1024 * 1024

    @classmethod
    def from_config(cls, *, server: bool = False) -> FetchPolicy:
        """The policy of ``CFG.downloads``; ``server``: ``file://`` roots from ``CFG.server``."""
        from superduperdb.base.config import CFG

        settings = CFG.downloads
        roots = CFG.server.file_roots if server else settings.file_roots
        return cls(
            schemes=frozenset(s.lower() for s in settings.schemes),
            file_roots=None if roots is None else tuple(roots),
            allow_private_addresses=settings.allow_private_addresses,
            max_bytes=settings.max_bytes,
        )


def fetch(
    uri: str,
    *,
    timeout: float,
    retries: int,
    backoff: float = 0.2,
    policy: FetchPolicy | None = None,
) -> bytes:
    """The bytes at ``uri``, retrying transient failures with exponential backoff.

    ``policy`` (default: from ``CFG.downloads``) decides what may be fetched; a refusal is a
    :class:`FetchError` that retrying cannot help. ``timeout`` bounds each attempt in all.
    """
    policy = policy if policy is not None else FetchPolicy.from_config()
    for attempt in range(retries + 1):
        try:
            return _fetch_once(uri, timeout, policy)
        except FetchError as exc:
            if not exc.retryable or attempt == retries:
                raise
            time.sleep(backoff * 2**attempt)
    raise AssertionError('unreachable')


def _fetch_once(uri: str, timeout: float, policy: FetchPolicy) -> bytes:
    scheme = uri.split('://', 1)[0].lower()
    if scheme not in policy.schemes:
        raise FetchError(
            f'{uri}: the {scheme!r} scheme is not allowed (downloads.schemes: '
            f'{", ".join(sorted(policy.schemes))}).',
            retryable=False,
        )
    if scheme == 'file':
        return _read_file(uri, policy)
    if scheme in ('http', 'https'):
        from superduperdb.base.http_fetch import fetch_http  # http.client, ssl: only when used

        return fetch_http(uri, timeout, policy)
    from superduperdb.base._deps import require

    fsspec = require('fsspec', extra='s3', what=f'Downloading {scheme}:// references')
    try:
        with fsspec.open(uri, 'rb') as f:
            data = bytes(f.read(policy.max_bytes + 1))
    except FileNotFoundError as exc:
        raise FetchError(f'{uri}: not found', retryable=False) from exc
    except ImportError as exc:  # the filesystem's own package (s3fs, gcsfs ...)
        hint = " Install it with: pip install 'superduperdb[s3]'" if scheme in ('s3', 's3a') else ''
        raise FetchError(f'{uri}: {exc}.{hint}', retryable=False) from exc
    except OSError as exc:
        raise FetchError(f'{uri}: {exc}', retryable=True) from exc
    return _within(uri, data, policy)


def _within(uri: str, data: bytes, policy: FetchPolicy) -> bytes:
    if len(data) > policy.max_bytes:
        raise FetchError(
            f'{uri}: larger than downloads.max_bytes ({policy.max_bytes} bytes); refused.', retryable=False
        )
    return data


def _read_file(uri: str, policy: FetchPolicy) -> bytes:
    parts = urllib.parse.urlsplit(uri)
    if parts.netloc not in ('', 'localhost'):
        raise FetchError(
            f'{uri}: file:// names a path on this machine, not on {parts.netloc!r}.', retryable=False
        )
    path = os.path.realpath(urllib.parse.unquote(parts.path))  # links followed: where it really is
    if policy.file_roots is not None and not any(
        Path(path).is_relative_to(os.path.realpath(root)) for root in policy.file_roots
    ):
        where = ', '.join(policy.file_roots) or 'none configured'
        raise FetchError(
            f'{uri}: not under an allowed file root ({where}); set downloads.file_roots '
            '(server.file_roots for a server) to read files.',
            retryable=False,
        )
    try:
        with open(path, 'rb') as f:
            return _within(uri, f.read(policy.max_bytes + 1), policy)
    except OSError as exc:
        raise FetchError(f'{uri}: {exc.strerror or exc}', retryable=False) from exc
