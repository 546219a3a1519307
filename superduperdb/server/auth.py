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

import hashlib
import hmac
import secrets
import time
from typing import Any, Literal

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


class Access:
    """Checks tokens and session cookies; ``token`` None: every request may do everything."""

    def __init__(self, token: str | None, read_token: str | None = None) -> None:
        if token and read_token and hmac.compare_digest(token.encode(), read_token.encode()):
            raise ConfigError(
                'server.read_token must differ from server.token: a read-only token that is also the '
                'full token would grant everything.'
            )
        self.token = token or None
        self.read_token = (read_token or None) if token else None

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
        return role if hmac.compare_digest(parts[3].encode(), expected.encode()) else None  # type: ignore[return-value]

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
