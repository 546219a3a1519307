"""Vector search over a Datalayer: engines loaded from stored outputs, kept in step, queried.

Each process keeps one engine per vector index (``superduperdb.vector_search``). The
engine is built from the indexing watcher's outputs on first use. Every change to those
outputs is followed by a ``vector_update`` job naming the rows it touched; the process
that runs the job updates its engine at once, and any other process applies the jobs it
has not seen before its next search. So a server or a second laptop sees the vectors a
cluster worker wrote, and deleting an engine's files loses nothing.

Which jobs another process has not seen is told by the index's *journal*
(:mod:`superduperdb.vector_search.journal`); the jobs themselves are in
:mod:`superduperdb.vector_search.jobs`.

The outputs are the truth, and an engine is a copy that records what it was derived from:
each vector it holds with the input fingerprint of the output it came from (``held``). At
most every ``CFG.vector_search.verify_interval`` seconds, before a search, and whenever
``db.status()`` asks, the engine is checked against the stored outputs (:meth:`VectorIndexes.verify`):
vectors missing, stale (the output was computed again since) or extra (its row or output is
gone) are repaired and counted, whatever lost an update: a killed process, a connection
cut between a predict and its update, a reconcile, another program. Reading the stored
vectors and that truth is :mod:`superduperdb.vector_search.stored`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from superduperdb.base.config import CFG
from superduperdb.base.document import Document, Encodable
from superduperdb.base.exceptions import QueryError
from superduperdb.store.chunks import parent_of
from superduperdb.store.outputs import output_table
from superduperdb.vector_search import chunked, stored
from superduperdb.vector_search.journal import _counter, _Journal, unseen
from superduperdb.vector_search.keys import _key_type, _same, _stored_forms
from superduperdb.vector_search.stored import _as_vector

if TYPE_CHECKING:
    import numpy as np

    from superduperdb.components.vector_index import VectorIndex
    from superduperdb.datalayer.datalayer import Datalayer
    from superduperdb.query.objects import Find
    from superduperdb.vector_search.base import VectorEngine

logger = logging.getLogger(__name__)
Progress = Callable[[int, 'int | None'], None]  # (done, total): a job's progress callback
#: a search's rows before they are read: keys best first, the score of each, what to add to each row
Ranked = tuple[list[Any], dict[Any, float], 'Callable[[Any, Document], None] | None']


@dataclass(frozen=True)
class IndexRef:
    """What a write needs to know of a vector index, read from stored configs without loading it."""

    identifier: str
    version: int
    table: str
    watcher: str  # the indexing watcher's identifier
    precomputed: bool  # its vectors are stored in the table already
    neighbours: int

    @property
    def unique_id(self) -> str:
        return f'vector_index/{self.identifier}/{self.version}'


@dataclass
class _Loaded:
    index: VectorIndex
    engine: VectorEngine | None  # None: no vectors yet (dimensions unknown)
    applied: set[str] = field(default_factory=set)  # update jobs already applied here
    seq: int = 0  # the journal entry this engine is in step with
    journal: str | None = None  # the journal's record as last read
    #: engine id -> digest of the input fingerprint of the output its vector came from
    held: dict[str, int] = field(default_factory=dict)
    caught_up_at: float = field(default_factory=time.monotonic)  # this process's clock only
    verified_at: float = field(default_factory=time.monotonic)
    last_check: dict[str, int] = field(default_factory=dict)  # what the last verify found
    lock: threading.RLock = field(default_factory=threading.RLock)


class VectorIndexes:
    """The vector indexes of one Datalayer: ``db.vectors``."""

    def __init__(self, db: Datalayer) -> None:
        self.db = db
        self._loaded: dict[str, _Loaded] = {}
        self._lock = threading.Lock()
        self._records: tuple[float, list[dict[str, Any]]] | None = None
        self._refs: dict[tuple[str, int], IndexRef] = {}
        self._serving: dict[str, tuple[float, int]] = {}  # identifier -> (read at, version)
        self._outputs: dict[str, tuple[float, list[dict[str, Any]]]] = {}  # table -> (read at, records)

    def forget(self) -> None:
        """Reread which indexes exist (after one is added or removed)."""
        self._records = None
        self._serving.clear()
        self._outputs.clear()

    def files_of(self, identifier: str, engine: str | None) -> str | None:
        """Where index ``identifier`` on ``engine`` (its record's setting; None: the configured
        one) keeps its table (a folder or URL; a lock file ``<table>.lock`` beside it); None if
        in memory. Nothing is loaded: the place follows from the name and the settings."""
        from superduperdb.vector_search.lancedb import LanceDBVectorEngine

        name = engine or CFG.vector_search.engine
        if name != 'lancedb':
            return None
        return LanceDBVectorEngine(identifier, 1, **self._engine_options(name)).uri

    # ----- which indexes ---------------------------------------------------------
    def refs_on(self, table: str) -> list[IndexRef]:
        """The vector indexes over ``table``, read from their stored configs (nothing is loaded).

        A write calls this: it must neither pay for nor depend on loading models (of this
        table's indexes or any other's). The records are reread at most once a second.
        """
        now = time.monotonic()
        if self._records is None or now - self._records[0] > 1.0:
            self._records = (now, self.db.metadata.latest('vector_index'))
        return [ref for record in self._records[1] if (ref := self._ref(record)).table == table]

    def _ref(self, record: dict[str, Any]) -> IndexRef:
        key = (record['identifier'], int(record['version']))
        ref = self._refs.get(key)  # versions never change: read each once
        if ref is None:
            params = record['config']['params']
            _, watcher_id, watcher_version = params['indexing_watcher']['_component']
            watcher = self.db.metadata.get_component('watcher', watcher_id, watcher_version)
            model_type, model_id, model_version = watcher['config']['params']['model']['_component']
            model = self.db.metadata.get_component(model_type, model_id, model_version)
            ref = self._refs[key] = IndexRef(
                identifier=key[0],
                version=key[1],
                table=watcher['config']['params']['select']['_query']['table'],
                watcher=watcher_id,
                precomputed=model['config']['cls'].endswith(':Precomputed'),
                neighbours=int(params.get('neighbours') or 0),
            )
        return ref

    def on_table(self, table: str) -> list[VectorIndex]:
        """The vector indexes over ``table``, loaded (only those: others' models stay unloaded)."""
        from superduperdb.components.vector_index import VectorIndex

        found = []
        for ref in self.refs_on(table):
            index = self.db.load('vector_index', ref.identifier, ref.version)
            assert isinstance(index, VectorIndex)
            found.append(index)
        return found

    def get(self, identifier: str, version: int | None = None) -> VectorIndex:
        """The version of index ``identifier`` that serves queries (``version``: that one).

        The newest one built: while a new version (say, of a new embedding model) is being
        backfilled and built, queries keep using the previous one; they switch once its build
        job has succeeded. Unless versions were staged (vector_search/staging.py): then the
        version promoted last serves, in every process within a second.
        """
        from superduperdb.components.vector_index import VectorIndex
        from superduperdb.vector_search.staging import pinned

        if version is not None:
            index = self.db.load('vector_index', identifier, version)
            assert isinstance(index, VectorIndex)
            return index
        now = time.monotonic()
        cached = self._serving.get(identifier)
        if cached is None or now - cached[0] > 1.0:
            versions = self.db.metadata.versions('vector_index', identifier)
            if not versions:
                self.db.metadata.get_component('vector_index', identifier)  # raises a helpful error
            serving = versions[-1]
            pin, _ = pinned(self.db, identifier)
            for version in reversed(versions if pin is None or pin not in versions else []):
                built = self.db.metadata.jobs(
                    {
                        'component': f'vector_index/{identifier}/{version}',
                        'method': 'vector_build',
                        'status': 'success',
                    },
                    limit=1,
                )
                if built:
                    serving = version
                    break
            if pin is not None and pin in versions:
                serving = pin
            cached = self._serving[identifier] = (now, serving)
        index = self.db.load('vector_index', identifier, cached[1])
        assert isinstance(index, VectorIndex)
        return index

    # ----- keeping engines in step -------------------------------------------------
    def loaded(self, index: VectorIndex, *, check: bool = True, progress: Progress | None = None) -> _Loaded:
        """This process's engine for ``index``, built on first use and caught up with other
        processes (``check``: and checked against the outputs when that is due).

        ``progress(done, total)`` hears how many stored vectors a build has read so far."""
        with self._lock:
            state = self._loaded.get(index.identifier)
            if state is None or state.index.version != index.version:
                state = self._loaded[index.identifier] = self._build(index, progress)
                return state
        self._catch_up(state, check=check)
        return state

    def holds(self, identifier: str) -> bool:
        """Whether this process has an engine of index ``identifier`` (built, or being built)."""
        return identifier in self._loaded

    def unload(self, identifier: str) -> None:
        """Drop this process's engine of index ``identifier``: its next use builds it again."""
        with self._lock:
            self._loaded.pop(identifier, None)

    def _build(self, index: VectorIndex, progress: Progress | None = None) -> _Loaded:
        state = _Loaded(index, None)
        # updates finished before this point are in the outputs the build reads
        state.journal = self.db.metadata.position(_counter(index.identifier))
        state.seq = _Journal.parse(state.journal).seq
        # read with the vectors (one statement where the outputs are read column-wise, else
        # before them: a row changed meanwhile shows as stale). A precomputed index's truth
        # is which rows hold a vector (every digest 0): what the build reads, not read twice
        precomputed = index.indexing_watcher.precomputed
        truth: dict[str, tuple[Any, int]] = {}
        with contextlib.ExitStack() as stack:
            if (index.engine or CFG.vector_search.engine) != 'inmemory':  # files kept from before?
                dimensions = stored.stored_dimensions(self.db, index)
                if dimensions is not None:
                    # other processes building it wait for this one, then find it filled
                    engine = stack.enter_context(self._open_engine(index, dimensions).building())
                    if len(engine) == stored.count_stored(self.db, index):
                        if progress is not None:
                            progress(len(engine), len(engine))
                        state.engine = engine  # the files already hold what the database holds
                        truth = stored.truth(self.db, index)
                        state.held = {k: digest for k, (_, digest) in truth.items()}
                        state.last_check = _built(state, truth)
                        return state
                    engine.clear()
                    state.engine = engine
            filling = False
            # counted only for a job's progress: a search's build does not pay for it
            total = stored.count_stored(self.db, index) if progress is not None else None
            done = 0
            for ids, vectors in stored.stored_vectors(
                self.db, index, truth_into=None if precomputed else truth
            ):
                state.held.update((i, truth[i][1] if i in truth else 0) for i in ids)
                if not filling:
                    filling = True
                    if state.engine is None:
                        self._add(state, [], vectors)  # opens the engine
                    reserve = getattr(state.engine, 'reserve', None)
                    if reserve is not None:  # one allocation for every stored vector, no regrowth
                        reserve(total if total is not None else stored.count_stored(self.db, index))
                    bulk = getattr(state.engine, 'bulk', None)
                    if bulk is not None:  # an ANN index trained once, when every vector is in
                        stack.enter_context(bulk())
                self._add(state, ids, vectors)
                done += len(ids)
                if progress is not None:
                    progress(done, total)
        if progress is not None and not done:  # nothing stored yet: 0/0, not 0/?
            progress(0, total)
        state.last_check = _built(state, state.held if precomputed else truth)
        return state

    def _open_engine(self, index: VectorIndex, dimensions: int) -> VectorEngine:
        from superduperdb.vector_search.base import engine_from_config

        name = index.engine or CFG.vector_search.engine
        options = self._engine_options(name)
        return engine_from_config(index.identifier, dimensions, index.measure, engine=name, **options)

    def _engine_options(self, name: str) -> dict[str, Any]:
        """LanceDB's folder, when ``vector_search.path`` does not name one: this database's."""
        if name == 'lancedb' and CFG.vector_search.path is None:
            return {'path': default_vectors_path(self.db.databackend)}
        return {}

    def _add(self, state: _Loaded, ids: list[str], vectors: np.ndarray) -> None:
        if state.engine is None:
            state.engine = self._open_engine(state.index, vectors.shape[1])
        if ids:
            state.engine.add(ids, vectors)

    def sync(
        self,
        index: VectorIndex,
        ids: Sequence[Any],
        *,
        job_id: str | None = None,
        progress: Progress | None = None,
    ) -> tuple[int, int]:
        """Make the engine agree with the stored outputs of rows ``ids``: ``(added, deleted)``.

        ``progress(done, len(ids))`` hears of each chunk of rows applied."""
        return self._sync(self.loaded(index), ids, job_id, progress)

    def _sync(
        self, state: _Loaded, ids: Sequence[Any], job_id: str | None, progress: Progress | None = None
    ) -> tuple[int, int]:
        index = state.index
        keys = [str(i) for i in ids]
        found: list[str] = []
        with state.lock:
            truth: dict[str, tuple[Any, int]] = {}  # read with the vectors, as in a build
            for chunk_ids, vectors in stored.stored_vectors(self.db, index, ids, truth_into=truth):
                self._add(state, chunk_ids, vectors)
                found.extend(chunk_ids)
                state.held.update((i, truth[i][1] if i in truth else 0) for i in chunk_ids)
                if progress is not None:
                    progress(len(found), len(keys))
            gone = sorted(set(keys) - set(found))
            if gone and state.engine is not None:
                state.engine.delete(gone)
            for i in gone:
                state.held.pop(i, None)
            if progress is not None:  # the rows without a vector count as done once deleted
                progress(len(keys), len(keys))
            if job_id is not None:
                state.applied.add(job_id)
        return len(found), len(gone)

    def _catch_up(self, state: _Loaded, *, check: bool = True) -> None:
        """Apply the update jobs other processes finished since this engine was last in step,
        as the index's journal lists them (no clocks compared); check the engine against the
        outputs when the journal asks for it, when this process fell behind it, and at most
        every ``CFG.vector_search.verify_interval`` seconds.

        While the journal is unchanged, one primary-key lookup is all a search pays.
        """
        record = self.db.metadata.position(_counter(state.index.identifier))
        if record != state.journal:
            jobs, verify, state.seq = unseen(self.db, record, state.seq, state.applied)
            for job in jobs:
                self._sync(state, job.args['ids'], job.id)
            state.journal = record
            state.caught_up_at = time.monotonic()
            if verify:
                self._verify(state)
                return
        if check and time.monotonic() - state.verified_at >= CFG.vector_search.verify_interval:
            self._verify(state)

    def status(self) -> list[dict[str, Any]]:
        """Per vector index (the version serving queries), when this process has its engine
        loaded: the engine caught up with other processes' updates, and checked against the
        outputs if that is due (``vector_search.verify_interval``; :meth:`verify` checks now);
        what the last check found (``engine``, ``outputs``, ``missing``, ``stale``, ``extra``,
        ``repaired``), seconds since it ran (``checked_s``) and since the engine last caught
        up (``caught_up_s``). An index whose engine this process has not loaded shows ``loaded``
        False and ``engine`` None (reporting loads no model); each process checks its own."""
        report = []
        for record in self.db.metadata.latest('vector_index'):
            identifier = record['identifier']
            state = self._loaded.get(identifier)
            row: dict[str, Any] = {'vector_index': identifier, 'loaded': state is not None, 'engine': None}
            if state is not None:  # reporting loads no model: only engines this process has
                self.loaded(state.index)  # caught up, and checked if that is due
                row.update(version=state.index.version, **state.last_check)
                row['caught_up_s'] = round(time.monotonic() - state.caught_up_at, 3)
                row['checked_s'] = round(time.monotonic() - state.verified_at, 3)
            report.append(row)
        return report

    # ----- checking an engine against the outputs --------------------------------------
    def verify(self, index: VectorIndex) -> dict[str, int]:
        """Check this process's engine of ``index`` against the stored outputs and repair it.

        Returns what was found before the repair: ``engine`` (vectors held), ``outputs``
        (current outputs: of the model version the index uses), ``missing`` (outputs without a
        vector), ``stale`` (vectors of an earlier output of their row), ``extra`` (vectors
        whose row or output is gone) and ``repaired`` (vectors added, replaced or deleted).
        """
        return self._verify(self.loaded(index, check=False))

    def _verify(self, state: _Loaded) -> dict[str, int]:
        index = state.index
        with state.lock:
            truth = stored.truth(self.db, index)
            held = state.held
            missing = [key for k, (key, _) in truth.items() if k not in held]
            stale = [key for k, (key, digest) in truth.items() if k in held and held[k] != digest]
            extra = [k for k in held if k not in truth]
            if missing or stale:
                self._sync(state, [*missing, *stale], None)
            if extra:
                if state.engine is not None:
                    state.engine.delete(extra)
                for k in extra:
                    held.pop(k, None)
            state.verified_at = time.monotonic()
            state.last_check = {
                'engine': len(held) + len(extra) - len(missing),
                'outputs': len(truth),
                'missing': len(missing),
                'stale': len(stale),
                'extra': len(extra),
                'repaired': len(missing) + len(stale) + len(extra),
            }
        if state.last_check['repaired']:
            logger.warning(
                'vector index %s had drifted from its outputs in this process: %d missing, %d stale, '
                '%d extra; repaired',
                index.identifier,
                len(missing),
                len(stale),
                len(extra),
            )
        return dict(state.last_check)

    def _output_records(self, table: str) -> list[dict[str, Any]]:
        """The output tables attached to search results (reread at most once a second)."""
        now = time.monotonic()
        cached = self._outputs.get(table)
        if cached is None or now - cached[0] > 1.0:
            cached = self._outputs[table] = (now, self.db.outputs.records(table))
        return cached[1]

    # ----- reading stored vectors ---------------------------------------------------
    def stored_vectors(
        self, index: VectorIndex, ids: Sequence[Any] | None = None
    ) -> Iterator[tuple[list[str], np.ndarray]]:
        """``(ids, matrix)`` chunks of the indexing watcher's stored vectors (of ``ids`` if given)."""
        return stored.stored_vectors(self.db, index, ids)

    # ----- search ------------------------------------------------------------------
    def search(self, q: Find, *, version: int | None = None) -> list[Document]:
        """Run a ``like`` query: documents best first, each with ``_score`` (``version``: on that
        version of the index rather than the one serving, as an evaluation of a staged one does)."""
        with self.db.databackend.reading():  # its lookups on one connection, where that saves some
            return self._search(q, version)

    def _search(self, q: Find, version: int | None = None) -> list[Document]:
        found = self.ranked(q, version)
        if isinstance(found, list):  # like(..., chunks=True): the chunks themselves
            return found
        return self.rows(q, *found)

    def ranked(self, q: Find, version: int | None = None) -> Ranked | list[Document]:
        """The rows ``q``'s ``like`` finds, before they are read: ``(keys best first, score by
        key, what to add to each row)``; over chunks with ``chunks=True``, the chunk documents."""
        assert q.similar is not None
        index = self.get(q.similar.index, version)
        chunker = None
        if index.table != q.table:  # an index of the chunks of q's table: parent rows are wanted
            chunker = parent_of(self.db, q.table, index.table)
            if chunker is None:
                raise QueryError(
                    f'Vector index {index.identifier!r} indexes table {index.table!r}, not {q.table!r}.'
                )
        vector = self._query_vector(index, q.similar.value)
        if chunker is None and not q.similar.chunks:
            found = self._in_database(index, q, vector)
            if found is not None:
                return found
        state = self.loaded(index)
        if state.engine is None:
            return [] if q.similar.chunks else ([], {}, None)
        if vector.shape[0] != state.engine.dimensions:
            raise QueryError(
                f'Vector index {index.identifier!r} holds {state.engine.dimensions}-dimensional vectors; '
                f'the query vector has {vector.shape[0]}.'
            )
        engine = state.engine
        if chunker is not None:

            def find_chunks(asked: int, within: list[str] | None) -> tuple[list[str], Any]:
                with state.lock:
                    return engine.search(vector, asked, within=within)

            best = chunked.search(self.db, find_chunks, index.table, q, q.similar.n, q.similar.chunks)
            if q.similar.chunks:
                return chunked.chunk_documents(best, q.similar.n, self._kept(q, list(best)))
            return list(best), {k: b.score for k, b in best.items()}, chunked.attach(best)
        if q.similar.chunks:
            raise QueryError(
                f'like(..., chunks=True) searches an index of chunks; {index.identifier!r} indexes '
                f'the rows of {index.table!r}.'
            )
        backend = self.db.databackend
        within: list[str] | None = None
        if q.filter and not q.like_first:  # filter, then search among the matching rows
            within = _as_text(backend.keys(q.table, q.filter))
            if not within:
                return [], {}, None
        with state.lock:
            ids, scores = engine.search(vector, q.similar.n, within=within)
        if not ids:
            return [], {}, None
        key_type = _key_type(backend, q.table, backend.primary_key(q.table))
        keys = [key_type(i) for i in ids]
        return keys, {k: float(s) for k, s in zip(keys, scores)}, None

    def _in_database(self, index: VectorIndex, q: Find, vector: np.ndarray) -> Ranked | None:
        """An exact search run by the database (``CFG.vector_search.in_database``, see
        :func:`searched_in_database`); None: search this process's engine."""
        assert q.similar is not None
        filtered = bool(q.filter) and not q.like_first
        plan = searched_in_database(self.db, index)
        if plan is None:
            return None
        out, encoder = plan
        if vector.shape[0] != encoder.shape[0]:
            raise QueryError(
                f'Vector index {index.identifier!r} holds {encoder.shape[0]}-dimensional vectors; '
                f'the query vector has {vector.shape[0]}.'
            )
        hits = self.db.databackend.search_vectors(
            index.table,
            out,
            q.filter if filtered else {},
            vector,
            q.similar.n,
            measure=index.measure,
            version=index.indexing_watcher.model.version or 0,
            dtype=encoder.dtype,
        )
        if hits is None:
            return None
        return [k for k, _ in hits], dict(hits), None

    def rows(
        self,
        q: Find,
        keys: list[Any],
        score_of: dict[Any, float],
        more: Callable[[Any, Document], None] | None = None,
    ) -> list[Document]:
        """The rows of ``q``'s table with ``keys`` (filtered by ``q``'s filter when it searches
        first), best first, each with its ``_score`` (and what ``more`` adds, by key)."""
        if not keys:
            return []
        backend = self.db.databackend
        pk = backend.primary_key(q.table)
        # the engine holds keys as text: on MongoDB a key may be stored as an ObjectId or a number
        as_key = str if backend.self_describing else _same
        wanted = _stored_forms(keys) if backend.self_describing else keys
        filter: dict[str, Any] = {pk: {'$in': wanted}}
        if q.filter and q.like_first:  # search, then filter the results
            filter = {'$and': [q.filter, filter]}
        records = self._output_records(q.table)
        found = None
        if q.projection is None and not (q.filter and q.like_first):
            # the rows and their outputs in one prebuilt lookup by key (None: none here, a composite key)
            found = backend.get_many_joined(q.table, keys, [r['_id'] for r in records])
        if found is not None:
            rows, outputs = found
            docs = self.db.decode_chunk(q.table, rows, attach=False)
            self.db.outputs.attach(q.table, docs, records, found=outputs)
        else:
            docs = [
                doc
                for chunk in backend.find(q.table, filter, projection=q.projection)
                for doc in self.db.decode_chunk(q.table, chunk, records=records)
            ]
        rank = {k: i for i, k in enumerate(keys)}
        docs = [doc for doc in docs if as_key(doc[pk]) in rank]
        for doc in docs:
            doc['_score'] = score_of[as_key(doc[pk])]
        docs.sort(key=lambda d: rank[as_key(d[pk])])
        if more is not None:
            for doc in docs:
                more(as_key(doc[pk]), doc)
        return docs

    def _kept(self, q: Find, keys: list[Any]) -> set[Any] | None:
        """Of ``keys`` (rows found by a search), those ``q``'s filter keeps when it filters after
        the search; None when it filtered first (or has no filter)."""
        if not (q.filter and q.like_first) or not keys:
            return None
        backend = self.db.databackend
        pk = backend.primary_key(q.table)
        as_key = str if backend.self_describing else _same
        wanted = _stored_forms(keys) if backend.self_describing else keys
        return {as_key(k) for k in backend.keys(q.table, {'$and': [q.filter, {pk: {'$in': wanted}}]})}

    def _query_vector(self, index: VectorIndex, value: Any) -> np.ndarray:
        if isinstance(value, dict) and set(value) == {'_id'}:  # more like this row
            ids = [value['_id']]
            for _, vectors in stored.stored_vectors(self.db, index, ids):
                return vectors[0]
            raise QueryError(f'Row {value["_id"]!r} has no vector in index {index.identifier!r} (yet).')
        if isinstance(value, dict):
            if len(value) != 1:
                raise QueryError(
                    'like() takes one field to encode, such as {"text": "a query"}, '
                    f'got keys {sorted(value)}.'
                )
            ((key, x),) = value.items()
            model = index.model_for(key)
            (output,) = model.predict_values([x.x if isinstance(x, Encodable) else x])
            return _as_vector(output)
        return _as_vector(value)


def searched_in_database(db: Datalayer, index: VectorIndex) -> tuple[str, Any] | None:
    """``(output table, its array encoder)`` when ``index``'s searches run in the database
    (``CFG.vector_search.in_database``): an exact index (the ``inmemory`` engine's) of a
    watcher's outputs stored as raw float arrays, on a backend that searches vectors itself.
    Not chosen by default: on the machines measured (docs/warehouses.md) each search was
    slower than the in-memory engine's; what it saves is the engine's copy (memory, build)."""
    backend = db.databackend
    if not CFG.vector_search.in_database or not backend.capabilities.vector_search:
        return None
    watcher = index.indexing_watcher
    if (index.engine or CFG.vector_search.engine) != 'inmemory' or watcher.precomputed:
        return None
    if not isinstance(watcher.key, str) or watcher.model.version is None:
        return None
    out = output_table(watcher.table, watcher.key, watcher.model.identifier)
    encoder = db.encoders_of(out).get('output')
    if encoder is None or not encoder.fixed_width() or len(getattr(encoder, 'shape', ())) != 1:
        return None
    if getattr(encoder, 'dtype', None) not in ('float32', 'float64'):
        return None
    return out, encoder


def default_vectors_path(backend: Any) -> str:
    """Where LanceDB keeps an index's files when ``vector_search.path`` is not set.

    Beside a SQLite/DuckDB file (``<file>.vectors``); for a database server, a directory per
    database under ``~/.superduperdb/vectors``. Absolute either way, so every working directory
    finds the same files, and two databases never share an index's table.
    """
    from superduperdb.store.artifacts import database_file

    path = database_file(backend)
    if path is not None:
        return str(path) + '.vectors'
    describe = backend.describe()
    digest = hashlib.sha1(describe.encode()).hexdigest()[:12]
    return str(Path('~/.superduperdb/vectors').expanduser() / f'{backend.name}-{digest}')


def _built(state: _Loaded, truth: dict[str, Any]) -> dict[str, int]:
    """What a build left: the check's counts, of the outputs it read (none stale or repaired)."""
    held = state.held
    same = truth is held  # a precomputed index: the truth is what the build read
    return {
        'engine': len(held),
        'outputs': len(truth),
        'missing': 0 if same else len(truth.keys() - held.keys()),
        'stale': 0,
        'extra': 0 if same else len(held.keys() - truth.keys()),
        'repaired': 0,
    }


def _as_text(keys: list[Any]) -> list[str]:
    """Row keys as an engine holds them: text (a text column's keys as they are, no copy)."""
    if set(map(type, keys)) <= {str}:
        return keys
    return [str(key) for key in keys]
