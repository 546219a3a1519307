"""Keyword search over a Datalayer: the keyword indexes (``db.keywords``), kept in step, queried.

A keyword index's texts are the outputs of its watcher (a
:class:`~superduperdb.components.keyword_index.Words` model: a copy of each row's text,
written, replaced and deleted with the row by writes, change capture and the reconcile). What searches them:

- ``native``: the database's own full-text index on that output table
  (:mod:`superduperdb.backends.sql.fulltext`), which the database keeps in step with the
  table in the same transaction: nothing here can drift from it. A check (status, or
  :meth:`KeywordIndexes.verify`) runs the engine's own consistency check where it has one
  (SQLite FTS5's ``integrity-check``, which rebuilds a broken index) and compares the rows
  with text against the rows indexed.
- ``bm25``: an exact BM25 engine in each process (:mod:`superduperdb.vector_search.bm25`),
  a copy that records the input fingerprint of each output it holds and is kept in step as
  a vector engine is: every write's ``keyword_update`` job (after the watcher's predict) is
  appended to the index's journal, which another process reads before each search (one
  lookup) and applies; a process that fell behind, a reconcile's repair, and a check at most
  every ``CFG.vector_search.verify_interval`` seconds compare it with the outputs and repair
  it (missing, stale, extra), as :mod:`superduperdb.vector_search.indexes` does for vectors.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from superduperdb.base.config import CFG
from superduperdb.base.exceptions import ComponentNotFound, QueryError
from superduperdb.store.outputs import OUTPUTS, output_table
from superduperdb.vector_search import stored
from superduperdb.vector_search.journal import _counter, _Journal, unseen

if TYPE_CHECKING:
    from superduperdb.components.keyword_index import KeywordIndex
    from superduperdb.datalayer.datalayer import Datalayer
    from superduperdb.vector_search.bm25 import BM25

logger = logging.getLogger(__name__)
KIND = 'keyword_index'  # the type id, and the kind of journal a BM25 engine follows
_PAGE = 10_000


@dataclass(frozen=True)
class KeywordRef:
    """What a write needs to know of a keyword index, read from stored configs without loading it."""

    identifier: str
    version: int
    table: str
    watcher: str
    engine: str  # 'native' or 'bm25'

    @property
    def unique_id(self) -> str:
        return f'{KIND}/{self.identifier}/{self.version}'


@dataclass
class _Held:
    """A BM25 engine of this process, and what it was built from."""

    index: KeywordIndex
    engine: BM25
    held: dict[str, int] = field(default_factory=dict)  # id -> digest of its output's fingerprint
    applied: set[str] = field(default_factory=set)
    seq: int = 0
    journal: str | None = None
    verified_at: float = field(default_factory=time.monotonic)
    last_check: dict[str, int] = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock)


class KeywordIndexes:
    """The keyword indexes of one Datalayer: ``db.keywords``."""

    def __init__(self, db: Datalayer) -> None:
        self.db = db
        self._records: tuple[float, list[dict[str, Any]]] | None = None
        self._refs: dict[tuple[str, int], KeywordRef] = {}
        self._held: dict[str, _Held] = {}
        self._ensured: set[str] = set()  # output tables whose native index this process made sure of
        self._newest: dict[str, tuple[float, int]] = {}  # identifier -> (read at, newest version)
        self._lock = threading.Lock()

    def forget(self) -> None:
        self._records = None
        self._newest.clear()
        self._held.clear()
        self._ensured.clear()

    # ----- which indexes ---------------------------------------------------------
    def _latest(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        if self._records is None or now - self._records[0] > 1.0:
            self._records = (now, self.db.metadata.latest(KIND))
        return self._records[1]

    def refs_on(self, table: str) -> list[KeywordRef]:
        """The keyword indexes over ``table`` (configs only: a write loads no model)."""
        return [ref for record in self._latest() if (ref := self._ref(record)).table == table]

    def _ref(self, record: dict[str, Any]) -> KeywordRef:
        key = (record['identifier'], int(record['version']))
        ref = self._refs.get(key)
        if ref is None:
            params = record['config']['params']
            _, watcher_id, watcher_version = params['indexing_watcher']['_component']
            watcher = self.db.metadata.get_component('watcher', watcher_id, watcher_version)
            ref = self._refs[key] = KeywordRef(
                identifier=key[0],
                version=key[1],
                table=watcher['config']['params']['select']['_query']['table'],
                watcher=watcher_id,
                engine=params.get('engine') or 'bm25',
            )
        return ref

    def get(self, identifier: str) -> KeywordIndex:
        """The newest version of keyword index ``identifier`` (which that is: reread at most
        once a second)."""
        now = time.monotonic()
        cached = self._newest.get(identifier)
        if cached is None or now - cached[0] > 1.0:
            versions = self.db.metadata.versions(KIND, identifier) if isinstance(identifier, str) else []
            if not versions:
                known = sorted({r['identifier'] for r in self._latest()})
                hint = (
                    f'there are: {", ".join(known)}.' if known else 'add one with db.add(KeywordIndex(...)).'
                )
                raise ComponentNotFound(
                    f'There is no keyword index {identifier!r}; {hint}',
                    type_id=KIND,
                    identifier=str(identifier),
                )
            cached = self._newest[identifier] = (now, versions[-1])
        return self._load(identifier, cached[1])

    # ----- the texts ---------------------------------------------------------------
    def output_of(self, index: KeywordIndex) -> str:
        watcher = index.indexing_watcher
        assert watcher is not None
        return output_table(watcher.table, watcher.key, watcher.model.identifier)

    def _source(self, index: KeywordIndex) -> tuple[str, str] | None:
        """Where the texts are when the database keeps outputs in the documents (MongoDB):
        ``(collection, field)``; None: in the output table."""
        watcher = index.indexing_watcher
        assert watcher is not None
        if not self.db.databackend.self_describing:
            return None
        return watcher.table, f'{OUTPUTS}.{watcher.key}.{watcher.model.identifier}'

    def texts(
        self, index: KeywordIndex, ids: Sequence[Any] | None = None
    ) -> Iterator[tuple[list[str], list[str]]]:
        """``(ids, texts)`` chunks of the index's stored texts (of rows ``ids`` if given)."""
        from superduperdb.query.objects import Collection

        watcher = index.indexing_watcher
        assert watcher is not None
        backend = self.db.databackend
        if backend.self_describing:  # MongoDB: the texts are in the documents
            pk = backend.primary_key(watcher.table)
            flt: dict[str, Any] = {} if ids is None else {pk: {'$in': list(ids)}}
            query = Collection(watcher.table).find(flt, {OUTPUTS: 1})
            for docs in self.db.read(query, attach=False).chunks():
                found = [
                    (str(d[pk]), t)
                    for d in docs
                    if isinstance(
                        t := d.get(OUTPUTS, {}).get(watcher.key, {}).get(watcher.model.identifier), str
                    )
                ]
                if found:
                    yield [i for i, _ in found], [t for _, t in found]
            return
        out = self.output_of(index)
        if not backend.has_table(out):
            return
        flt = {'_version': watcher.model.version}
        if ids is not None:
            flt = {'$and': [flt, {'_id': {'$in': list(ids)}}]}
        if backend.capabilities.column_reads:
            for cols in backend.find_columns(out, flt, ['output'], chunk_size=max(self.db.chunk_size, _PAGE)):
                found = [(str(k), t) for k, t in zip(cols['_id'], cols['output']) if isinstance(t, str)]
                if found:
                    yield [i for i, _ in found], [t for _, t in found]
            return
        for rows in backend.find(out, flt, projection={'output': 1}, chunk_size=_PAGE):
            found = [(str(r['_id']), r['output']) for r in rows if isinstance(r.get('output'), str)]
            if found:
                yield [i for i, _ in found], [t for _, t in found]

    # ----- building and keeping in step -----------------------------------------------
    def build(self, index: KeywordIndex) -> dict[str, Any]:
        """The ``keyword_build`` job: the native index made over the output table, or this
        process's BM25 engine built from the outputs."""
        if index.engine == 'native':
            self._ensure(index, force=True)
            return {'engine': self._native(index).name, **self.verify(index)}
        with self._lock:
            self._held.pop(index.identifier, None)
        held = self._engine(index)
        return {'engine': 'bm25', 'texts': len(held.engine)}

    def _native(self, index: KeywordIndex) -> Any:
        native = self.db.databackend.fulltext(index.language)
        if native is None:
            raise QueryError(
                f'Keyword index {index.identifier!r} uses the native full-text engine, which '
                f'{self.db.databackend.name} does not have here.'
            )
        return native

    def _ensure(self, index: KeywordIndex, *, force: bool = False) -> bool:
        """Make sure the native index exists over the output table; False: no table yet (no
        text stored yet)."""
        out = self.output_of(index)
        if out in self._ensured and not force:
            return True
        if not self.db.databackend.has_table(out):
            return False
        self._native(index).ensure(out, self._source(index))
        self._ensured.add(out)
        return True

    def _engine(self, index: KeywordIndex, *, check: bool = True) -> _Held:
        """This process's BM25 engine of ``index``: built on first use, caught up with the
        journal, checked against the outputs when due."""
        from superduperdb.vector_search.bm25 import BM25

        with self._lock:
            held = self._held.get(index.identifier)
            if held is None or held.index.version != index.version:
                held = _Held(index, BM25(index.language))
                held.journal = self.db.metadata.position(_counter(index.identifier, KIND))
                held.seq = _Journal.parse(held.journal).seq
                with held.lock:
                    truth = stored.truth(self.db, index)  # type: ignore[arg-type]
                    for ids, texts in self.texts(index):
                        held.engine.add(ids, texts)
                        held.held.update((i, truth[i][1] if i in truth else 0) for i in ids)
                    held.last_check = _counts(held, truth, repaired=0)
                self._held[index.identifier] = held
                return held
        self._catch_up(held, check=check)
        return held

    def sync(self, index: KeywordIndex, ids: Sequence[Any], job_id: str | None = None) -> tuple[int, int]:
        """Make this process's BM25 engine agree with the stored texts of rows ``ids`` (the
        ``keyword_update`` job); where it has none loaded (a cluster worker) nothing is built:
        the job's journal entry tells the processes that search."""
        held = self._held.get(index.identifier)
        if held is None or held.index.version != index.version:
            return 0, 0
        return self._sync(held, ids, job_id)

    def _sync(self, held: _Held, ids: Sequence[Any], job_id: str | None) -> tuple[int, int]:
        keys = [str(i) for i in ids]
        found: list[str] = []
        with held.lock:
            truth = stored.truth(self.db, held.index, ids)  # type: ignore[arg-type]
            for chunk_ids, texts in self.texts(held.index, ids):
                held.engine.add(chunk_ids, texts)
                found.extend(chunk_ids)
                held.held.update((i, truth[i][1] if i in truth else 0) for i in chunk_ids)
            gone = sorted(set(keys) - set(found))
            held.engine.delete(gone)
            for i in gone:
                held.held.pop(i, None)
            if job_id is not None:
                held.applied.add(job_id)
        return len(found), len(gone)

    def _catch_up(self, held: _Held, *, check: bool = True) -> None:
        record = self.db.metadata.position(_counter(held.index.identifier, KIND))
        if record != held.journal:
            jobs, verify, held.seq = unseen(self.db, record, held.seq, held.applied)
            for job in jobs:
                self._sync(held, job.args['ids'], job.id)
            held.journal = record
            if verify:
                self._verify(held)
                return
        if check and time.monotonic() - held.verified_at >= CFG.vector_search.verify_interval:
            self._verify(held)

    def verify(self, index: KeywordIndex) -> dict[str, int]:
        """Check what searches ``index`` against the stored texts, and repair it.

        ``bm25`` (this process's engine): ``texts`` (current outputs), ``held`` (texts the engine holds),
        ``missing``, ``stale``, ``extra``, ``repaired``, as for a vector engine. ``native``:
        ``texts``, ``indexed`` (what the database's index covers), ``drift`` (1 when its own
        check failed) and ``repaired``.
        """
        if index.engine == 'native':
            out = self.output_of(index)
            texts = stored.count_stored(self.db, index)  # type: ignore[arg-type]
            if not self._ensure(index):
                return {'texts': 0, 'indexed': 0, 'drift': 0, 'repaired': 0}
            return {'texts': texts, **self._native(index).check(out, self._source(index))}
        return self._verify(self._engine(index, check=False))

    def _verify(self, held: _Held) -> dict[str, int]:
        with held.lock:
            truth = stored.truth(self.db, held.index)  # type: ignore[arg-type]
            missing = [key for k, (key, _) in truth.items() if k not in held.held]
            stale = [key for k, (key, d) in truth.items() if k in held.held and held.held[k] != d]
            extra = [k for k in held.held if k not in truth]
            if missing or stale:
                self._sync(held, [*missing, *stale], None)
            if extra:
                held.engine.delete(extra)
                for k in extra:
                    held.held.pop(k, None)
            held.verified_at = time.monotonic()
            repaired = len(missing) + len(stale) + len(extra)
            held.last_check = {
                'texts': len(truth),
                'held': len(held.held) + len(extra) - len(missing),
                'missing': len(missing),
                'stale': len(stale),
                'extra': len(extra),
                'repaired': repaired,
            }
        if repaired:
            logger.warning(
                'keyword index %s had drifted from its texts in this process: %d missing, %d stale, '
                '%d extra; repaired',
                held.index.identifier,
                len(missing),
                len(stale),
                len(extra),
            )
        return dict(held.last_check)

    # ----- removing -------------------------------------------------------------------
    def retire(self, identifier: str, version: int | None) -> Callable[[], list[tuple[str, int]]]:
        """Before keyword index ``identifier`` (``version``; None: all) is removed: what to do
        once it is gone, read now (its config goes with it). That drops the native full-text
        index no other keyword index reads, and returns the watchers of the removed versions
        (``(identifier, version)``) to remove after them: the text copy serves nothing else,
        unless another keyword index shares it."""
        versions = [version] if version is not None else self.db.metadata.versions(KIND, identifier)
        doomed = [self._load(identifier, v) for v in versions]
        staying = [
            self._load(r['identifier'], r['version'])
            for r in self.db.metadata.all_components()
            if r['type_id'] == KIND and not (r['identifier'] == identifier and r['version'] in versions)
        ]
        kept = {(self.output_of(k), k.language) for k in staying if k.engine == 'native'}

        def finish() -> list[tuple[str, int]]:
            for index in doomed:
                out = self.output_of(index)
                native = index.engine == 'native' and (out, index.language) not in kept
                if native and self.db.databackend.has_table(out):
                    self._native(index).drop(out, self._source(index))
                    self._ensured.discard(out)
            self._held.pop(identifier, None)
            watchers = [k.indexing_watcher for k in doomed]
            return [(w.identifier, int(w.version or 0)) for w in watchers if w is not None]

        return finish

    def _load(self, identifier: str, version: int) -> KeywordIndex:
        from superduperdb.components.keyword_index import KeywordIndex

        index = self.db.load(KIND, identifier, version)
        assert isinstance(index, KeywordIndex)
        return index

    # ----- searching ------------------------------------------------------------------
    def search(
        self, index: KeywordIndex, text: str, n: int, within: Sequence[Any] | None = None
    ) -> tuple[list[str], list[float]]:
        """The ``n`` rows (as text keys) of ``index``'s table whose texts best match ``text``,
        best first, with the engine's scores (among rows ``within``)."""
        if index.engine == 'native':
            if not self._ensure(index):
                return [], []
            watcher = index.indexing_watcher
            assert watcher is not None
            found = self._native(index).search(
                self.output_of(index), text, n, watcher.model.version or 0, within, self._source(index)
            )
            return [str(k) for k, _ in found], [s for _, s in found]
        held = self._engine(index)
        with held.lock:
            return held.engine.search(text, n, None if within is None else [str(i) for i in within])

    # ----- status -----------------------------------------------------------------------
    def status(self) -> list[dict[str, Any]]:
        """Per keyword index: its engine and what a check finds now (see :meth:`verify`); a
        BM25 engine this process has not loaded shows ``loaded`` False (reporting loads none)."""
        report = []
        for record in self._latest():
            ref = self._ref(record)
            row: dict[str, Any] = {
                'keyword_index': ref.identifier,
                'version': ref.version,
                'table': ref.table,
            }
            if ref.engine == 'native':
                index = self.get(ref.identifier)
                row.update(engine=self._native(index).name, loaded=True, **self.verify(index))
            else:
                held = self._held.get(ref.identifier)
                row.update(engine='bm25', loaded=held is not None)
                if held is not None:
                    self._catch_up(held)
                    row.update(held.last_check)
                    row['checked_s'] = round(time.monotonic() - held.verified_at, 3)
            report.append(row)
        return report


def _counts(held: _Held, truth: dict[str, Any], *, repaired: int) -> dict[str, int]:
    return {
        'texts': len(truth),
        'held': len(held.held),
        'missing': sum(1 for k in truth if k not in held.held),
        'stale': 0,
        'extra': sum(1 for k in held.held if k not in truth),
        'repaired': repaired,
    }
