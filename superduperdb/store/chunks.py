"""Chunks: one row becomes many, each stored, embedded and searched on its own.

A watcher of a chunker (:mod:`superduperdb.models.chunkers`: a model whose output for one text
is a list of ``{'text', 'start', 'end'}``) keeps each row's chunks as rows of a *chunk table*
in the user's database, beside the table they come from, with a readable name
(``docs__body__splitter__chunks``: see :func:`chunk_table`) and these columns:

====================  ================================================================
``_id``               ``<parent key>#<fingerprint>`` (``#2``, ``#3`` ... for a repeat of
                      the same text in one row): a chunk whose text is unchanged keeps
                      its key when its row is edited, so its embedding is kept too
``parent``            the key of the row it comes from
``chunk``             its position among the row's chunks (0, 1, ...)
``text``              the chunk's text, ``row[key][start:end]``
``start``, ``end``    character offsets into the row's text
``fingerprint``       a hash of ``text`` (xxh3, 64 bits, hex)
``version``           the version of the chunker that made it
====================  ================================================================

A chunk table is an ordinary table: a watcher embeds it
(``Watcher(model=embedder, key='text', select=docs.chunks('body', 'splitter').find())``), a
vector index searches it, SQL clients and DataFrames read it. Its rows are written through
the Datalayer like any other, so the watchers of the chunk table (the embedder) and its
vector indexes follow every change: new chunks are embedded, vanished ones lose their
outputs and leave every vector engine, chunks only moved (an edit earlier in the text) are
updated in place and keep their vectors. A deleted row takes its chunks with it.

>>> from superduperdb.store.chunks import chunk_ids
>>> chunk_ids(7, ['a b', 'c', 'a b'])  # doctest: +ELLIPSIS
['7#...', '7#...', '7#...#2']
"""

from __future__ import annotations

import logging
import weakref
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import xxhash

from superduperdb.base.exceptions import QueryError, WriteFailed
from superduperdb.query.objects import chunk_table

if TYPE_CHECKING:
    from superduperdb.components.watcher import Watcher
    from superduperdb.datalayer.datalayer import Datalayer
    from superduperdb.jobs.job import Job

logger = logging.getLogger(__name__)

#: Tries at syncing a row's chunks when another process writes the same ones at once.
_TRIES = 3
#: A chunk table's columns, in the order they are written.
COLUMNS = ('_id', 'parent', 'chunk', 'text', 'start', 'end', 'fingerprint', 'version')


def fingerprint(text: str) -> str:
    """The fingerprint of a chunk's text (xxh3, 64 bits, as 16 hex digits)."""
    return xxhash.xxh3_64_hexdigest(text.encode('utf-8', 'surrogatepass'))


def chunk_ids(parent: Any, texts: Sequence[str]) -> list[str]:
    """The keys of a row's chunks: its key and each text's fingerprint, numbered from the
    second time the same text comes in one row."""
    return [cid for cid, _ in _keyed(parent, texts)]


def _keyed(parent: Any, texts: Sequence[str]) -> list[tuple[str, str]]:
    """``(key, fingerprint)`` of each of a row's chunks (see :func:`chunk_ids`)."""
    digest = xxhash.xxh3_64_hexdigest
    prints = [digest(text.encode('utf-8', 'surrogatepass')) for text in texts]  # fingerprint()'s
    keyed = [(f'{parent}#{fp}', fp) for fp in prints]
    if len(set(prints)) < len(prints):  # a text that comes again in the row: numbered from 2
        seen: Counter[str] = Counter()
        for i, fp in enumerate(prints):
            seen[fp] += 1
            if seen[fp] > 1:
                keyed[i] = (f'{parent}#{fp}#{seen[fp]}', fp)
    return keyed


def chunker_watchers(db: Datalayer, table: str) -> list[Watcher]:
    """The watchers of ``table`` whose model is a chunker."""
    return [w for w in db.watchers_on(table) if w.model.chunks and isinstance(w.key, str)]


