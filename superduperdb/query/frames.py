"""Query results as DataFrames: ``db.execute(q).to_pandas()``, ``.to_arrow()``, ``.to_polars()``.

One column per field; model outputs as flat columns named ``_outputs.<key>.<model>``;
encoded values as their Python objects. Columns of fixed-shape numpy arrays (vectors,
small images as arrays) are stacked into one 2-D array per column rather than handled
row by row: an arrow ``FixedSizeList`` column (nested for more dimensions), a polars
``Array`` column, and in pandas an object column whose items are rows of that one array
(``numpy.stack(df[column])`` gives the matrix back).

Values arrow cannot hold (PIL images, pickled objects) are arrow ``binary`` columns of
their encoded bytes (PNG for ``pil_image``), the encoder named in the field's metadata
(``superduperdb.encoder``); pandas and polars get the Python objects themselves.

pandas, polars and pyarrow are optional (``pip install 'superduperdb[dataframes]'``) and
imported only here, only when asked for.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

from superduperdb.base._deps import require
from superduperdb.base.document import Document, Encodable

logger = logging.getLogger(__name__)

OUTPUTS = '_outputs'
_ENCODER_META = b'superduperdb.encoder'


class _Column:
    """One column's values, decoded: plain values, or a stacked array with its missing rows."""

    def __init__(self, name: str, values: list[Any]) -> None:
        self.name = name
        self.encoder: str | None = None  # the encoder of its Encodable values, if any
        self.raw = values
        self.values = self._unwrap(values)
        self.stacked, self.missing = _stack(self.values)

    def _unwrap(self, values: list[Any]) -> list[Any]:
        encodable = [v for v in values if isinstance(v, Encodable)]
        if not encodable:
            return values
        self.encoder = encodable[0].encoder.identifier
        return [_plain(v.x) if isinstance(v, Encodable) else v for v in values]

    @property
    def objects(self) -> bool:
        """Python objects that are neither plain values nor stackable arrays (images, pickles)."""
        return self.stacked is None and self.encoder is not None


def columns(chunks: Iterable[list[Document]]) -> list[_Column]:
    """The documents of ``chunks`` as columns, in first-seen field order; outputs flattened."""
    docs = [doc for chunk in chunks for doc in chunk]
    names: dict[str, None] = {}
    outputs: dict[tuple[str, str], None] = {}
    for doc in docs:
        names.update(dict.fromkeys(doc))
        found = doc.get(OUTPUTS)
        if isinstance(found, dict):
            for key, per_model in found.items():
                if isinstance(per_model, dict):
                    outputs.update(dict.fromkeys((key, model) for model in per_model))
    out = [_Column(name, [doc.get(name) for doc in docs]) for name in names if name != OUTPUTS]
    empty: dict[str, Any] = {}
    for key, model in outputs:
        values = [((doc.get(OUTPUTS) or empty).get(key) or empty).get(model) for doc in docs]
        out.append(_Column(f'{OUTPUTS}.{key}.{model}', values))
    return out


def to_arrow(chunks: Iterable[list[Document]]) -> Any:
    """A ``pyarrow.Table`` of the documents (see the module docstring for the column types)."""
    pa = require('pyarrow', extra='dataframes', what='to_arrow()')
    arrays, fields = [], []
    for column in columns(chunks):
        array = _arrow_array(pa, column)
        meta = {_ENCODER_META: column.encoder.encode()} if column.encoder else None
        fields.append(pa.field(column.name, array.type, metadata=meta))
        arrays.append(array)
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def to_pandas(chunks: Iterable[list[Document]]) -> Any:
    """A ``pandas.DataFrame`` of the documents; encoded values as their Python objects."""
    pd = require('pandas', extra='dataframes', what='to_pandas()')
    data: dict[str, Any] = {}
    for column in columns(chunks):
        if column.stacked is not None:
            rows = list(column.stacked)  # views into the one stacked array, no copies
            for i in column.missing:
                rows.insert(i, None)
            data[column.name] = pd.Series(rows, dtype=object)
        elif column.objects:
            data[column.name] = pd.Series(column.values, dtype=object)
        else:
            data[column.name] = column.values
    return pd.DataFrame(data)


def to_polars(chunks: Iterable[list[Document]]) -> Any:
    """A ``polars.DataFrame``: arrays as ``Array`` columns, other encoded values as objects."""
    pl = require('polars', extra='dataframes', what='to_polars()')
    pa = require('pyarrow', extra='dataframes', what='to_polars()')
    series = []
    for column in columns(chunks):
        if column.objects:
            series.append(pl.Series(column.name, column.values, dtype=pl.Object))
        else:
            series.append(pl.from_arrow(_arrow_array(pa, column)).alias(column.name))
    return pl.DataFrame(series)


