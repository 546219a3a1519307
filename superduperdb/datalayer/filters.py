"""Mongo-style filters and update documents: validation shared by every backend.

Validating here, before any backend sees a filter, gives every backend the
same errors for the same mistakes.

>>> validate_filter({'a': {'$gt': 1}, '$or': [{'b': 'x'}, {'c.d': {'$exists': True}}]})
>>> validate_filter({'a': {'$regex': 'x'}})
Traceback (most recent call last):
...
superduperdb.base.exceptions.QueryError: Unknown filter operator '$regex' in {'$regex': 'x'} ...
"""

from __future__ import annotations

import re
from typing import Any

from superduperdb.base.exceptions import InvalidName, QueryError

#: Operators allowed on a field.
FIELD_OPERATORS = frozenset({'$eq', '$ne', '$gt', '$gte', '$lt', '$lte', '$in', '$nin', '$exists', '$not'})
#: Operators that combine whole filters.
LOGICAL_OPERATORS = frozenset({'$and', '$or', '$nor'})
#: Update operators.
UPDATE_OPERATORS = frozenset({'$set', '$unset', '$inc'})

_FIELD_PART = re.compile(r'^[A-Za-z_][A-Za-z0-9_\-]*$|^[0-9]+$')
_TABLE_NAME = re.compile(r'^([A-Za-z_][A-Za-z0-9_\-]{0,62}\.)?[A-Za-z_][A-Za-z0-9_\-]{0,62}$')


def check_table_name(name: Any) -> str:
    """A table/collection name: letters, digits, ``_`` and ``-``, at most 63 characters, after
    an optional schema of the same kind (``shop.items``: table ``items`` in PostgreSQL schema ``shop``)."""
    if not isinstance(name, str) or not _TABLE_NAME.match(name):
        raise InvalidName(
            f'Invalid table/collection name {name!r}: use 1-63 letters, digits, "_" or "-", '
            'starting with a letter or "_" (optionally after a schema and a dot: "shop.items").',
            name=str(name),
        )
    return name


def check_field_path(path: Any) -> str:
    """A field name or dotted path (``a.b.0``): no ``$``, no empty parts, no quotes."""
    if not isinstance(path, str) or not path or not all(_FIELD_PART.match(part) for part in path.split('.')):
        raise InvalidName(
            f'Invalid field name {path!r}: each dotted part must use letters, digits, "_" or "-" '
            '(for example "price" or "meta.brand").',
            name=str(path),
        )
    return path


def validate_filter(flt: Any) -> None:
    """Raise :class:`QueryError` unless ``flt`` is a well-formed filter."""
    if flt is None:
        return
    if not isinstance(flt, dict):
        raise QueryError(
            f'A filter must be a dict like {{"price": {{"$gt": 10}}}}, got {type(flt).__name__}.'
        )
    for key, value in flt.items():
        if isinstance(key, str) and key.startswith('$'):
            if key not in LOGICAL_OPERATORS:
                raise QueryError(
                    f'Unknown top-level filter operator {key!r}. '
                    f'Allowed here: {", ".join(sorted(LOGICAL_OPERATORS))}.'
                )
            if not isinstance(value, list) or not value:
                raise QueryError(f'{key} takes a non-empty list of filters, got {value!r}.')
            for sub in value:
                validate_filter(sub)
        else:
            check_field_path(key)
            _validate_condition(key, value)


def _validate_condition(key: str, cond: Any) -> None:
    if not is_operator_dict(cond):
        _validate_value(key, cond)
        return
    for op, arg in cond.items():
        if op not in FIELD_OPERATORS:
            raise QueryError(
                f'Unknown filter operator {op!r} in {cond!r} (field {key!r}). '
                f'Supported: {", ".join(sorted(FIELD_OPERATORS))}.'
            )
        if op in ('$in', '$nin'):
            if not isinstance(arg, (list, tuple)):
                raise QueryError(f'{op} on field {key!r} takes a list, got {arg!r}.')
            for v in arg:
                _validate_value(key, v)
        elif op == '$exists':
            if not isinstance(arg, bool):
                raise QueryError(f'$exists on field {key!r} takes true or false, got {arg!r}.')
        elif op == '$not':
            if not is_operator_dict(arg):
                raise QueryError(
                    f'$not on field {key!r} takes an operator expression like {{"$gt": 1}}, got {arg!r}.'
                )
            _validate_condition(key, arg)
        else:
            _validate_value(key, arg)


def _validate_value(key: str, value: Any) -> None:
    if isinstance(value, dict) and any(isinstance(k, str) and k.startswith('$') for k in value):
        raise QueryError(f'Field {key!r}: operators must not be mixed with plain keys in {value!r}.')


def is_operator_dict(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and bool(value)
        and all(isinstance(k, str) and k.startswith('$') for k in value)
    )


def validate_update(update: Any) -> None:
    """Raise :class:`QueryError` unless ``update`` is like ``{'$set': {...}}``."""
    if not isinstance(update, dict) or not update:
        raise QueryError(f'An update must be a dict like {{"$set": {{"price": 3}}}}, got {update!r}.')
    for op, fields in update.items():
        if op not in UPDATE_OPERATORS:
            raise QueryError(
                f'Unknown update operator {op!r}; supported: {", ".join(sorted(UPDATE_OPERATORS))}. '
                'To replace fields use {"$set": {...}}.'
            )
        if not isinstance(fields, dict) or not fields:
            raise QueryError(f'{op} takes a non-empty dict of fields, got {fields!r}.')
        for key, value in fields.items():
            check_field_path(key)
            if key == '_id' or key.startswith('_id.'):
                raise QueryError('The _id of a document cannot be updated.')
            if op == '$inc' and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise QueryError(f'$inc on {key!r} takes a number, got {value!r}.')
