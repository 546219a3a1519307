"""Values in a lake's files: how documents become Arrow columns, and result columns values.

Numbers, strings, booleans and bytes are Parquet columns of those types; documents and lists
are Parquet JSON columns. Read back, JSON is parsed, structs/maps/lists written by other
programs come as dicts and lists (read through ``to_json`` so the filter compiler treats them
as JSON columns), and lists of numbers (embeddings) as numpy arrays.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from superduperdb.backends.sql.schema import Instant
from superduperdb.base._deps import require
from superduperdb.base.exceptions import InvalidValue


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class _Vector(sa.types.UserDefinedType):  # type: ignore[type-arg]
    """A list-of-numbers column (an embedding): read as a numpy array, never compared in filters."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return 'DOUBLE[]'


_NUMERIC = (
    'TINYINT',
    'SMALLINT',
    'INTEGER',
    'BIGINT',
    'HUGEINT',
    'UTINYINT',
    'USMALLINT',
    'UINTEGER',
    'UBIGINT',
)


def _kind_name(duck: str) -> str | None:
    """The column type name (``str int float bool bytes json``) of a DuckDB type."""
    duck = duck.upper()
    if duck in _NUMERIC:
        return 'int'
    if duck in ('DOUBLE', 'FLOAT', 'REAL') or duck.startswith('DECIMAL'):
        return 'float'
    if duck == 'VARCHAR':
        return 'str'
    if duck == 'BOOLEAN':
        return 'bool'
    if duck == 'BLOB':
        return 'bytes'
    if duck == 'TIMESTAMP WITH TIME ZONE':
        return 'datetime'  # points in time, read back in UTC
    if duck.startswith('TIMESTAMP'):
        return 'localtime'  # written by another program without a zone: naive datetimes
    if duck == 'JSON' or duck.startswith(('STRUCT', 'MAP')) or (duck.endswith(']') and not _is_vector(duck)):
        return 'json'
    return None


def _is_vector(duck: str) -> bool:
    """A list (or array) of numbers: ``FLOAT[]``, ``DOUBLE[384]``."""
    base = duck.upper().split('[', 1)[0]
    return duck.endswith(']') and (base in ('FLOAT', 'DOUBLE', 'REAL') or base in _NUMERIC)


def _sa_type(name: str, duck: str) -> tuple[Any, str]:
    """The SQLAlchemy type the compiler sees for a column, and the expression that reads it."""
    kind = _kind_name(duck)
    quoted = _quote(name)
    if _is_vector(duck):
        return _Vector(), quoted
    if kind == 'json' and duck.upper() != 'JSON':  # structs and lists from other programs
        return sa.JSON(), f'to_json({quoted}) AS {quoted}'
    return {
        'int': sa.BigInteger(),
        'float': sa.Double(),
        'str': sa.String(),
        'bool': sa.Boolean(),
        'bytes': sa.LargeBinary(),
        'json': sa.JSON(),
        'datetime': Instant(),
        'localtime': sa.DateTime(),
    }.get(kind or '', sa.types.NullType()), quoted


def _arrow_type(pa: Any, kind: str) -> Any:
    return {
        'str': pa.string(),
        'int': pa.int64(),
        'float': pa.float64(),
        'bool': pa.bool_(),
        'bytes': pa.binary(),
        'json': pa.json_(),
        'datetime': pa.timestamp('us', tz='UTC'),
        'localtime': pa.timestamp('us'),
    }.get(kind, pa.json_())


def _infer(values: Sequence[Any]) -> str:
    if any(isinstance(v, datetime.datetime) for v in values):
        return 'datetime'
    types = {type(v) for v in values if v is not None}
    if not types:
        return 'str'
    if types == {bool}:
        return 'bool'
    if types <= {int}:
        return 'int'
    if types <= {int, float}:
        return 'float'
    if types == {str}:
        return 'str'
    if types <= {bytes, bytearray, memoryview}:
        return 'bytes'
    return 'json'


