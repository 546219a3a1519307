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

from superduperdb.base.config import CFG
from superduperdb.base.exceptions import EncodingError, InvalidName, QueryError

#: Integers every backend stores: signed 64-bit.
INT_MIN, INT_MAX = -(2**63), 2**63 - 1

#: Operators allowed on a field.
FIELD_OPERATORS = frozenset({'$eq', '$ne', '$gt', '$gte', '$lt', '$lte', '$in', '$nin', '$exists', '$not'})
#: Operators that combine whole filters.
LOGICAL_OPERATORS = frozenset({'$and', '$or', '$nor'})
#: Update operators.
UPDATE_OPERATORS = frozenset({'$set', '$unset', '$inc'})

_FIELD_PART = re.compile(r'^[A-Za-z_][A-Za-z0-9_\-]*$|^[0-9]+$')
_TABLE_NAME = re.compile(r'^([A-Za-z_][A-Za-z0-9_\-]{0,62}\.)?[A-Za-z_][A-Za-z0-9_\-]{0,62}$')


#: superduperdb's own tables (metadata, jobs, outputs, change capture, artifacts) start so.
INTERNAL_PREFIX = '_superduper'


def is_internal(name: Any) -> bool:
    """Whether ``name`` is one of superduperdb's own tables (compared ignoring case, as
    SQLite and MySQL compare table names)."""
    # the table's own name: 'shop._superduper_jobs' (another schema's) is internal too
    return isinstance(name, str) and name.rpartition('.')[2].lower().startswith(INTERNAL_PREFIX)


def check_user_table(name: Any) -> str:
    """A valid table name that is not one of superduperdb's own (``_superduper*``)."""
    check_table_name(name)
    if is_internal(name):
        raise InvalidName(
            f"{name!r} is one of superduperdb's own tables; queries cannot read or write it. "
            'Use db.show(), db.load(), db.jobs() and model outputs (doc["_outputs"]) instead.',
            name=name,
        )
    return name


#: Where superduperdb puts model outputs in a document read back (on MongoDB: stored there).
OUTPUTS_FIELD = '_outputs'


def check_writable_fields(q: Any) -> None:
    """Refuse a query that writes ``_outputs``: on MongoDB that is where superduperdb keeps
    model outputs (decoded with the model's encoder when read), elsewhere the name under which
    they are read back. Outputs are written by superduperdb's jobs only (docs/security.md)."""
    documents = getattr(q, 'documents', None)
    update = getattr(q, 'update', None)
    if documents is not None:
        keys = {k for doc in documents if isinstance(doc, dict) for k in doc}
    elif isinstance(update, dict):
        keys = {k for part in update.values() if isinstance(part, dict) for k in part}
    else:
        return
    for key in keys:
        if isinstance(key, str) and key.split('.')[0] == OUTPUTS_FIELD:
            raise InvalidName(
                f'{key!r}: "{OUTPUTS_FIELD}" holds model outputs, written by superduperdb only. Store '
                'your own values under another field; recompute outputs with model.predict(...).',
                name=key,
            )


def check_table_name(name: Any) -> str:
    """A table/collection name: letters, digits, ``_`` and ``-``, at most 63 characters, after
    an optional schema of the same kind (``shop.items``: table ``items`` in PostgreSQL schema ``shop``)."""
    if not isinstance(name, str) or not _TABLE_NAME.fullmatch(name):
        raise InvalidName(
            f'Invalid table/collection name {name!r}: use 1-63 letters, digits, "_" or "-", '
            'starting with a letter or "_" (optionally after a schema and a dot: "shop.items").',
            name=str(name),
        )
    return name


def check_field_path(path: Any) -> str:
    """A field name or dotted path (``a.b.0``): no ``$``, no empty parts, no quotes."""
    if (
        not isinstance(path, str)
        or not path
        or not all(_FIELD_PART.fullmatch(part) for part in path.split('.'))
    ):
        raise InvalidName(
            f'Invalid field name {path!r}: each dotted part must use letters, digits, "_" or "-" '
            '(for example "price" or "meta.brand").',
            name=str(path),
        )
    return path


def check_scalar(value: Any, where: str) -> Any:
    """``value`` unless it is an int out of the 64-bit range, or a string holding NUL or a lone
    surrogate (no backend stores those); then :class:`EncodingError`."""
    if type(value) is int:
        if not INT_MIN <= value <= INT_MAX:
            raise EncodingError(
                f'{where!r}: the integer {_short(value)} is out of range; databases store integers '
                f'from {INT_MIN} to {INT_MAX}. Store a larger number as a string or a float.'
            )
    elif type(value) is str:
        if '\x00' in value:
            raise EncodingError(f'{where!r}: a string holds a NUL character (\\x00); remove it.')
        if not value.isascii():
            try:
                value.encode('utf-8')
            except UnicodeEncodeError as exc:
                raise EncodingError(
                    f'{where!r}: a string holds a lone surrogate ({value[exc.start]!r}), which is not '
                    'valid Unicode text; decode the text with errors="replace" first.'
                ) from None
    return value