def table_of(watcher: Watcher) -> str:
    """The chunk table a chunker's watcher keeps."""
    assert isinstance(watcher.key, str)
    return chunk_table(watcher.table, watcher.key, watcher.model.identifier)


def parent_of(db: Datalayer, table: str, chunks: str) -> Watcher | None:
    """The chunker watcher of ``table`` that keeps the chunk table ``chunks`` (None: none does)."""
    for watcher in chunker_watchers(db, table):
        if table_of(watcher) == chunks:
            return watcher
    return None


def check_chunks(model: str, parent: Any, chunks: Any) -> list[dict[str, Any]]:
    """A chunker's output for one row, checked: a list of ``{'text', 'start', 'end'}``."""
    fits = isinstance(chunks, list)
    if fits:
        for c in chunks:  # a loop, not all(<generator>): a row's ~20 chunks, 100k rows a backfill
            if not (
                isinstance(c, dict) and isinstance(c.get('text'), str) and isinstance(c.get('start'), int)
            ):
                fits = False
                break
    if not fits:
        raise QueryError(
            f'Chunker {model!r} gave {type(chunks).__name__} for row {parent!r}: a chunker returns, '
            "for each text, a list of {'text': str, 'start': int, 'end': int}."
        )
    return chunks


def sync_chunks(
    db: Datalayer,
    name: str,
    parents: Sequence[Any],
    chunks_of: Sequence[list[dict[str, Any]]],
    version: int,
) -> list[list[str]]:
    """Make chunk table ``name`` hold exactly ``chunks_of[i]`` as the chunks of ``parents[i]``.

    Chunks whose key is new are inserted (their embedder runs on them), chunks no longer
    there are deleted (their outputs and vectors go), chunks that kept their text but moved
    are updated in place (one update per shift, not per chunk). Returns each parent's chunk
    keys, in order. A rerun with the same chunks writes nothing. Another process syncing the
    same rows at once (both inserting a chunk of the same text) makes one of them look again.
    """
    for attempt in range(_TRIES):
        try:
            return _sync(db, name, parents, chunks_of, version)
        except WriteFailed:  # another process stored one of these chunks first: look again
            if attempt == _TRIES - 1:
                raise
            logger.info('chunks of %r written meanwhile by another process; syncing again', name)
    raise AssertionError('unreachable')


def _sync(
    db: Datalayer,
    name: str,
    parents: Sequence[Any],
    chunks_of: Sequence[list[dict[str, Any]]],
    version: int,
) -> list[list[str]]:
    from superduperdb.query.objects import Collection

    coll = Collection(name)
    # each chunk's row as a tuple in COLUMNS order (built once: no dict per chunk)
    wanted: dict[str, tuple[Any, ...]] = {}
    ids_of: list[list[str]] = []
    for parent, chunks in zip(parents, chunks_of):
        keyed = _keyed(parent, [c['text'] for c in chunks])
        ids_of.append([cid for cid, _ in keyed])
        for i, ((cid, fp), c) in enumerate(zip(keyed, chunks)):
            wanted[cid] = (cid, parent, i, c['text'], c['start'], c['end'], fp, version)
    _index_parents(db, name)
    existing = _stored(db, name, parents)
    gone = [cid for cid in existing if cid not in wanted]
    new = [row for cid, row in wanted.items() if cid not in existing] if existing else list(wanted.values())
    moved: dict[tuple[int, int, bool], list[str]] = defaultdict(list)  # by shift: one update each
    for cid, (chunk, start, stored_version) in existing.items():
        row = wanted.get(cid)
        if row is None:
            continue
        shift = (row[_CHUNK] - chunk, row[_START] - start, stored_version != version)
        if shift != (0, 0, False):
            moved[shift].append(cid)
    if gone:
        db.execute(coll.delete_many({'_id': {'$in': gone}}))
    for (by_chunk, by_offset, new_version), ids in moved.items():
        update: dict[str, Any] = {}
        if by_chunk or by_offset:
            update['$inc'] = {'chunk': by_chunk, 'start': by_offset, 'end': by_offset}
        if new_version:
            update['$set'] = {'version': version}
        db.execute(coll.update_many({'_id': {'$in': ids}}, update))
    if new and not _insert_rows(db, name, new):
        # no table yet (or no bulk rows): the general insert makes it from its first row
        first = 1 if db.databackend.capabilities.bulk_rows else len(new)
        db.execute(coll.insert_many([dict(zip(COLUMNS, row)) for row in new[:first]]))
        _index_parents(db, name)  # a table the insert made: index it before the next look
        if new[first:] and not _insert_rows(db, name, new[first:]):
            db.execute(coll.insert_many([dict(zip(COLUMNS, row)) for row in new[first:]]))
    return ids_of