def arrow_to_pandas(table: Any) -> Any:
    """:func:`to_pandas` of a table the database read as Arrow (see ``store.arrow_reads``):
    the same columns, fixed-size lists as rows of one stacked array."""
    import numpy as np

    pd = require('pandas', extra='dataframes', what='to_pandas()')
    pa = require('pyarrow', extra='dataframes', what='to_pandas()')
    data: dict[str, Any] = {}
    for field, column in zip(table.schema, table.columns):
        if not pa.types.is_fixed_size_list(field.type):
            data[field.name] = column.to_pandas()
            continue
        array = column.combine_chunks()
        shape: list[int] = []
        kind = field.type
        while pa.types.is_fixed_size_list(kind):
            shape.append(kind.list_size)
            kind = kind.value_type
        flat, start, stop = array, array.offset, array.offset + len(array)
        for size in shape:  # the values under each level, null rows included (as zeros)
            flat, start, stop = flat.values, start * size, stop * size
        stacked = flat.slice(start, stop - start).to_numpy(zero_copy_only=False).reshape(len(array), *shape)
        rows: list[Any] = list(stacked)
        for i in np.flatnonzero(array.is_null().to_numpy(zero_copy_only=False)).tolist():
            rows[i] = None
        data[field.name] = pd.Series(rows, dtype=object)
    return pd.DataFrame(data)


def arrow_to_polars(table: Any) -> Any:
    """:func:`to_polars` of a table the database read as Arrow."""
    pl = require('polars', extra='dataframes', what='to_polars()')
    return pl.from_arrow(table)


# ----- conversion ------------------------------------------------------------
def _plain(x: Any) -> Any:
    """A torch tensor as a numpy array (CPU copy); anything else as it is."""
    if type(x).__module__.startswith('torch') and hasattr(x, 'detach'):
        return x.detach().cpu().numpy()
    return x


def _stack(values: list[Any]) -> tuple[Any, list[int]]:
    """``(stacked, missing)``: the non-None values as one array, if all are numpy arrays of one
    shape and a fixed-width dtype, and the positions of the None values; else ``(None, [])``."""
    import numpy as np

    present = [v for v in values if v is not None]
    if not present or type(present[0]) is not np.ndarray:
        return None, []
    first = present[0]
    if first.dtype.hasobject or first.ndim == 0:
        return None, []
    shape, dtype = first.shape, first.dtype
    for v in present:
        if type(v) is not np.ndarray or v.shape != shape or v.dtype != dtype:
            return None, []
    missing = [i for i, v in enumerate(values) if v is None] if len(present) < len(values) else []
    return np.stack(present), missing


def _arrow_array(pa: Any, column: _Column) -> Any:
    if column.stacked is not None:
        return fixed_size_list(pa, column.stacked, column.missing, len(column.values))
    if column.objects:
        encoded = [v.encode() if isinstance(v, Encodable) and not v.pending else None for v in column.raw]
        return pa.array(encoded, type=pa.binary())
    try:
        return pa.array(column.values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as exc:
        # mixed types (a JSON column holding numbers and strings): keep them, as JSON text
        logger.warning(
            'Column %r holds values arrow cannot type as one (%s): kept as JSON text.', column.name, exc
        )
        return pa.array([None if v is None else json.dumps(v, default=str) for v in column.values])


def fixed_size_list(pa: Any, stacked: Any, missing: list[int], length: int) -> Any:
    """``stacked`` (n, d1, d2, ...) as nested FixedSizeList arrays of ``length`` rows, None at ``missing``."""
    import numpy as np

    if missing:  # put the rows back in place, with zeros where a value is missing (masked below)
        full = np.zeros((length, *stacked.shape[1:]), dtype=stacked.dtype)
        present = np.ones(length, dtype=bool)
        present[missing] = False
        full[present] = stacked
        stacked = full
    values = pa.array(np.ascontiguousarray(stacked).reshape(-1))
    for size in reversed(stacked.shape[2:]):
        values = pa.FixedSizeListArray.from_arrays(values, size)
    mask = None
    if missing:
        flags = np.zeros(length, dtype=bool)
        flags[missing] = True
        mask = pa.array(flags)
    return pa.FixedSizeListArray.from_arrays(values, stacked.shape[1], mask=mask)
