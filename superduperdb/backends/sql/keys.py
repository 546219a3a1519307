"""A table's primary key as one value, for tables whose key has several columns.

Outputs, failure ledgers, watchers and vector indexes key every row by a single value. A
table with a composite primary key (``PRIMARY KEY (order_id, line)``) is read with one more
field, ``_key``: the key's values as a compact JSON array (``'[1,2]'``, ``'[7,"EU"]'``).
That text is what its outputs are keyed by, and a filter on ``_key`` becomes a condition on
the key's own columns (a row-value comparison, which the key's index serves).

Key columns must be integers or strings: those read back from the text exactly. A table
keyed by other types is refused with a message saying so.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from superduperdb.base.exceptions import QueryError
from superduperdb.query.filters import INT_MAX, INT_MIN

#: The field holding the whole key of a row of a table with a composite primary key.
ROW_KEY = '_key'


def key_columns(t: sa.Table) -> list[sa.Column[Any]]:
    """The primary-key columns of ``t``, in the key's order."""
    return list(t.primary_key.columns)


def is_composite(t: sa.Table) -> bool:
    return len(t.primary_key.columns) > 1


def check_composite(t: sa.Table) -> None:
    """Refuse a composite key whose columns would not read back from the key's text."""
    bad = [c.name for c in key_columns(t) if not isinstance(c.type, sa.Integer | sa.String)]
    if bad:
        raise QueryError(
            f'Table {t.name!r} has a composite primary key ({", ".join(c.name for c in key_columns(t))}) '
            f'with columns that are neither integers nor strings ({", ".join(bad)}); superduperdb keys '
            'model outputs by the whole key and supports composite keys of integer and string columns. '
            'Add a single-column unique key and make it the primary key, or predict over a view of '
            'the table that has one.'
        )


def compose(values: Sequence[Any]) -> str:
    """The text of one row's key from its key columns' values."""
    return json.dumps(list(values), separators=(',', ':'), ensure_ascii=False)


def compose_columns(columns: Sequence[Sequence[Any]]) -> list[str]:
    """The key texts of many rows, given column by column."""
    dumps = json.JSONEncoder(separators=(',', ':'), ensure_ascii=False).encode
    return [dumps(list(row)) for row in zip(*columns)]


def parse(t: sa.Table, key: Any) -> tuple[Any, ...]:
    """The key columns' values of a key text (a clear error for anything else)."""
    columns = key_columns(t)
    values: Any = None
    if isinstance(key, str):
        try:
            values = json.loads(key)
        except ValueError:
            values = None
    if (
        not isinstance(values, list)
        or len(values) != len(columns)
        or not all(_fits(c, v) for c, v in zip(columns, values))
    ):
        names = ', '.join(c.name for c in columns)
        raise QueryError(
            f'{ROW_KEY!r} of table {t.name!r} is the whole primary key ({names}) as a JSON array, '
            f'such as {compose([_example(c) for c in columns])!r}; got {_shown(key)}.'
        )
    return tuple(values)


def _fits(column: sa.Column[Any], value: Any) -> bool:
    """Whether ``value`` can be a value of key ``column``: a 64-bit int for an integer column,
    text without NUL for a string column (anything else would reach the driver and fail there)."""
    if isinstance(column.type, sa.Integer):
        return type(value) is int and INT_MIN <= value <= INT_MAX
    return type(value) is str and '\x00' not in value


def _shown(key: Any) -> str:
    text = repr(key)
    return text if len(text) <= 200 else f'{text[:200]}... ({len(text)} characters)'


def _example(column: sa.Column[Any]) -> Any:
    return 1 if isinstance(column.type, sa.Integer) else 'a'


def condition(t: sa.Table, cond: Any) -> sa.ColumnElement[bool]:
    """The ``WHERE`` clause of a filter's condition on ``_key``: a value, ``$eq``, ``$ne``,
    ``$in`` or ``$nin``."""
    if isinstance(cond, dict) and len(cond) == 1:
        ((op, arg),) = cond.items()
        if op in ('$eq', '$ne'):
            clause = equals(t, arg)
            return sa.not_(clause) if op == '$ne' else clause
        if op in ('$in', '$nin') and isinstance(arg, list | tuple):
            clause = among(t, arg)
            return sa.not_(clause) if op == '$nin' else clause
    elif not isinstance(cond, dict):
        return equals(t, cond)
    raise QueryError(
        f'A filter on {ROW_KEY!r} (the whole primary key of {t.name!r}) takes a key, or $eq, $ne, $in '
        f'or $nin with keys; got {cond!r}.'
    )


def equals(t: sa.Table, key: Any) -> sa.ColumnElement[bool]:
    values = parse(t, key)
    return sa.and_(*(c == v for c, v in zip(key_columns(t), values)))


def among(t: sa.Table, keys: Sequence[Any]) -> sa.ColumnElement[bool]:
    if not keys:
        return sa.false()
    return sa.tuple_(*key_columns(t)).in_([parse(t, k) for k in keys])


def after(t: sa.Table, prefix: str = 'sddb_keyset_after') -> sa.ColumnElement[bool]:
    """Rows whose key sorts after a row's key, given as parameters ``<prefix>_0, <prefix>_1, ...``
    (keyset pages over a composite key)."""
    columns = key_columns(t)
    bound = [sa.bindparam(f'{prefix}_{i}', type_=c.type) for i, c in enumerate(columns)]
    return sa.tuple_(*columns) > sa.tuple_(*bound)