_CHUNK, _START = COLUMNS.index('chunk'), COLUMNS.index('start')  # in a chunk row's tuple


def _insert_rows(db: Datalayer, name: str, rows: list[tuple[Any, ...]]) -> bool:
    """Insert new chunk rows (tuples in ``COLUMNS`` order) as they are where the backend can
    (an existing SQL chunk table): no documents built or checked (every value is a str or an
    int superduperdb made), then start the jobs of the rows as an insert does. False: nothing
    written (no table yet, or a backend without bulk rows): insert them the general way."""
    backend = db.databackend
    if not backend.capabilities.bulk_rows or not backend.has_table(name):
        return False
    if not backend.insert_rows(name, COLUMNS, rows):
        return False
    db.start_jobs(name, [row[0] for row in rows])
    return True


#: per backend, the chunk tables whose ``parent`` column this process has indexed
_INDEXED: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()


def _index_parents(db: Datalayer, name: str) -> None:
    """Index the chunk table's ``parent`` column (once per process): each sync looks up the
    chunks of its rows by parent, and without an index that reads the whole chunk table
    (95 ms a look at 227k chunks on SQLite, per edited row)."""
    backend = db.databackend
    done = _INDEXED.setdefault(backend, set())
    if name in done or not backend.has_table(name):
        return
    backend.create_index(name, ['parent'])
    done.add(name)


def store_chunks(
    db: Datalayer,
    name: str,
    model: str,
    ids: Sequence[Any],
    outputs: list[Any],
    failures: dict[int, BaseException],
    version: int,
) -> list[Any]:
    """Store chunker ``model``'s ``outputs`` for rows ``ids`` in chunk table ``name``: each
    row's chunks, exactly; a row the chunker failed on (its position in ``failures``, where an
    output that is not a list of chunks is added) keeps none: no chunk of a text the row no
    longer has stays searchable. Returns the outputs to store per row: its chunks' keys."""
    parents, lists, positions = [], [], []
    for j, (row_id, output) in enumerate(zip(ids, outputs)):
        if j in failures:
            continue
        try:
            lists.append(check_chunks(model, row_id, output))
        except QueryError as exc:
            failures[j] = exc
            continue
        parents.append(row_id)
        positions.append(j)
    failed = [ids[j] for j in failures]
    keys = sync_chunks(db, name, parents + failed, lists + [[] for _ in failed], version)
    stored = list(outputs)
    for j, row_keys in zip(positions, keys):
        stored[j] = row_keys
    return stored


def _stored(db: Datalayer, name: str, parents: Sequence[Any]) -> dict[str, tuple[int, int, int]]:
    """``{chunk key: (position, start, version)}`` of the chunks stored for ``parents``."""
    backend = db.databackend
    if not parents or not backend.has_table(name):
        return {}
    stored: dict[str, tuple[int, int, int]] = {}
    where = {'parent': {'$in': list(parents)}}
    for rows in backend.find(name, where, projection={'_id': 1, 'chunk': 1, 'start': 1, 'version': 1}):
        for row in rows:
            stored[row['_id']] = (int(row['chunk']), int(row['start']), int(row['version']))
    return stored


def parents_deleted(db: Datalayer, table: str, ids: Sequence[Any]) -> list[Job]:
    """Rows ``ids`` of ``table`` are gone: so are their chunks (and, through the chunk tables'
    own watchers, the chunks' outputs and vectors: the jobs returned)."""
    from superduperdb.query.objects import Collection

    jobs: list[Job] = []
    for watcher in chunker_watchers(db, table):
        name = table_of(watcher)
        if db.databackend.has_table(name):
            jobs += db.execute(Collection(name).delete_many({'parent': {'$in': list(ids)}})).jobs
    return jobs


