"""DataFrames read by the database itself: a ``find`` as one Arrow table, encoded columns decoded.

Where a backend reads a query as Arrow (``DataBackend.find_arrow``: ClickHouse's own Arrow
output), ``db.execute(q).to_arrow()``, ``.to_pandas()`` and ``.to_polars()`` are built from it
instead of from the documents: text and numbers as the database sends them, each model's
outputs joined as ``_outputs.<key>.<model>``, and columns of fixed-width arrays (vectors)
decoded a column at a time into ``FixedSizeList`` columns with the encoder named in the
field's metadata, as :mod:`superduperdb.query.frames` makes them from documents. A query or
a column this cannot give the same way (a projection, a search, JSON, other encoded values)
is read as documents.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from superduperdb.store import encoding

if TYPE_CHECKING:
    from superduperdb.components.encoder import BaseEncoder
    from superduperdb.datalayer.datalayer import Datalayer
    from superduperdb.query.objects import Find

_ENCODER_META = b'superduperdb.encoder'


def reader(db: Datalayer, q: Find, attach: bool) -> Callable[[], Any] | None:
    """What reads ``q`` as one Arrow table (None from it: read the documents), or None where
    the backend cannot read Arrow or the query is not a plain find."""
    if not db.databackend.capabilities.arrow_reads or q.projection is not None or q.similar or q.searches:
        return None
    return lambda: read(db, q, attach)


def read(db: Datalayer, q: Find, attach: bool) -> Any:
    """``q``'s rows as a ``pyarrow.Table`` as frames.to_arrow makes it; None: not this way."""
    import pyarrow as pa

    records = db.outputs.records(q.table) if attach else []
    keys = list(dict.fromkeys(r['key'] for r in records))  # the documents' order: by key, then model
    records = sorted(records, key=lambda r: keys.index(r['key']))
    outputs = [(r['_id'], f'_outputs.{r["key"]}.{r["model"]}') for r in records]
    table = db.databackend.find_arrow(
        q.table, q.filter, sort=q.sort_by, limit=q.limit_n, skip=q.skip_n, outputs=outputs
    )
    if table is None or not len(table):  # (no rows: no columns either, as from no documents)
        return None
    encoders: dict[str, BaseEncoder | None] = dict(db.encoders_of(q.table))
    for out, name in outputs:
        encoders[name] = db.encoders_of(out).get('output')
    for name, encoder in encoders.items():
        if encoder is None or name not in table.column_names:
            continue
        at = table.schema.get_field_index(name)
        column = _arrays(pa, table.column(at), encoder)
        if column is None:
            return None
        meta = {_ENCODER_META: encoder.identifier.encode()}
        table = table.set_column(at, pa.field(name, column.type, metadata=meta), column)
    # as from documents: an output's column only where some row has that output
    empty = {n for _, n in outputs if n in table.column_names and table.column(n).null_count == len(table)}
    return table.select([n for n in table.column_names if n not in empty])


def _arrays(pa: Any, column: Any, encoder: BaseEncoder) -> Any:
    """A column of a fixed-width array encoder's stored bytes as (nested) ``FixedSizeList``;
    None for other encoders, or a value that is not one (a reference not downloaded yet)."""
    from superduperdb.query.frames import fixed_size_list

    if not encoder.fixed_width():
        return None
    values = column.to_pylist()
    present = [v for v in values if v is not None]
    missing = [i for i, v in enumerate(values) if v is None] if len(present) < len(values) else []
    if not present:
        return None
    decoded = encoding.decode_column(encoder, present)
    if decoded is None:
        return None
    return fixed_size_list(pa, decoded.stacked, missing, len(values))
