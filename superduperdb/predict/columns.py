"""Reading a predict's inputs column-wise: one column per chunk, no document per row.

For a SQL column of fixed-width arrays (decoded into one stacked array), a SQL column of plain
values with no encoder (text, numbers: as they are), or a lake's vector column (numpy arrays
as read). Everything else is read as documents (``over_query._row_chunks``). A chunk is
``(source ids, input fingerprints, inputs_of)``: ``inputs_of(positions)`` decodes only the
rows that need computing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from superduperdb.store import encoding
from superduperdb.store.outputs import fingerprint_column

if TYPE_CHECKING:
    from superduperdb.components.encoder import BaseEncoder
    from superduperdb.datalayer.datalayer import Datalayer
    from superduperdb.query.objects import Find

Key = str | tuple[str, ...]
Inputs = Callable[[list[int]], Sequence[Any]]
Chunk = tuple[list[Any], list[str], Inputs]


def key_column(
    db: Datalayer, select: Find, key: str, pk: str, size: int
) -> Iterator[tuple[list[Any], list[Any]]]:
    """(ids, values of ``key``) of the selected rows, a chunk at a time, read column-wise."""
    for cols in db.databackend.find_columns(  # type: ignore[attr-defined]
        select.table,
        select.filter,
        [key],
        sort=select.sort_by,
        limit=select.limit_n,
        skip=select.skip_n,
        chunk_size=size,
    ):
        yield cols[pk], cols[key]


def column_encoder(db: Datalayer, key: Key, features: dict[str, str], select: Find) -> BaseEncoder | None:
    """The encoder of ``key`` when it is a SQL column of fixed-width arrays (read column-wise), else None."""
    if (
        not isinstance(key, str)
        or key == '_base'
        or '.' in key
        or features
        or select.projection is not None
        or not db.databackend.capabilities.column_reads
    ):
        return None
    encoder = db.encoders_of(select.table).get(key)
    return encoder if encoder is not None and encoder.fixed_width() else None


def column_chunks(
    db: Datalayer,
    select: Find,
    key: str,
    pk: str,
    encoder: BaseEncoder | None,
    size: int,
    value_at: Callable[[dict[str, Any], str], Any],
) -> Iterator[Chunk]:
    """One column, a chunk at a time: fixed-width arrays decoded into one stacked array, or
    plain values (``encoder`` None) as they are; a missing or odd value is decoded as a
    document is (``value_at``: how a document gives its input), with the same failure."""
    table = select.table
    for ids, values in key_column(db, select, key, pk, size):

        def inputs_of(
            positions: list[int], ids: list[Any] = ids, values: list[Any] = values
        ) -> Sequence[Any]:
            picked = values if len(positions) == len(values) else [values[i] for i in positions]
            decoded: Sequence[Any] | None
            if encoder is None:
                decoded = None if None in picked else picked
            else:
                decoded = encoding.decode_column(encoder, picked)
            if decoded is not None:
                return decoded
            docs = db.decode_chunk(table, [{pk: ids[i], key: values[i]} for i in positions], attach=False)
            return [value_at(doc, key) for doc in docs]

        yield ids, fingerprint_column(values), inputs_of


def plain_column(db: Datalayer, key: Key, features: dict[str, str], select: Find) -> bool:
    """Whether ``key`` is a SQL column of plain values (text, numbers) with no encoder: read
    column-wise too, no document per row (a warehouse's text column of millions of rows)."""
    if not isinstance(key, str) or key == '_base' or '.' in key or features or select.projection is not None:
        return False
    backend = db.databackend
    if not backend.capabilities.column_reads or key in db.encoders_of(select.table):
        return False
    return backend.column_kind(select.table, key) in ('str', 'int', 'float', 'bool')


def native_vectors(db: Datalayer, key: Key, features: dict[str, str], select: Find) -> bool:
    """Whether ``key`` is a column of numeric arrays the backend reads as numpy arrays (a lake's
    embedding column written by another program): read column-wise, no document per row."""
    if not isinstance(key, str) or features or select.projection is not None or '.' in key:
        return False
    backend = db.databackend
    return backend.capabilities.column_reads and backend.column_kind(select.table, key) == 'vector'


def vector_chunks(db: Datalayer, select: Find, key: str, pk: str, size: int) -> Iterator[Chunk]:
    """A column of numpy arrays, a chunk at a time: the arrays are the inputs as they are."""
    for ids, values in key_column(db, select, key, pk, size):

        def inputs_of(positions: list[int], values: Sequence[Any] = values) -> Sequence[Any]:
            if len(positions) == len(values):
                return values
            stacked = getattr(values, 'stacked', None)
            if stacked is not None:  # the rows of one matrix: pick them as a matrix
                return encoding.StackedRows(stacked[positions])
            return [values[i] for i in positions]

        yield ids, fingerprint_column(values), inputs_of