def chunk_counts(db: Datalayer, table: str, key: str, model: str) -> dict[str, int] | None:
    """``{'chunks': rows of the chunk table, 'orphaned': those whose row is gone}`` for the
    watcher of ``model`` on ``table``'s ``key``; None when it keeps no chunk table (not a
    chunker, or nothing chunked yet). Orphaned chunks are drift: a deleted row's chunks that
    stayed (a delete whose clean-up never ran); searches never return them (a row that is
    gone is not found), and a reconcile removes them (:func:`remove_orphans`)."""
    name = chunk_table(table, key, model)
    backend = db.databackend
    if not backend.has_table(name):
        return None
    by_parent: Counter[Any] = Counter()
    for rows in backend.find(name, {}, projection={'_id': 1, 'parent': 1}, chunk_size=50_000):
        by_parent.update(row['parent'] for row in rows)
    pk = backend.primary_key(table)
    alive = {str(k) for k in backend.keys(table, {pk: {'$in': list(by_parent)}})} if by_parent else set()
    orphaned = sum(n for parent, n in by_parent.items() if str(parent) not in alive)
    return {'chunks': sum(by_parent.values()), 'orphaned': orphaned}


def remove_orphans(db: Datalayer, table: str, key: str, model: str) -> int:
    """Delete the chunks whose row is gone (with their outputs and vectors); returns how many."""
    from superduperdb.query.objects import Collection

    name = chunk_table(table, key, model)
    backend = db.databackend
    if not backend.has_table(name):
        return 0
    parents = {
        row['parent'] for rows in backend.find(name, {}, projection={'_id': 1, 'parent': 1}) for row in rows
    }
    pk = backend.primary_key(table)
    alive = {str(k) for k in backend.keys(table, {pk: {'$in': list(parents)}})} if parents else set()
    gone = [p for p in parents if str(p) not in alive]
    if not gone:
        return 0
    return len(db.execute(Collection(name).delete_many({'parent': {'$in': gone}})).ids)


def chunker_of(db: Datalayer, table: str, watchers: list[dict[str, Any]]) -> dict[str, str] | None:
    """Where the rows of chunk table ``table`` come from: ``{'table', 'key', 'chunker',
    'row_key'}`` (the parent table, its chunked field, the chunker's model, and the column of
    the parent's rows that a chunk's ``parent`` holds), from the active chunker watcher among
    the ``watchers`` records that keeps it; None when ``table`` is no chunk table. Read from
    the records: a watcher's chunk table is named by its table, key and model, and only a
    candidate's model record is read, to tell a chunker by its class (no model is loaded)."""
    for record in watchers:
        params = record['config']['params']
        key, ref = params.get('key'), (params.get('model') or {}).get('_component')
        if not params.get('active', True) or not isinstance(key, str) or not ref:
            continue
        parent = params['select']['_query']['table']
        if chunk_table(parent, key, ref[1]) == table and _is_chunker(db, ref[1], ref[2]):
            return {'table': parent, 'key': key, 'chunker': ref[1], 'row_key': _row_key(db, parent)}
    return None


def _row_key(db: Datalayer, table: str) -> str:
    """The column of ``table``'s rows that a chunk's ``parent`` holds (its primary key)."""
    try:
        return db.databackend.primary_key(table)
    except Exception:  # a table gone meanwhile: the default key
        return '_id'


def _is_chunker(db: Datalayer, identifier: str, version: int) -> bool:
    """Whether model ``identifier`` (``version``) is a chunker, by its stored class."""
    from superduperdb.components.component import resolve_class

    try:
        cls = resolve_class(db.metadata.get_component('model', identifier, version)['config']['cls'])
    except Exception:  # a class this process may not import: not one it can tell a chunker
        return False
    return bool(getattr(cls, 'chunks', False))
