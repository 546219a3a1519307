"""``_fold``: every row is in ``'train'`` or ``'valid'``, without a column for it.

A row's fold is derived from its key, so it is the same in every process and on every read,
and nothing is written to the user's tables: the first 8 hex digits of the MD5 of the key's
text (``str(key)``; a composite key's parts joined by ``|``) compared with
``CFG.fold.valid_fraction`` of ``ffffffff``. Hex strings of one length order as their numbers,
so databases compare them as text: ``md5(CAST(key AS TEXT))`` on PostgreSQL, MySQL/MariaDB and
DuckDB, a registered function on SQLite; MongoDB reads the key and decides here. A table or
document with its own ``_fold`` field keeps it.

>>> from superduperdb import CFG
>>> with CFG.override(**{'fold.valid_fraction': 0.5}):
...     sorted({fold_of(i) for i in range(20)})
['train', 'valid']
>>> fold_of(7) == fold_of(7)
True
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from superduperdb.base.config import CFG

#: The field every row has in filters (``coll.find({'_fold': 'train'})``).
FOLD = '_fold'
#: The two folds, by name.
TRAIN, VALID = 'train', 'valid'
#: Hex digits of the hash compared: 32 bits, fine enough for any fraction.
DIGITS = 8
#: Joins the parts of a composite key before hashing (as the SQL expression does).
SEPARATOR = '|'


def key_text(key: Any) -> str:
    """The text of a key, as ``CAST(key AS TEXT)`` gives it (a tuple: its parts joined)."""
    if isinstance(key, (tuple, list)):
        return SEPARATOR.join(str(part) for part in key)
    return str(key)


def md5_hex(text: str) -> str:
    """MD5 of ``text`` (UTF-8) as lowercase hex, as SQL's ``md5()`` gives it (a spread, not security)."""
    return hashlib.md5(text.encode('utf-8'), usedforsecurity=False).hexdigest()


def key_digest(text: str) -> str:
    """The first :data:`DIGITS` hex digits of the MD5 of ``text``."""
    return md5_hex(text)[:DIGITS]


def threshold() -> str:
    """The digest below which a row is ``'valid'``, as hex text of :data:`DIGITS` digits
    (``'g'`` sorts above every digest: the fraction 1, every row valid)."""
    fraction = CFG.fold.valid_fraction
    if fraction >= 1:
        return 'g'
    return format(int(fraction * 16**DIGITS), f'0{DIGITS}x')


def fold_of(key: Any) -> str:
    """``'valid'`` or ``'train'``: the fold of the row with ``key``."""
    return VALID if key_digest(key_text(key)) < threshold() else TRAIN


def fold_of_parts(parts: Sequence[Any]) -> str:
    """:func:`fold_of` for a key given as its columns' values (one for a plain key)."""
    return fold_of(parts[0] if len(parts) == 1 else tuple(parts))
