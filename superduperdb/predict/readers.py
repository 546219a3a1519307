"""Reading the rows of a predict a chunk at a time: the ids, the fingerprints of their inputs
as stored, and a function that decodes the inputs of the rows that need computing.

Rows come as documents (any key, features, any backend), or column-wise where the key is one
column the backend reads as it stands: fixed-width arrays, a lake's vectors, plain values
(text, numbers). Both ways give the same fingerprints, so a rerun never recomputes a row
because it was read the other way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from superduperdb.base.document import Document, Encodable
from superduperdb.base.exceptions import QueryError
from superduperdb.store import encoding
from superduperdb.store.fingerprints import fingerprint, fingerprint_column
from superduperdb.store.outputs import OUTPUTS

if TYPE_CHECKING:
    from superduperdb.components.encoder import BaseEncoder
    from superduperdb.datalayer.datalayer import Datalayer
    from superduperdb.query.objects import Find

Key = str | tuple[str, ...]


def key_name(key: Key) -> str:
    return key if isinstance(key, str) else ','.join(key)


def check_key(key: Any) -> Key:
    if isinstance(key, list):
        key = tuple(key)
    if isinstance(key, str) or (isinstance(key, tuple) and key and all(isinstance(k, str) for k in key)):
        return key
    raise QueryError(
        f"X must be a key ('text'), a dotted path ('meta.text'), a tuple of keys or '_base', got {key!r}."
    )


# A chunk is (source ids, input fingerprints, inputs_of): ``inputs_of(positions)``
# decodes only the rows that need computing.
Inputs = Callable[[list[int]], Sequence[Any]]
Chunk = tuple[list[Any], list[str], Inputs]
Reader = Callable[['Find'], Iterator[Chunk]]


def reader(db: Datalayer, select: Find, key: Key, features: dict[str, str], pk: str, size: int) -> Reader:
    """How the rows of ``select`` (or of a narrower selection of its table) are read in chunks:
    column-wise for a SQL column of fixed-width arrays or a lake's vectors, else as documents."""
    encoder = _column_encoder(db, key, features, select)
    if encoder is not None:
        column, found = key, encoder
        return lambda q: _column_chunks(db, q, column, pk, found, size)  # type: ignore[arg-type]
    if _native_vectors(db, key, features, select):
        return lambda q: _vector_chunks(db, q, key, pk, size)  # type: ignore[arg-type]
    if _plain_column(db, key, features, select):
        return lambda q: _plain_chunks(db, q, key, pk, size)  # type: ignore[arg-type]
    return lambda q: _row_chunks(db, q, key, pk, features, size)


def only(select: Find, pk: str, ids: Sequence[Any]) -> Find:
    """The rows ``ids`` of ``select``'s table, read as ``select`` reads them (its projection), whatever
    its filter, order, limit or skip: a row's input is what it is, selected or not."""
    return dataclasses.replace(
        select, filter={pk: {'$in': list(ids)}}, sort_by=(), limit_n=None, skip_n=0, similar=None
    )


def fingerprints_now(
    read: Reader,
    select: Find,
    pk: str,
    size: int,
    ids: Sequence[Any],
    *,
    within: tuple[Any, Any] | None = None,
) -> dict[Any, str]:
    """``{source id: fingerprint of its input as stored now}`` (rows gone are left out): read as
    the chunks were, so the fingerprints are comparable; nothing is decoded.

    ``within``: the first and last key of the chunk the ids are from, in the database's key
    order (a SQL chunk read in key order): the rows between them are read by that range, a
    fifth of the time of a 1000-key ``IN`` list, and the ids picked here.
    """
    found: dict[Any, str] = {}
    if within is not None:
        wanted = set(ids)
        ranged = dataclasses.replace(
            select,
            filter={pk: {'$gte': within[0], '$lte': within[1]}},
            sort_by=(),
            limit_n=None,
            skip_n=0,
            similar=None,
        )
        for chunk_ids, prints, _ in read(ranged):
            found.update((i, fp) for i, fp in zip(chunk_ids, prints) if i in wanted)
        return found
    ids = list(ids)
    for lo in range(0, len(ids), size):
        for chunk_ids, prints, _ in read(only(select, pk, ids[lo : lo + size])):
            found.update(zip(chunk_ids, prints))
    return found


