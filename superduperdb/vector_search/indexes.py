"""Vector search over a Datalayer: engines loaded from stored outputs, kept in step, queried.

Each process keeps one engine per vector index (``superduperdb.vector_search``). The
engine is built from the indexing watcher's outputs on first use. Every change to those
outputs is followed by a ``vector_update`` job naming the rows it touched; the process
that runs the job updates its engine at once, and any other process applies the jobs it
has not seen before its next search. So a server or a second laptop sees the vectors a
cluster worker wrote, and deleting an engine's files loses nothing.

Which jobs another process has not seen is told by the index's *journal*, a record in the
metadata store that each finished update appends its job id to, numbered in order (no
clock is compared: processes whose clocks differ agree on the numbers). A process that fell
behind the journal's last entries, or finds a ``verify`` entry (the reconcile repaired
outputs without update jobs), checks its engine against the outputs instead.

The outputs are the truth, and an engine is a copy that records what it was derived from:
each vector it holds with the input fingerprint of the output it came from (``held``). At
most every ``CFG.vector_search.verify_interval`` seconds, before a search, and whenever
``db.status()`` asks, the engine is checked against the stored outputs (:meth:`VectorIndexes.verify`):
vectors missing, stale (the output was computed again since) or extra (its row or output is
gone) are repaired and counted, whatever lost an update: a killed process, a connection
cut between a predict and its update, a reconcile, another program.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from superduperdb.base.config import CFG
from superduperdb.base.document import Document, Encodable
from superduperdb.base.exceptions import QueryError
from superduperdb.jobs.job import AFTER_SUCCESS, Job, job_log, report_progress, task
from superduperdb.store.outputs import OUTPUTS, output_table

if TYPE_CHECKING:
    import numpy as np

    from superduperdb.components.vector_index import VectorIndex
    from superduperdb.datalayer.datalayer import Datalayer
    from superduperdb.query.objects import Find
    from superduperdb.vector_search.base import VectorEngine

logger = logging.getLogger(__name__)
_JOURNAL = 100  # update-job ids a journal keeps: a process further behind verifies instead
VERIFY = 'verify'  # a journal entry that asks every process to check its engine against the outputs
_BUILD_PAGE = 10_000  # rows per page when reading stored vectors column-wise
Progress = Callable[[int, 'int | None'], None]  # (done, total): a job's progress callback


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

    def files_of(self, identifier: str) -> str | None:
        """Where the engine of index ``identifier`` keeps its table (a folder or URL; a lock file
        ``<table>.lock`` beside it); None if in memory."""
        from superduperdb.vector_search.lancedb import LanceDBVectorEngine

        index = self.get(identifier)
        if (index.engine or CFG.vector_search.engine) != 'lancedb':
            return None
        engine = self._open_engine(index, 1)
        assert isinstance(engine, LanceDBVectorEngine)
        return engine.uri

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

    def get(self, identifier: str) -> VectorIndex:
        """The version of index ``identifier`` that serves queries: the newest one built.

        While a new version (say, of a new embedding model) is being backfilled and built,
        queries keep using the previous one; they switch once its build job has succeeded.
        """
        from superduperdb.components.vector_index import VectorIndex

        now = time.monotonic()
        cached = self._serving.get(identifier)
        if cached is None or now - cached[0] > 1.0:
            versions = self.db.metadata.versions('vector_index', identifier)
            if not versions:
                self.db.metadata.get_component('vector_index', identifier)  # raises a helpful error
            serving = versions[-1]
            for version in reversed(versions):
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

    def _build(self, index: VectorIndex, progress: Progress | None = None) -> _Loaded:
        state = _Loaded(index, None)
        # updates finished before this point are in the outputs the build reads
        state.journal = self.db.metadata.position(_counter(index.identifier))
        state.seq = _Journal.parse(state.journal).seq
        truth = self._truth(index)  # before the vectors: a row changed meanwhile shows as stale
        with contextlib.ExitStack() as stack:
            if (index.engine or CFG.vector_search.engine) != 'inmemory':  # files kept from before?
                dimensions = self._stored_dimensions(index)
                if dimensions is not None:
                    # other processes building it wait for this one, then find it filled
                    engine = stack.enter_context(self._open_engine(index, dimensions).building())
                    if len(engine) == self._count_stored(index):
                        if progress is not None:
                            progress(len(engine), len(engine))
                        state.engine = engine  # the files already hold what the database holds
                        state.held = {k: digest for k, (_, digest) in truth.items()}
                        state.last_check = _built(state, truth)
                        return state
                    engine.clear()
                    state.engine = engine
            filling = False
            # counted only for a job's progress: a search's build does not pay for it
            total = self._count_stored(index) if progress is not None else None
            done = 0
            for ids, vectors in self.stored_vectors(index):
                state.held.update((i, truth[i][1] if i in truth else 0) for i in ids)
                if not filling:
                    filling = True
                    if state.engine is None:
                        self._add(state, [], vectors)  # opens the engine
                    reserve = getattr(state.engine, 'reserve', None)
                    if reserve is not None:  # one allocation for every stored vector, no regrowth
                        reserve(self._count_stored(index))
                    bulk = getattr(state.engine, 'bulk', None)
                    if bulk is not None:  # an ANN index trained once, when every vector is in
                        stack.enter_context(bulk())
                self._add(state, ids, vectors)
                done += len(ids)
                if progress is not None:
                    progress(done, total)
        if progress is not None and not done:  # nothing stored yet: 0/0, not 0/?
            progress(0, total)
        state.last_check = _built(state, truth)
        return state

    def _open_engine(self, index: VectorIndex, dimensions: int) -> VectorEngine:
        from superduperdb.vector_search.base import engine_from_config

        name = index.engine or CFG.vector_search.engine
        options = {}
        if name == 'lancedb' and CFG.vector_search.path is None:
            options['path'] = default_vectors_path(self.db.databackend)
        return engine_from_config(index.identifier, dimensions, index.measure, engine=name, **options)

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
            truth = self._truth(index, ids)  # before the vectors, as in a build
            for chunk_ids, vectors in self.stored_vectors(index, ids):
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
            journal = _Journal.parse(record)
            todo, complete = journal.after(state.seq)
            verify = not complete or VERIFY in todo
            todo = [job_id for job_id in todo if job_id != VERIFY and job_id not in state.applied]
            if todo and not verify:
                found = self.db.metadata.jobs({'_id': {'$in': todo}})
                order = {job_id: i for i, job_id in enumerate(todo)}
                for job_record in sorted(found, key=lambda r: order[r['_id']]):
                    job = Job.from_record(job_record, self.db)
                    self._sync(state, job.args['ids'], job.id)
                verify = len(found) < len(todo)  # a job record gone: the outputs tell
            state.journal, state.seq = record, journal.seq
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
            truth = self._truth(index)
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

    def _truth(self, index: VectorIndex, ids: Sequence[Any] | None = None) -> dict[str, tuple[Any, int]]:
        """``{engine id: (row key, digest of the output's input fingerprint)}`` of the vectors
        the index should hold (of rows ``ids`` if given): what the stored outputs say.

        Read column-wise (no document per row); a precomputed index's vectors are its
        table's column, so there only which rows have one is compared (digest 0): changes of
        their values reach the engine through update jobs and change capture.
        """
        watcher = index.indexing_watcher
        backend = self.db.databackend
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
        find_columns = getattr(backend, 'find_columns', None)
        if find_columns is not None:
            for cols in find_columns(
                out, flt, ['_input_hash'], chunk_size=max(self.db.chunk_size, _BUILD_PAGE)
            ):
                found.update((str(k), (k, hash(fp))) for k, fp in zip(cols['_id'], cols['_input_hash']))
            return found
        for chunk in backend.find(out, flt, projection={'_input_hash': 1}, chunk_size=_BUILD_PAGE):
            found.update((str(row['_id']), (row['_id'], hash(row.get('_input_hash')))) for row in chunk)
        return found

    # ----- reading stored vectors ---------------------------------------------------
    def stored_vectors(
        self, index: VectorIndex, ids: Sequence[Any] | None = None
    ) -> Iterator[tuple[list[str], np.ndarray]]:
        """``(ids, matrix)`` chunks of the indexing watcher's stored vectors (of ``ids`` if given)."""
        from superduperdb.query.objects import Collection

        watcher = index.indexing_watcher
        key = watcher.key if isinstance(watcher.key, str) else ','.join(watcher.key)
        model = watcher.model.identifier
        backend = self.db.databackend
        if watcher.precomputed and _native_vector_column(backend, watcher.table, key):
            # a lake's column of numeric arrays: read column-wise, no document per row
            pk = backend.primary_key(watcher.table)
            select = watcher.select if ids is None else watcher.select.restrict(pk, ids)
            for cols in backend.find_columns(  # type: ignore[attr-defined]
                watcher.table, select.filter, [key], chunk_size=self.db.chunk_size
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
                columns = self._column_chunks(watcher.table, select, key, pk)
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
            columns = self._column_chunks(out, query, 'output', pk)
            if columns is not None:
                yield from columns
                return
            pick = lambda doc: doc.get('output')  # noqa: E731
        for docs in self.db.read(query, attach=False).chunks():
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
        self, table: str, select: Find, column: str, pk: str
    ) -> Iterator[tuple[list[str], np.ndarray]] | None:
        """``(ids, matrix)`` chunks read column-wise, when ``column`` holds fixed-width arrays; else None.

        No document or ``Encodable`` per row: each page's bytes are joined and viewed as one
        float matrix (``encoding.decode_column``); a page holding a missing or odd value is
        decoded row by row. Pages are large (the index build reads every row once).
        """

        backend = self.db.databackend
        if not hasattr(backend, 'find_columns') or '.' in column:
            return None
        encoder = self.db.encoders_of(table).get(column)
        if encoder is None or not encoder.fixed_width():
            return None
        return self._read_columns(table, select, column, pk, encoder)

    def _read_columns(
        self, table: str, select: Find, column: str, pk: str, encoder: Any
    ) -> Iterator[tuple[list[str], np.ndarray]]:
        from superduperdb.store import encoding

        pages = self.db.databackend.find_columns(  # type: ignore[attr-defined]
            table,
            select.filter,
            [column],
            sort=select.sort_by,
            limit=select.limit_n,
            skip=select.skip_n,
            chunk_size=max(self.db.chunk_size, _BUILD_PAGE),
        )
        for cols in pages:
            keys, values = cols[pk], cols[column]
            decoded = encoding.decode_column(encoder, values)
            if decoded is not None:
                if keys:
                    yield [str(k) for k in keys], decoded.stacked.reshape(len(keys), -1)
                continue
            docs = self.db.decode_chunk(
                table, [{pk: k, column: v} for k, v in zip(keys, values)], attach=False
            )
            chunk_ids = [str(doc[pk]) for doc in docs if doc.get(column) is not None]
            vectors = [_as_vector(doc[column]) for doc in docs if doc.get(column) is not None]
            if chunk_ids:
                yield chunk_ids, _stack(vectors)

    def _output_records(self, table: str) -> list[dict[str, Any]]:
        """The output tables attached to search results (reread at most once a second)."""
        now = time.monotonic()
        cached = self._outputs.get(table)
        if cached is None or now - cached[0] > 1.0:
            cached = self._outputs[table] = (now, self.db.outputs.records(table))
        return cached[1]

    def _count_stored(self, index: VectorIndex) -> int:
        watcher = index.indexing_watcher
        if watcher.precomputed:
            return self.db.databackend.count(watcher.table, watcher.select.filter)
        key = watcher.key if isinstance(watcher.key, str) else ','.join(watcher.key)
        out = output_table(watcher.table, key, watcher.model.identifier)
        backend = self.db.databackend
        return backend.count(out, {'_version': watcher.model.version}) if backend.has_table(out) else 0

    def _stored_dimensions(self, index: VectorIndex) -> int | None:
        for _, vectors in self.stored_vectors(index):
            return int(vectors.shape[1])
        return None

    # ----- search ------------------------------------------------------------------
    def search(self, q: Find) -> list[Document]:
        """Run a ``like`` query: documents best first, each with ``_score``."""
        reading = getattr(self.db.databackend, 'reading', None)  # its lookups on one connection
        with reading() if reading is not None else contextlib.nullcontext():
            return self._search(q)

    def _search(self, q: Find) -> list[Document]:
        assert q.similar is not None
        index = self.get(q.similar.index)
        if index.table != q.table:
            raise QueryError(
                f'Vector index {index.identifier!r} indexes table {index.table!r}, not {q.table!r}.'
            )
        state = self.loaded(index)
        vector = self._query_vector(index, q.similar.value)
        if state.engine is None:
            return []
        backend = self.db.databackend
        pk = backend.primary_key(q.table)
        within: list[str] | None = None
        if q.filter and not q.like_first:  # filter, then search among the matching rows
            within = [str(key) for key in backend.keys(q.table, q.filter)]
            if not within:
                return []
        if vector.shape[0] != state.engine.dimensions:
            raise QueryError(
                f'Vector index {index.identifier!r} holds {state.engine.dimensions}-dimensional vectors; '
                f'the query vector has {vector.shape[0]}.'
            )
        with state.lock:
            ids, scores = state.engine.search(vector, q.similar.n, within=within)
        if not ids:
            return []
        key_type = _key_type(backend, q.table, pk)
        keys = [key_type(i) for i in ids]
        score_of = {k: float(s) for k, s in zip(keys, scores)}
        # the engine holds keys as text: on MongoDB a key may be stored as an ObjectId or a number
        as_key = str if backend.self_describing else _same
        wanted = _stored_forms(keys) if backend.self_describing else keys
        filter: dict[str, Any] = {pk: {'$in': wanted}}
        if q.filter and q.like_first:  # search, then filter the results
            filter = {'$and': [q.filter, filter]}
        records = self._output_records(q.table)
        found = None
        if q.projection is None and not (q.filter and q.like_first) and hasattr(backend, 'get_many_joined'):
            # the rows and their outputs in one prebuilt lookup by key (None: a composite key)
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
        return docs

    def _query_vector(self, index: VectorIndex, value: Any) -> np.ndarray:
        if isinstance(value, dict) and set(value) == {'_id'}:  # more like this row
            ids = [value['_id']]
            for _, vectors in self.stored_vectors(index, ids):
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


def _native_vector_column(backend: Any, table: str, key: str) -> bool:
    """Whether ``key`` is a column the backend reads as numpy arrays (a lake's embeddings)."""
    column_kind = getattr(backend, 'column_kind', None)
    return (
        column_kind is not None
        and hasattr(backend, 'find_columns')
        and '.' not in key
        and column_kind(table, key) == 'vector'
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
    return {
        'engine': len(held),
        'outputs': len(truth),
        'missing': sum(1 for k in truth if k not in held),
        'stale': 0,
        'extra': sum(1 for k in held if k not in truth),
        'repaired': 0,
    }


def _same(key: Any) -> Any:
    return key


def _stored_forms(keys: Sequence[str]) -> list[Any]:
    """Every form a MongoDB ``_id`` shown as ``key`` may be stored in: the text itself, the
    ObjectId of 24 hex digits, the integer of a decimal. Documents an application inserted
    itself have ObjectId keys; the engine holds them as text.

    >>> _stored_forms(['7', 'a'])
    ['7', 7, 'a']
    """
    forms: list[Any] = []
    for key in keys:
        forms.append(key)
        if len(key) == 24 and _OBJECT_ID.fullmatch(key):
            from bson import ObjectId  # only on MongoDB, whose driver brings bson

            forms.append(ObjectId(key))
        elif _INTEGER.fullmatch(key) and -(2**63) <= int(key) < 2**63:
            forms.append(int(key))
    return forms


_OBJECT_ID = re.compile(r'[0-9a-f]{24}')
_INTEGER = re.compile(r'-?[0-9]{1,19}')


def _key_type(backend: Any, table: str, pk: str) -> Any:
    """How to turn the engine's string ids back into primary keys."""
    if backend.self_describing:
        return str
    key_type = getattr(backend, 'key_type', None)
    if key_type is not None:  # a lake
        return key_type(table)
    t = backend.table(table)
    try:
        python_type = t.c[pk].type.python_type
    except (AttributeError, NotImplementedError, KeyError):
        return str
    return python_type if python_type in (int, str) else str


# ----- jobs -------------------------------------------------------------------------
@task('vector_build')
def build(db: Datalayer, job: Job) -> dict[str, Any]:
    """Args: ``index`` [identifier, version]. (Re)build this process's engine from stored vectors."""
    identifier, version = job.args['index']
    index = db.load('vector_index', identifier, version)
    with db.vectors._lock:
        db.vectors._loaded.pop(identifier, None)
    state = db.vectors.loaded(index, progress=report_progress(db, job))  # type: ignore[arg-type]
    size = len(state.engine) if state.engine is not None else 0
    job_log('vector index %s: %d vectors', identifier, size)
    return {'vectors': size}


def _counter(identifier: str) -> str:
    return f'vector_index:{identifier}'


@dataclass(frozen=True)
class _Journal:
    """The last entries appended to an index's journal: ``seq`` is the number of the last one.

    Stored as JSON in one metadata record, appended to by compare-and-swap, so every process
    reads the same order whatever its clock says.
    """

    seq: int = 0
    entries: tuple[str, ...] = ()

    @classmethod
    def parse(cls, record: str | None) -> _Journal:
        if record is None:
            return cls()
        try:
            data = json.loads(record)
            return cls(int(data['seq']), tuple(str(e) for e in data['entries']))
        except (ValueError, TypeError, KeyError):  # written by a version before journals
            return cls(-1)

    def after(self, seq: int) -> tuple[list[str], bool]:
        """The entries after ``seq``, and whether the journal still holds all of them."""
        first = self.seq - len(self.entries) + 1  # the number of the oldest entry kept
        if self.seq < 0 or seq < first - 1 or seq > self.seq:
            return list(self.entries), False
        return list(self.entries[seq - first + 1 :]), True

    def append(self, entry: str) -> str:
        entries = (*self.entries, entry)[-_JOURNAL:]
        return json.dumps({'seq': max(self.seq, 0) + 1, 'entries': entries}, separators=(',', ':'))


def append_to_journal(db: Datalayer, identifier: str, entry: str) -> None:
    """Append ``entry`` (an update job's id, or :data:`VERIFY`) to index ``identifier``'s journal."""
    name = _counter(identifier)
    while True:
        record = db.metadata.position(name)
        if db.metadata.swap_position(name, record, _Journal.parse(record).append(entry)):
            return


def _bump(db: Datalayer, job: Job) -> None:
    """After an update job is recorded as done: tell other processes to catch up."""
    append_to_journal(db, job.args['index'][0], job.id)


AFTER_SUCCESS.setdefault('vector_update', []).append(_bump)


@task('vector_update')
def update(db: Datalayer, job: Job) -> dict[str, Any]:
    """Args: ``index`` [identifier, version], ``ids``: rows whose vectors may have changed."""
    identifier, version = job.args['index']
    index = db.load('vector_index', identifier, version)
    progress = report_progress(db, job)
    added, deleted = db.vectors.sync(index, job.args['ids'], job_id=job.id, progress=progress)  # type: ignore[arg-type]
    return {'added': added, 'deleted': deleted}


NEIGHBOURS = '_neighbours'


@task('vector_neighbours')
def neighbours(db: Datalayer, job: Job) -> dict[str, Any]:
    """Args: ``index`` [identifier, version], ``ids`` (None: every row). Store each row's nearest rows.

    They are outputs like any other: ``doc['_outputs']['_neighbours'][index]`` is the list of
    the primary keys of the ``index.neighbours`` nearest rows, best first, the row itself left out.
    """
    from superduperdb.components.vector_index import VectorIndex

    identifier, version = job.args['index']
    index = db.load('vector_index', identifier, version)
    assert isinstance(index, VectorIndex)
    state = db.vectors.loaded(index)
    ids = job.args.get('ids')
    if state.engine is None:
        return {'rows': 0}
    backend = db.databackend
    pk = backend.primary_key(index.table)
    key_type = _key_type(backend, index.table, pk)
    out = db.outputs.register(index.table, NEIGHBOURS, identifier)
    done = 0
    for chunk_ids, vectors in db.vectors.stored_vectors(index, ids):
        rows = []
        for row_id, vector in zip(chunk_ids, vectors):
            with state.lock:
                found, _ = state.engine.search(vector, index.neighbours + 1)
            nearest = [key_type(i) for i in found if i != row_id][: index.neighbours]
            rows.append((key_type(row_id), nearest, index.version or 0, ''))
        db.outputs.write(index.table, NEIGHBOURS, identifier, out, rows)
        done += len(rows)
    return {'rows': done}