def check_value(value: Any, where: str, depth: int = 0) -> None:
    """Check a plain value (a filter argument, an update value) and what it holds."""
    if depth > max_depth():
        raise EncodingError(
            f'{where!r}: the value is nested more than {max_depth()} levels deep (limits.max_depth).'
        )
    if isinstance(value, dict):
        for k, v in value.items():
            check_scalar(k, where)
            check_value(v, where, depth + 1)
    elif isinstance(value, (list, tuple)):
        for v in value:
            check_value(v, where, depth + 1)
    else:
        check_scalar(value, where)


def _short(value: int) -> str:
    text = str(value) if value.bit_length() < 200 else f'with {len(str(abs(value)))} digits'
    return text


def max_depth() -> int:
    """The deepest nesting of a document, filter or update (``CFG.limits.max_depth``): deeper
    values would exhaust the recursion of every layer that walks them."""
    return CFG.limits.max_depth


def _too_deep() -> QueryError:
    return QueryError(
        f'A filter is nested more than {max_depth()} levels deep (limits.max_depth); simplify it.'
    )


def filter_size(flt: Any) -> tuple[int, int]:
    """``(terms, values)`` of a filter: its keys (field conditions and operators) at every
    level, and the items of its ``$in``/``$nin`` lists. Counted without recursion, so a
    filter too deep to validate is still measured."""
    terms = values = 0
    stack = [flt]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            terms += len(node)
            for key, value in node.items():
                if key in ('$in', '$nin') and isinstance(value, (list, tuple)):
                    values += len(value)
                else:
                    stack.append(value)
        elif isinstance(node, (list, tuple)):
            stack.extend(node)
    return terms, values


def check_filter_size(flt: Any) -> None:
    """Refuse a filter of more terms than ``CFG.limits.max_filter_terms``: databases build an
    expression tree as deep as the filter is long (SQLite refuses depth 1000), and compiling one
    takes seconds."""
    terms, _ = filter_size(flt)
    limit = CFG.limits.max_filter_terms
    if terms > limit:
        raise QueryError(
            f'A filter has {terms} terms; at most {limit} are allowed (limits.max_filter_terms). '
            'Match many values of one field with {"field": {"$in": [...]}} instead of a long "$or".'
        )


def check_filter_values(flt: Any) -> None:
    """Refuse a filter whose ``$in``/``$nin`` lists hold more values in all than
    ``CFG.limits.max_filter_values`` (each is a parameter of the statement; databases cap them).
    Checked on filters from requests; superduperdb's own lookups by key are split by chunk."""
    _, values = filter_size(flt)
    limit = CFG.limits.max_filter_values
    if values > limit:
        raise QueryError(
            f'A filter lists {values} values in $in/$nin; at most {limit} are allowed '
            '(limits.max_filter_values). Split the query into several.'
        )


def check_sort_keys(n: int) -> None:
    """Refuse a sort by more than ``CFG.limits.max_sort_keys`` keys (databases cap the terms
    of an ORDER BY; no index serves such a sort)."""
    limit = CFG.limits.max_sort_keys
    if n > limit:
        raise QueryError(f'A query sorts by {n} keys; at most {limit} are allowed (limits.max_sort_keys).')


def filter_fields(flt: dict[str, Any] | None) -> set[str]:
    """The top-level fields a (validated) filter reads: ``{'a.b': 1, '$or': [{'c': 2}]}``
    reads ``{'a', 'c'}``."""
    fields: set[str] = set()
    for key, value in (flt or {}).items():
        if key in LOGICAL_OPERATORS:
            for sub in value:
                fields |= filter_fields(sub)
        else:
            fields.add(key.split('.')[0])
    return fields


def validate_filter(flt: Any, depth: int = 0) -> None:
    """Raise :class:`QueryError` unless ``flt`` is a well-formed filter (of at most
    ``limits.max_filter_terms`` terms)."""
    if flt is None:
        return
    if depth == 0:
        check_filter_size(flt)
    if depth > max_depth():
        raise _too_deep()
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
                validate_filter(sub, depth + 1)
        else:
            check_field_path(key)
            _validate_condition(key, value, depth + 1)


def _validate_condition(key: str, cond: Any, depth: int = 0) -> None:
    if depth > max_depth():
        raise _too_deep()
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
            _validate_condition(key, arg, depth + 1)
        else:
            _validate_value(key, arg)


def _validate_value(key: str, value: Any) -> None:
    if isinstance(value, dict) and any(isinstance(k, str) and k.startswith('$') for k in value):
        raise QueryError(f'Field {key!r}: operators must not be mixed with plain keys in {value!r}.')
    check_value(value, key)


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
            if op == '$inc':
                check_scalar(value, key)