def check_values(
    table: str, documents: Sequence[dict[str, Any]], keys: Sequence[str], existing: dict[str, str]
) -> None:
    """The value policy of every backend (docs/concepts.md, "Values"), as on SQL: a value its
    column would not give back as written is refused, naming the field and the document."""
    from superduperdb.backends.sql import schema

    types = {k: _sa_type(k, existing[k])[0] for k in keys if k in existing and not _is_vector(existing[k])}
    new = [k for k in keys if k not in existing]
    types.update({k: schema.sql_type(kind) for k, kind in schema.infer_columns(documents, new).items()})
    schema.check_values(table, types, documents)


def _to_arrow(
    table: str,
    documents: Sequence[dict[str, Any]] | None,
    keys: Sequence[str],
    existing: dict[str, str],
    *,
    values: Sequence[Sequence[Any]] | None = None,
) -> Any:
    """The documents (or ``values``, a sequence per key) as an Arrow table: existing columns keep
    their types, new ones are inferred."""
    pa = require('pyarrow', extra='lake')
    arrays, fields = [], []
    for position, key in enumerate(keys):
        column = values[position] if values is not None else [doc.get(key) for doc in documents or ()]
        duck = existing.get(key)
        kind: str | None
        if duck is not None and _is_vector(duck):
            kind = 'vector'
        else:
            kind = _kind_name(duck) if duck is not None else _infer(column)
        if kind is None:
            raise InvalidValue(
                f'Column {key!r} of the lake table {table!r} is of type {duck}, which superduperdb '
                'does not write; write the other columns only.',
                field=key,
            )
        try:
            if kind == 'json':
                texts = [None if v is None else json.dumps(v, default=_no_json) for v in column]
                array = (
                    pa.array(texts, pa.json_()) if duck in (None, 'JSON') else pa.array(texts, pa.string())
                )
            elif kind == 'vector':
                array = pa.array([None if v is None else list(v) for v in column], pa.list_(pa.float32()))
            else:
                if kind == 'bytes':
                    column = [None if v is None else bytes(v) for v in column]
                array = pa.array(column, _arrow_type(pa, kind))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError) as exc:
            raise InvalidValue(
                f'Column {key!r} of the lake table {table!r} holds {kind} values; a document gives '
                f'another kind ({exc}). Give every document the same kind of value for it.',
                field=key,
            ) from exc
        arrays.append(array)
        fields.append(key)
    return pa.Table.from_arrays(arrays, names=fields)


def _no_json(value: Any) -> Any:
    raise TypeError(f'{type(value).__name__} values cannot be stored in a lake table column')


def _python_column(column: Any, duck: str) -> list[Any]:
    """A column of a result as Python values: JSON parsed, vectors as numpy arrays."""
    if _is_vector(duck):
        return _vectors(column)
    values = column.to_pylist()
    if _kind_name(duck) == 'datetime':  # points in time, in UTC as on every backend
        return [None if v is None else v.astimezone(datetime.UTC) for v in values]
    if _kind_name(duck) == 'json':
        return [None if v is None else json.loads(v) if isinstance(v, str) else v for v in values]
    return values


def _vectors(column: Any) -> list[Any]:
    import numpy as np

    column = column.combine_chunks()
    if column.null_count:
        return [None if v is None else np.asarray(v, dtype='float32') for v in column.to_pylist()]
    flat = column.flatten().to_numpy(zero_copy_only=False)
    n = len(column)
    if n and flat.size % n == 0:
        width = flat.size // n
        offsets = getattr(column, 'offsets', None)
        if offsets is None or np.all(np.diff(offsets.to_numpy()) == width):
            # the rows of one matrix: no array object per row until one is asked for, and a
            # model or an index build takes the matrix as it is (see StackedRows)
            from superduperdb.base.batches import StackedRows

            return StackedRows(flat.reshape(n, width))  # type: ignore[return-value]
    return [np.asarray(v) for v in column.to_pylist()]
