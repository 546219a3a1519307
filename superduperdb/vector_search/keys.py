"""The engine's ids and the rows' primary keys: an engine holds every key as text.

How to turn those texts back into the keys a backend stores (an integer, a string, on
MongoDB possibly an ``ObjectId``), for search results and stored neighbours.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any


def _same(key: Any) -> Any:
    return key


def _stored_forms(keys: Sequence[str]) -> list[Any]:
    """Every form a MongoDB ``_id`` shown as ``key`` may be stored in: the text itself, the
    ObjectId of 24 hex digits, the integer of a decimal. Documents an application inserted
    itself have ObjectId keys; the engine holds them as text.

    >>> _stored_forms(['7', 'a'])
    ['7', 7, 'a']
    """
    forms: list[Any] = []
    for key in keys:
        forms.append(key)
        if len(key) == 24 and _OBJECT_ID.fullmatch(key):
            from bson import ObjectId  # only on MongoDB, whose driver brings bson

            forms.append(ObjectId(key))
        elif _INTEGER.fullmatch(key) and -(2**63) <= int(key) < 2**63:
            forms.append(int(key))
    return forms


_OBJECT_ID = re.compile(r'[0-9a-f]{24}')
_INTEGER = re.compile(r'-?[0-9]{1,19}')


def _key_type(backend: Any, table: str, pk: str) -> Any:
    """How to turn the engine's string ids back into primary keys."""
    if backend.self_describing:
        return str
    key_type = backend.key_type(table)
    if key_type is not None:  # a lake knows it
        return key_type
    t = backend.table(table)
    try:
        python_type = t.c[pk].type.python_type
    except (AttributeError, NotImplementedError, KeyError):
        return str
    return python_type if python_type in (int, str) else str
