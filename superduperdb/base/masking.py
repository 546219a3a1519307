"""Secrets in text shown to people: one function, :func:`mask_secrets`, for every place a
URI or a message that may hold one is shown (``superduperdb config``, ``repr(CFG)``,
``superduperdb info``, the server's ``/overview``, error messages, logs).

A secret is shown as ``***`` in each form it travels in:

- the password of a URI's user info: ``postgresql://user:***@host/db``, also when the
  password holds characters a URL parser splits on (``@``, ``/``, ``?``, ``#``): a URI that
  does not parse cleanly is masked up to where its host must start, never half;
- a parameter whose name says it is a secret, in a query string or a ``key=value`` text
  (``?password=``, ``?pwd=``, ``?token=``, ``aws_secret_access_key=``, an Azure SAS ``sig=``,
  ``?api_key=``, ``sslpassword=``): see :func:`secret_name`.

Masking errs on the side of hiding: a URI whose path holds ``@`` after a port may lose a
little of its path to the mask; a secret is never shown in part.

>>> mask_secrets('postgresql://u:p@ss@host/db')
'postgresql://u:***@host/db'
>>> mask_secrets("can't open 's3://AKIA:wJal/rX+y@bucket/p?region=eu&aws_secret_access_key=zz'")
"can't open 's3://AKIA:***@bucket/p?region=eu&aws_secret_access_key=***'"
>>> mask_secrets('mysql://root@localhost/test?charset=utf8mb4&password=hunter2')
'mysql://root@localhost/test?charset=utf8mb4&password=***'
"""

from __future__ import annotations

import re

MASK = '***'
#: a URI inside text: a scheme, ``://``, then everything up to a space or a quote
_URI = re.compile(r"""(?<![A-Za-z0-9+.-])[A-Za-z][A-Za-z0-9+.-]*://[^\s'"<>`]*""")
#: ``name=value`` in a query string or in text (a libpq DSN, a log line)
_PAIR = re.compile(r"""(?<![\w.-])([\w.-]+)=([^&#\s'"<>]*)""")
#: words that make a parameter name a secret wherever they occur in it
_SECRET_WORDS = ('password', 'passwd', 'secret', 'token', 'credential', 'apikey', 'api_key', 'access_key')
#: endings that make a parameter name a secret (``pass``, ``pwd``, ``key``, Azure SAS ``sig``)
_SECRET_ENDINGS = ('pass', 'pwd', 'key', 'sig', 'signature', 'sas')


def secret_name(name: str) -> bool:
    """Whether a parameter called ``name`` holds a secret (``password``, ``X-Amz-Signature``,
    ``aws_secret_access_key``, ``sslkey``, ``sig``): compared in lower case, ``-`` as ``_``.

    >>> [secret_name(n) for n in ('pwd', 'X-Amz-Credential', 'sslmode', 'authSource', 'sig')]
    [True, True, False, False, True]
    """
    lowered = name.lower().replace('-', '_')
    return any(w in lowered for w in _SECRET_WORDS) or lowered.endswith(_SECRET_ENDINGS)


def mask_secrets(text: str) -> str:
    """``text`` with every secret in it (a URI's password, a secret parameter's value) as ``***``."""
    if '=' not in text and '://' not in text:
        return text  # the common case, at no cost
    text = _URI.sub(lambda m: _mask_user_info(m.group(0)), text)
    return _PAIR.sub(_mask_pair, text)


def _mask_pair(match: re.Match[str]) -> str:
    name, value = match.group(1), match.group(2)
    return f'{name}={MASK}' if value and secret_name(name) else match.group(0)


def _mask_user_info(uri: str) -> str:
    """``uri`` with the password of its user info masked.

    The host starts after the *last* ``@`` of the authority (as the URL standard reads it),
    so ``u:p@ss@host`` hides ``p@ss``. A password holding ``/``, ``?`` or ``#`` ends the
    authority early for a parser (``s3://KEY:ab/cd@bucket``): when what comes before the first
    ``/`` is ``user:something`` that is no port, or a port followed by an ``@`` in the path,
    everything up to that ``@`` is the password.
    """
    scheme, _, rest = uri.partition('://')
    end = len(rest)
    for stop in '/?#':
        found = rest.find(stop)
        if found != -1:
            end = min(end, found)
    authority = rest[:end]
    if '@' in authority:
        at = authority.rfind('@')
    else:
        user, colon, after = authority.partition(':')
        if not colon:
            return uri
        at = rest.find('@', end)
        query = min((i for i in (rest.find('?'), rest.find('#')) if i != -1), default=len(rest))
        if at == -1 or (after.isdigit() and at > query):
            return uri  # host:port, and no '@' before the query: no user info
    user, colon, password = rest[:at].partition(':')
    if not colon or not password:
        return uri
    return f'{scheme}://{user}:{MASK}{rest[at:]}'
