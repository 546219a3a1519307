"""Who is asking: the server's tokens, their roles, and the dashboard's session cookie.

Two tokens, two roles:

- ``CFG.server.token`` may do everything the API offers (role ``write``);
- ``CFG.server.read_token`` (optional) may only read (role ``read``): finds, counts,
  ``like`` searches, components, jobs, status and the dashboard's pages. Writes, retries and
  cancels get 403 ``Forbidden``.

A client sends ``Authorization: Bearer <token>``. The dashboard's login page takes a token
once and sets a session cookie instead (``HttpOnly``, ``SameSite=Strict``, ``Path=/``): it
holds the role, when it was issued and a random nonce, signed with that role's token (HMAC
SHA-256), never the token itself. Changing a token ends the sessions made with it; a session
lasts :data:`SESSION_SECONDS`. A request authenticated by the cookie that is not a plain read
(``GET``/``HEAD``) must also carry ``X-CSRF-Token``: a value derived from the session that
the pages put in a ``<meta>`` tag, which another site can neither read nor send.

Logging out ends a session on the server, not only in the browser: its nonce is recorded in
superduperdb's own table ``_superduper_revoked_sessions`` (in the metadata store, so every
server process on the database refuses the cookie at once) until the cookie would have
expired anyway. The login and logout forms are refused (403) when the browser says they were
posted from another site (:func:`same_origin`): no one can log a visitor in to their own
session, or out of theirs.

>>> access = Access('s3cret', 'look')
>>> role, value = access.login('look')
>>> role, access.session_role(value), access.session_role(value + 'x')
('read', 'read', None)
>>> access.login('nope')
Traceback (most recent call last):
...
superduperdb.server.errors.Unauthorized: Wrong token for this server.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
import threading
import time
from typing import Any, Literal
from urllib.parse import urlsplit

from superduperdb.base.exceptions import ConfigError
from superduperdb.server.errors import Forbidden, Unauthorized

Role = Literal['read', 'write']

#: the session cookie's name
COOKIE = 'superduperdb_session'
#: the header a page sends with a state-changing request (see the module docstring)
CSRF_HEADER = 'X-CSRF-Token'
#: how long a dashboard session lasts (seconds)
SESSION_SECONDS = 12 * 3600
_SAFE_METHODS = frozenset({'GET', 'HEAD', 'OPTIONS'})


class RevokedSessions:
    """Sessions ended by a logout, kept in the metadata store until they would have expired.

    A table of superduperdb's own (``_superduper*``: no token holder can read or change it
    through the API), so a logout on one server process holds on every process that opens
    the same database. It holds a digest of each session's nonce (never the cookie) and when
    the cookie expires; expired rows go at the next logout. ``lock``: taken around each read
    and write, for databases that requests must use one at a time (the server's own lock).

    >>> from superduperdb import superduper
    >>> revoked = RevokedSessions(superduper('sqlite:///:memory:').metadata.backend)
    >>> revoked.revoke('abc', expires=time.time() + 60)
    >>> revoked.revoked('abc'), revoked.revoked('abd')
    (True, False)
    """

    TABLE = '_superduper_revoked_sessions'

    def __init__(self, backend: Any, *, lock: Any = None) -> None:
        self.backend = backend
        self._lock = lock if lock is not None else contextlib.nullcontext()
        # this process's own logouts, answered without a query
        self._here: dict[str, float] = {}
        self._here_lock = threading.Lock()
        with self._lock:
            backend.create_table(self.TABLE, {'_id': 'str', 'expires': 'float'})

    @staticmethod
    def _key(nonce: str) -> str:
        return hashlib.sha256(f'superduperdb-session:{nonce}'.encode()).hexdigest()

    def revoke(self, nonce: str, *, expires: float) -> None:
        """End the session of ``nonce`` (a cookie that expires at ``expires``) everywhere."""
        key, now = self._key(nonce), time.time()
        with self._here_lock:
            self._here = {k: t for k, t in self._here.items() if t > now}
            self._here[key] = expires
        with self._lock:
            self.backend.delete(self.TABLE, {'expires': {'$lt': now}}, many=True)
            try:
                self.backend.insert(self.TABLE, [{'_id': key, 'expires': expires}], new_columns=False)
            except Exception:
                if not self.backend.count(self.TABLE, {'_id': key}):
                    raise  # not a second logout of the same session: the logout failed, say so

    def revoked(self, nonce: str) -> bool:
        """Whether the session of ``nonce`` was ended by a logout (in any process)."""
        key = self._key(nonce)
        if key in self._here:
            return True
        with self._lock:
            return self.backend.count(self.TABLE, {'_id': key}) > 0


def same_origin(headers: Any) -> bool:
    """Whether a browser says the request comes from a page of this server (for the login
    and logout forms, which carry no session yet or may not be trusted to).

    As Go's ``http.CrossOriginProtection`` decides: ``Sec-Fetch-Site`` (sent by every current
    browser) must be ``same-origin`` or ``none`` (typed by the user); without it, ``Origin``
    (or else ``Referer``) must name this server's host, as the ``Host`` header does. A request
    with none of them does not come from a browser page, so no other site can have sent it.

    >>> same_origin({'sec-fetch-site': 'cross-site'}), same_origin({'origin': 'null', 'host': 'h'})
    (False, False)
    >>> same_origin({'origin': 'http://127.0.0.1:3223', 'host': '127.0.0.1:3223'}), same_origin({})
    (True, True)
    """
    site = headers.get('sec-fetch-site')
    if site is not None:
        return site.lower() in ('same-origin', 'none')
    claimed = headers.get('origin') or headers.get('referer')
    if claimed is None:
        return True
    host = _host(headers.get('host') or '')
    try:
        parts = urlsplit(claimed)
    except ValueError:
        return False
    return bool(host) and parts.scheme in ('http', 'https') and _host(parts.netloc, parts.scheme) == host


def _host(netloc: str, scheme: str = '') -> str:
    """``host[:port]`` in lower case, without the port its scheme implies (``:80``, ``:443``)."""
    netloc = netloc.lower()
    for default, port in (('http', ':80'), ('https', ':443')):
        if netloc.endswith(port) and scheme in (default, ''):
            return netloc[: -len(port)]
    return netloc


class Access:
    """Checks tokens and session cookies; ``token`` None: every request may do everything.

    ``revoked``: where logouts are recorded (:class:`RevokedSessions`); None: in this
    process only (a session logged out here still works on another server process).
    """

    def __init__(
        self, token: str | None, read_token: str | None = None, *, revoked: RevokedSessions | None = None
    ) -> None:
        if token and read_token and hmac.compare_digest(token.encode(), read_token.encode()):
            raise ConfigError(
                'server.read_token must differ from server.token: a read-only token that is also the '
                'full token would grant everything.'
            )
        self.token = token or None
        self.read_token = (read_token or None) if token else None
        self.revoked = revoked
        self._revoked_here: set[str] = set()  # without a store: this process's logouts

    @property
    def open(self) -> bool:
        """Whether the server runs without a token (``--insecure``)."""
        return self.token is None

    def _secret(self, role: str) -> str | None:
        return self.token if role == 'write' else self.read_token if role == 'read' else None

    def role_of_token(self, given: str) -> Role:
        """The role of a token; :class:`Unauthorized` when it is neither of the server's."""
        for role in ('write', 'read'):
            secret = self._secret(role)
            if secret and hmac.compare_digest(given.encode(), secret.encode()):
                return role  # type: ignore[return-value]
        raise Unauthorized('Wrong token for this server.')

    # ----- sessions (the dashboard) ------------------------------------------------
    def login(self, given: str) -> tuple[Role, str]:
        """The role of ``given`` and a new session cookie value for it."""
        role = 'write' if self.open else self.role_of_token(given)
        payload = f'{role}.{int(time.time())}.{secrets.token_urlsafe(16)}'
        return role, f'{payload}.{self._sign(role, payload)}'

    def session_role(self, value: str | None) -> Role | None:
        """The role of a session cookie value; None if it is missing, forged, stale or its
        token has changed."""
        if not value or len(value) > 200:
            return None
        parts = value.split('.')
        if len(parts) != 4 or parts[0] not in ('read', 'write') or not parts[1].isdigit():
            return None
        role, issued = parts[0], int(parts[1])
        if not 0 <= time.time() - issued <= SESSION_SECONDS:
            return None
        if self._secret(role) is None and not self.open:
            return None
        expected = self._sign(role, '.'.join(parts[:3]))
        if not hmac.compare_digest(parts[3].encode(), expected.encode()):
            return None
        if self._is_revoked(parts[2]):  # logged out: checked after the MAC, so forgeries cost no query
            return None
        return role  # type: ignore[return-value]

    def logout(self, value: str | None) -> bool:
        """End the session of the cookie ``value`` on the server (every process, with a
        ``revoked`` store); False when it was no live session."""
        if self.session_role(value) is None:
            return False  # nothing to end; forged values are not recorded
        assert value is not None
        _role, issued, nonce, _mac = value.split('.')
        if self.revoked is None:
            self._revoked_here.add(nonce)
        else:
            self.revoked.revoke(nonce, expires=int(issued) + SESSION_SECONDS)
        return True

    def _is_revoked(self, nonce: str) -> bool:
        if nonce in self._revoked_here:
            return True
        return self.revoked is not None and self.revoked.revoked(nonce)

    def csrf_token(self, session: str) -> str:
        """The value a page must send in ``X-CSRF-Token`` with the session ``session``."""
        return self._sign('csrf', session)

    def _sign(self, role: str, payload: str) -> str:
        key = (self._secret(role) or self.token or '') if role != 'csrf' else (self.token or '')
        key += '\x00superduperdb-dashboard'  # never the same MAC as any other use of the token
        return hmac.new(key.encode(), f'{role}:{payload}'.encode(), hashlib.sha256).hexdigest()

    # ----- requests ----------------------------------------------------------------
    def role_of_request(
        self, method: str, authorization: str | None, cookies: dict[str, str], headers: Any
    ) -> Role:
        """The role a request acts with, from its bearer token or its session cookie.

        Raises :class:`Unauthorized` without either (or with a wrong one), and
        :class:`Forbidden` for a state-changing request authenticated by the cookie alone
        without the right ``X-CSRF-Token``.
        """
        if authorization is not None:
            scheme, _, given = authorization.partition(' ')
            if scheme.lower() != 'bearer' or not given:
                raise Unauthorized(
                    'This server needs a token: send the header "Authorization: Bearer <token>".'
                )
            return 'write' if self.open else self.role_of_token(given.strip())
        if self.open:
            return 'write'
        session = cookies.get(COOKIE)
        role = self.session_role(session)
        if role is None:
            raise Unauthorized(
                'This server needs a token: send the header "Authorization: Bearer <token>" '
                '(or log in to the dashboard at /ui/login).'
            )
        if method.upper() not in _SAFE_METHODS:
            sent = headers.get(CSRF_HEADER) or ''
            assert session is not None
            if not hmac.compare_digest(sent.encode(), self.csrf_token(session).encode()):
                raise Forbidden(
                    f'A request authenticated by the dashboard cookie must carry the {CSRF_HEADER} '
                    'header of its page (a guard against requests forged by other sites).'
                )
        return role


def require_write(role: str, what: str) -> None:
    """Refuse ``what`` to a read-only token."""
    if role != 'write':
        raise Forbidden(f"This token may only read; {what} needs the server's token (server.token).")
