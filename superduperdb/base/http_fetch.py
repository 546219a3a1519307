"""Fetching ``http(s)://`` references with every connection and redirect checked.

Each connection goes to an address that was resolved once and checked against the policy (no
loopback, private, link-local or reserved address unless allowed), redirects are followed only
to allowed schemes and through the same checks, and the body is read within the size and time
limits (docs/security.md). Used by :func:`superduperdb.base.references.fetch`.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from superduperdb.base.references import FetchError, FetchPolicy


def _refused_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def _connect(host: str, port: int, timeout: Any, policy: FetchPolicy) -> socket.socket:
    """A socket to ``host``, connected to an address that was checked (no second lookup)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FetchError(f'{host}: cannot resolve ({exc.strerror})', retryable=True) from exc
    for *_, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).split('%')[0])
        if not policy.allow_private_addresses and _refused_address(ip):
            raise FetchError(
                f'{host} is {ip}, a loopback, private, link-local or reserved address; refused '
                '(set downloads.allow_private_addresses to fetch from such hosts).',
                retryable=False,
            )
    error: OSError | None = None
    for family, kind, proto, _, sockaddr in infos:
        sock = socket.socket(family, kind, proto)
        sock.settimeout(timeout)
        try:
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
    raise error or OSError(f'{host}: no address')


def _guarded(base: type[http.client.HTTPConnection], policy: FetchPolicy) -> Any:
    def make(*args: Any, **kwargs: Any) -> http.client.HTTPConnection:
        conn = base(*args, **kwargs)
        conn._create_connection = lambda address, timeout, source=None: _connect(  # type: ignore[attr-defined]
            address[0], address[1], timeout, policy
        )
        return conn

    return make


class _HTTP(urllib.request.HTTPHandler):
    def __init__(self, policy: FetchPolicy) -> None:
        super().__init__()
        self.policy = policy

    def http_open(self, req: Any) -> Any:
        return self.do_open(_guarded(http.client.HTTPConnection, self.policy), req)


class _HTTPS(urllib.request.HTTPSHandler):
    def __init__(self, policy: FetchPolicy) -> None:
        super().__init__()
        self.policy = policy

    def https_open(self, req: Any) -> Any:
        return self.do_open(
            _guarded(http.client.HTTPSConnection, self.policy),
            req,
            context=self._context,  # type: ignore[attr-defined]
        )


class _Redirects(urllib.request.HTTPRedirectHandler):
    max_redirections = 5  # each hop connects through the checked handlers again

    def __init__(self, policy: FetchPolicy) -> None:
        super().__init__()
        self.policy = policy

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        scheme = urllib.parse.urlsplit(newurl).scheme.lower()
        if scheme not in ('http', 'https') or scheme not in self.policy.schemes:
            raise FetchError(
                f'{req.full_url}: redirected to {newurl}, a scheme not allowed.', retryable=False
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def fetch_http(uri: str, timeout: float, policy: FetchPolicy) -> bytes:
    """The body at an ``http(s)://`` ``uri`` under ``policy`` (a FetchError says why not)."""
    deadline = time.monotonic() + timeout
    opener = urllib.request.build_opener(
        urllib.request.ProxyHandler({}),  # connect directly: the address check must see the real host
        _HTTP(policy),
        _HTTPS(policy),
        _Redirects(policy),
    )
    request = urllib.request.Request(uri, headers={'User-Agent': 'superduperdb'})
    try:
        with opener.open(request, timeout=timeout) as response:
            declared = response.headers.get('Content-Length')
            if declared is not None and declared.isdigit() and int(declared) > policy.max_bytes:
                raise FetchError(
                    f'{uri}: {declared} bytes, over downloads.max_bytes ({policy.max_bytes}); refused.',
                    retryable=False,
                )
            chunks, size = [], 0
            while True:
                if time.monotonic() > deadline:
                    raise FetchError(
                        f'{uri}: took longer than downloads.timeout ({timeout:g} s).', retryable=True
                    )
                chunk = response.read(65536)
                if not chunk:
                    break
                size += len(chunk)
                if size > policy.max_bytes:
                    raise FetchError(
                        f'{uri}: larger than downloads.max_bytes ({policy.max_bytes} bytes); refused.',
                        retryable=False,
                    )
                chunks.append(chunk)
            return b''.join(chunks)
    except urllib.error.HTTPError as exc:
        exc.close()  # it holds the response's socket
        retryable = exc.code == 429 or exc.code >= 500
        raise FetchError(f'{uri}: HTTP {exc.code} {exc.reason}', retryable=retryable) from exc
    except (urllib.error.URLError, TimeoutError, ConnectionError, http.client.HTTPException) as exc:
        reason = getattr(exc, 'reason', exc)
        if isinstance(reason, FetchError):
            raise reason from exc
        raise FetchError(f'{uri}: {reason}', retryable=True) from exc
