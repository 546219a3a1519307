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

Masking errs on the side of hiding: a URI whose path holds both ``:`` and ``@``
(``file:///a:b@c``) loses that part of its path to the mask; a secret is never shown in part.

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

    The user info ends at the *last* ``@`` before the query (``u:p@ss/w@host`` hides
    ``p@ss/w``), so a password holding ``@`` or ``/`` is hidden whole, where a URL parser
    would end it early and show the rest as the host or the path. A password holding ``?`` or
    ``#`` ends there for a parser too: when what precedes the first ``/``, ``?`` or ``#`` is
    ``user:something`` that is no port, the user info runs to the first ``@``.
    """
    scheme, _, rest = uri.partition('://')
    query = min((i for i in (rest.find('?'), rest.find('#')) if i != -1), default=len(rest))
    at = rest.rfind('@', 0, query)
    if at == -1:
        end = min((i for i in (rest.find('/'), query) if i != -1), default=len(rest))
        _user, colon, after = rest[:end].partition(':')
        if not colon or after.isdigit():
            return uri  # no user info, or host:port
        at = rest.find('@')
        if at == -1:
            return uri
    user, colon, password = rest[:at].partition(':')
    if not colon or not password:
        return uri
    return f'{scheme}://{user}:{MASK}{rest[at:]}'