def input_fingerprints(
    db: Datalayer, select: Find, key: Any, features: dict[str, str] | None = None, chunk_size: int = 1000
) -> Iterator[tuple[list[Any], list[str]]]:
    """``(source ids, fingerprints of their inputs)`` of the rows of ``select``, a chunk at a time:
    what a stored output's ``_input_hash`` is compared with to tell whether it is current
    (``db.status()`` counts the stale ones with it). Reads the input columns; decodes nothing."""
    key = check_key(key)
    pk = db.databackend.primary_key(select.table)
    for ids, prints, _ in reader(db, select, key, features or {}, pk, chunk_size)(select):
        yield ids, prints


def _row_chunks(
    db: Datalayer, select: Find, key: Key, pk: str, features: dict[str, str], size: int
) -> Iterator[Chunk]:
    """Rows as documents: any key, features, any backend."""
    table = select.table
    for raw in db.databackend.find(
        table,
        select.filter,
        projection=columns_needed(key, features, select),
        sort=select.sort_by,
        limit=select.limit_n,
        skip=select.skip_n,
        chunk_size=size,
    ):

        def inputs_of(positions: list[int], raw: list[dict[str, Any]] = raw) -> list[Any]:
            docs = db.decode_chunk(table, [raw[i] for i in positions], attach=bool(features))
            return [input_of(doc, key, features) for doc in docs]

        yield [row[pk] for row in raw], [_fingerprint_of(row, key, features) for row in raw], inputs_of


