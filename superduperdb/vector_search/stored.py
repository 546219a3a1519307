"""Reading what the stored outputs hold for a vector index: its vectors, and the truth.

An engine is a copy of the indexing watcher's stored vectors: :func:`stored_vectors` reads
them (column-wise where the backend can, in large pages), :func:`truth` reads which vectors
the index should hold and the input fingerprint of the output each came from, which a check
compares with what an engine holds (:meth:`superduperdb.vector_search.indexes.VectorIndexes.verify`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from superduperdb.base.document import Encodable
from superduperdb.base.exceptions import QueryError
from superduperdb.store.outputs import OUTPUTS, output_table

if TYPE_CHECKING:
    import numpy as np

    from superduperdb.components.vector_index import VectorIndex
    from superduperdb.datalayer.datalayer import Datalayer
    from superduperdb.query.objects import Find

_BUILD_PAGE = 10_000  # rows per page when reading stored vectors column-wise


def stored_vectors(
    db: Datalayer,
    index: VectorIndex,
    ids: Sequence[Any] | None = None,
    *,
    truth_into: dict[str, tuple[Any, int]] | None = None,
) -> Iterator[tuple[list[str], np.ndarray]]:
    """``(ids, matrix)`` chunks of the indexing watcher's stored vectors (of ``ids`` if given).

    ``truth_into``: a dict filled with what :func:`truth` says of the rows (a chunk's rows are in
    it when the chunk comes): read with the vectors, from the same statement, where the
    outputs are read column-wise (one read of the output table instead of two, and the
    fingerprint held with a vector is the one stored with it); read before them otherwise.
    Not for a precomputed index (its truth is which rows hold a vector).
    """
    from superduperdb.query.objects import Collection

    watcher = index.indexing_watcher
    key = watcher.key if isinstance(watcher.key, str) else ','.join(watcher.key)
    model = watcher.model.identifier
    backend = db.databackend
    if watcher.precomputed and _native_vector_column(backend, watcher.table, key):
        # a lake's column of numeric arrays: read column-wise, no document per row
        pk = backend.primary_key(watcher.table)
        select = watcher.select if ids is None else watcher.select.restrict(pk, ids)
        for cols in backend.find_columns(  # type: ignore[attr-defined]
            watcher.table, select.filter, [key], chunk_size=db.chunk_size
        ):
            keys, values = cols[pk], cols[key]
            stacked = getattr(values, 'stacked', None)
            if stacked is not None:  # the rows of one matrix, none missing
                if len(keys):
                    yield [str(i) for i in keys], stacked.astype('float32', copy=False)
                continue
            found = [(str(i), v) for i, v in zip(keys, values) if v is not None]
            if found:
                yield (
                    [i for i, _ in found],
                    _stack([v for _, v in found]).astype('float32', copy=False),
                )
        return
    if watcher.precomputed:  # the vectors are in the table itself: read them there
        pk = backend.primary_key(watcher.table)
        select = watcher.select if ids is None else watcher.select.restrict(pk, ids)
        if isinstance(watcher.key, str) and select.projection is None:
            columns = _column_chunks(db, watcher.table, select, key, pk)
            if columns is not None:
                yield from columns
                return
        query = select.to_projection({key: 1})
        pick = lambda doc: doc.get(key)  # noqa: E731
    elif backend.self_describing:
        pk = backend.primary_key(watcher.table)
        filter: dict[str, Any] = {} if ids is None else {pk: {'$in': list(ids)}}
        query = Collection(watcher.table).find(filter, {OUTPUTS: 1})
        pick = lambda doc: doc.get(OUTPUTS, {}).get(key, {}).get(model)  # noqa: E731
    else:
        out = output_table(watcher.table, key, model)
        if not backend.has_table(out):
            return
        pk = '_id'
        # only the vectors of this index's model version (a newer one may be backfilling)
        filter = {'_version': watcher.model.version}
        if ids is not None:
            filter = {'$and': [filter, {'_id': {'$in': list(ids)}}]}
        query = Collection(out).find(filter, {'output': 1})
        columns = _column_chunks(db, out, query, 'output', pk, truth_into)
        if columns is not None:
            yield from columns
            return
        pick = lambda doc: doc.get('output')  # noqa: E731
    if truth_into is not None:
        truth_into.update(truth(db, index, ids))
    for docs in db.read(query, attach=False).chunks():
        chunk_ids, vectors = [], []
        for doc in docs:
            value = pick(doc)
            if value is None:
                continue
            chunk_ids.append(str(doc[pk]))
            vectors.append(_as_vector(value))
        if chunk_ids:
            yield chunk_ids, _stack(vectors)


def _column_chunks(
    db: Datalayer,
    table: str,
    select: Find,
    column: str,
    pk: str,
    truth_into: dict[str, tuple[Any, int]] | None = None,
) -> Iterator[tuple[list[str], np.ndarray]] | None:
    """``(ids, matrix)`` chunks read column-wise, when ``column`` holds fixed-width arrays; else None.

    No document or ``Encodable`` per row: each page's bytes are joined and viewed as one
    float matrix (``encoding.decode_column``); a page holding a missing or odd value is
    decoded row by row. Pages are large (the index build reads every row once). ``truth_into``:
    filled from the output table's ``_input_hash`` column, read in the same statement.
    """

    backend = db.databackend
    if not backend.capabilities.column_reads or '.' in column:
        return None
    encoder = db.encoders_of(table).get(column)
    if encoder is None or not encoder.fixed_width():
        return None
    return _read_columns(db, table, select, column, pk, encoder, truth_into)


def _read_columns(
    db: Datalayer,
    table: str,
    select: Find,
    column: str,
    pk: str,
    encoder: Any,
    truth_into: dict[str, tuple[Any, int]] | None = None,
) -> Iterator[tuple[list[str], np.ndarray]]:
    from superduperdb.store import encoding

    pages = db.databackend.find_columns(  # type: ignore[attr-defined]
        table,
        select.filter,
        [column] if truth_into is None else [column, '_input_hash'],
        sort=select.sort_by,
        limit=select.limit_n,
        skip=select.skip_n,
        chunk_size=max(db.chunk_size, _BUILD_PAGE),
        ordered=False,  # every row, in one statement (an engine keeps no order)
    )
    for cols in pages:
        keys, values = cols[pk], cols[column]
        names = list(map(str, keys))  # the engine's ids
        if truth_into is not None:  # C-level loops: 100k rows a build
            truth_into.update(zip(names, zip(keys, map(hash, cols['_input_hash']))))
        decoded = encoding.decode_column(encoder, values)
        if decoded is not None:
            if keys:
                yield names, decoded.stacked.reshape(len(keys), -1)
            continue
        docs = db.decode_chunk(table, [{pk: k, column: v} for k, v in zip(keys, values)], attach=False)
        chunk_ids = [str(doc[pk]) for doc in docs if doc.get(column) is not None]
        vectors = [_as_vector(doc[column]) for doc in docs if doc.get(column) is not None]
        if chunk_ids:
            yield chunk_ids, _stack(vectors)


def truth(db: Datalayer, index: VectorIndex, ids: Sequence[Any] | None = None) -> dict[str, tuple[Any, int]]:
    """``{engine id: (row key, digest of the output's input fingerprint)}`` of the vectors
    the index should hold (of rows ``ids`` if given): what the stored outputs say.

    Read column-wise (no document per row); a precomputed index's vectors are its
    table's column, so there only which rows have one is compared (digest 0): changes of
    their values reach the engine through update jobs and change capture.
    """
    watcher = index.indexing_watcher
    backend = db.databackend
    if watcher.precomputed:
        pk = backend.primary_key(watcher.table)
        key = watcher.key if isinstance(watcher.key, str) else ','.join(watcher.key)
        select = watcher.select if ids is None else watcher.select.restrict(pk, ids)
        having: dict[str, Any] = {key: {'$exists': True}}
        if select.filter:
            having = {'$and': [select.filter, having]}
        return {str(k): (k, 0) for k in backend.keys(watcher.table, having)}
    key = watcher.key if isinstance(watcher.key, str) else ','.join(watcher.key)
    out = output_table(watcher.table, key, watcher.model.identifier)
    if not backend.has_table(out):
        return {}
    flt: dict[str, Any] = {'_version': watcher.model.version}
    if ids is not None:
        flt = {'$and': [flt, {'_id': {'$in': list(ids)}}]}
    found: dict[str, tuple[Any, int]] = {}
    if backend.capabilities.column_reads:
        for cols in backend.find_columns(
            out, flt, ['_input_hash'], chunk_size=max(db.chunk_size, _BUILD_PAGE)
        ):
            found.update((str(k), (k, hash(fp))) for k, fp in zip(cols['_id'], cols['_input_hash']))
        return found
    for chunk in backend.find(out, flt, projection={'_input_hash': 1}, chunk_size=_BUILD_PAGE):
        found.update((str(row['_id']), (row['_id'], hash(row.get('_input_hash')))) for row in chunk)
    return found


def count_stored(db: Datalayer, index: VectorIndex) -> int:
    watcher = index.indexing_watcher
    if watcher.precomputed:
        return db.databackend.count(watcher.table, watcher.select.filter)
    key = watcher.key if isinstance(watcher.key, str) else ','.join(watcher.key)
    out = output_table(watcher.table, key, watcher.model.identifier)
    backend = db.databackend
    return backend.count(out, {'_version': watcher.model.version}) if backend.has_table(out) else 0


def stored_dimensions(db: Datalayer, index: VectorIndex) -> int | None:
    for _, vectors in stored_vectors(db, index):
        return int(vectors.shape[1])
    return None


def _native_vector_column(backend: Any, table: str, key: str) -> bool:
    """Whether ``key`` is a column the backend reads as numpy arrays (a lake's embeddings)."""
    return (
        backend.capabilities.column_reads and '.' not in key and backend.column_kind(table, key) == 'vector'
    )


def _as_vector(value: Any) -> np.ndarray:
    if isinstance(value, Encodable):
        value = value.x
    if hasattr(value, 'detach'):  # a torch tensor
        value = value.detach().cpu().numpy()
    import numpy as np  # imported when vectors are used: superduper() on its own needs no numpy

    vector = np.asarray(value, dtype='float32')
    if vector.ndim != 1:
        raise QueryError(f'A vector must be one-dimensional, got shape {vector.shape}.')
    return vector


def _stack(vectors: list[np.ndarray]) -> np.ndarray:
    import numpy as np

    return np.vstack(vectors)