def _key_column(
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


def _column_encoder(db: Datalayer, key: Key, features: dict[str, str], select: Find) -> BaseEncoder | None:
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


def _column_chunks(
    db: Datalayer, select: Find, key: str, pk: str, encoder: BaseEncoder, size: int
) -> Iterator[Chunk]:
    """One column of fixed-width arrays, decoded a chunk at a time into one stacked array."""
    table = select.table
    for ids, values in _key_column(db, select, key, pk, size):

        def inputs_of(
            positions: list[int], ids: list[Any] = ids, values: list[Any] = values
        ) -> Sequence[Any]:
            picked = values if len(positions) == len(values) else [values[i] for i in positions]
            decoded = encoding.decode_column(encoder, picked)
            if decoded is not None:
                return decoded
            # a missing or odd value: decode row by row, exactly as documents are
            docs = db.decode_chunk(table, [{pk: ids[i], key: values[i]} for i in positions], attach=False)
            return [value_at(doc, key) for doc in docs]

        yield ids, fingerprint_column(values), inputs_of


def _native_vectors(db: Datalayer, key: Key, features: dict[str, str], select: Find) -> bool:
    """Whether ``key`` is a column of numeric arrays the backend reads as numpy arrays (a lake's
    embedding column written by another program): read column-wise, no document per row."""
    if not isinstance(key, str) or features or select.projection is not None or '.' in key:
        return False
    backend = db.databackend
    return backend.capabilities.column_reads and backend.column_kind(select.table, key) == 'vector'


def _vector_chunks(db: Datalayer, select: Find, key: str, pk: str, size: int) -> Iterator[Chunk]:
    """A column of numpy arrays, a chunk at a time: the arrays are the inputs as they are."""
    for ids, values in _key_column(db, select, key, pk, size):

        def inputs_of(positions: list[int], values: Sequence[Any] = values) -> Sequence[Any]:
            if len(positions) == len(values):
                return values
            stacked = getattr(values, 'stacked', None)
            if stacked is not None:  # the rows of one matrix: pick them as a matrix
                return encoding.StackedRows(stacked[positions])
            return [values[i] for i in positions]

        yield ids, fingerprint_column(values), inputs_of


def _plain_column(db: Datalayer, key: Key, features: dict[str, str], select: Find) -> bool:
    """Whether ``key`` is a column of plain values (text, numbers) with no encoder: the values
    as read are the model's inputs, so they are read column-wise, no document per row."""
    if not isinstance(key, str) or key == '_base' or features or select.projection is not None or '.' in key:
        return False
    backend = db.databackend
    return (
        backend.capabilities.column_reads
        and key not in db.encoders_of(select.table)
        and backend.column_kind(select.table, key) in _PLAIN_KINDS
    )


_PLAIN_KINDS = frozenset({'str', 'int', 'float', 'bool'})


def _plain_chunks(db: Datalayer, select: Find, key: str, pk: str, size: int) -> Iterator[Chunk]:
    """A column of plain values, a chunk at a time: the values are the inputs as they are."""
    for ids, values in _key_column(db, select, key, pk, size):

        def inputs_of(positions: list[int], values: Sequence[Any] = values) -> Sequence[Any]:
            return values if len(positions) == len(values) else [values[i] for i in positions]

        yield ids, fingerprint_column(values), inputs_of


# ----- a row's input --------------------------------------------------------------
def columns_needed(key: Key, features: dict[str, str], select: Find) -> dict[str, int] | None:
    """Read only the input columns (the key comes anyway): less to fetch and decode."""
    keys = key if isinstance(key, tuple) else (key,)
    if '_base' in keys or select.projection is not None:
        return select.projection
    needed = {k.split('.')[0]: 1 for k in keys}  # a feature's field too: its fingerprint reads it
    if features:
        needed[OUTPUTS] = 1  # on MongoDB the features live in the document
    return needed or {'_id': 1}


def value_at(doc: dict[str, Any], path: str, features: dict[str, str] | None = None) -> Any:
    if not features and path in doc:  # a top-level field: the common case
        value = doc[path]
        return value.x if isinstance(value, Encodable) else value
    if features and path in features:
        try:
            value = doc[OUTPUTS][path][features[path]]
        except KeyError as exc:
            raise QueryError(
                f'Row {doc.get("_id")!r} has no output of model {features[path]!r} on {path!r} to use '
                f'as a feature. Run that model first: predict(X={path!r}, ...).'
            ) from exc
    elif path == '_base':
        value = {k: v for k, v in doc.items() if k != OUTPUTS}
    else:
        value = doc
        for part in path.split('.'):
            if isinstance(value, dict):
                value = value.get(part)
            elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            else:
                value = None
            if value is None:
                break
    return Document(value).unpack() if isinstance(value, dict) else _unwrap(value)


def _unwrap(value: Any) -> Any:
    return value.x if isinstance(value, Encodable) else value


def input_of(doc: dict[str, Any], key: Key, features: dict[str, str]) -> Any:
    if isinstance(key, tuple):
        return tuple(value_at(doc, k, features) for k in key)
    return value_at(doc, key, features)


def _fingerprint_of(row: dict[str, Any], key: Key, features: dict[str, str]) -> str:
    if type(key) is str and key in row and key not in features:
        return fingerprint(row[key])
    keys = key if isinstance(key, tuple) else (key,)
    parts: list[Any] = []
    for k in keys:
        if k == '_base':
            parts.append({c: v for c, v in row.items() if c != OUTPUTS})
        elif k in features:  # the upstream model's output changes with the field it reads
            parts.append(('feature', features[k], _value_at_raw(row, k)))
        else:
            parts.append(_value_at_raw(row, k))
    return fingerprint(parts)


def _value_at_raw(row: dict[str, Any], path: str) -> Any:
    value: Any = row
    for part in path.split('.'):
        value = value.get(part) if isinstance(value, dict) else None
    return value
