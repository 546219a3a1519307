"""The Datalayer (``db``): run queries, and add, load, show and remove components.

The Datalayer is the facade: its methods are the API, and much of their work lives beside it,

- :mod:`superduperdb.datalayer.encoders`: the encoder registry, and decoding stored rows;
- :mod:`superduperdb.datalayer.components`: storing, loading, showing and removing components;
- :mod:`superduperdb.datalayer.listings`: finding and listing jobs, and the lists shown as tables;
- :mod:`superduperdb.datalayer.closed`: what a closed Datalayer refuses;
- :mod:`superduperdb.freshness.triggers`: the jobs started after writes (and deletes);
- :mod:`superduperdb.query.cursor`: the :class:`Cursor` a ``find`` returns.

>>> from superduperdb import superduper, Collection
>>> db = superduper('sqlite:///:memory:')
>>> db.execute(Collection('docs').insert_one({'text': 'hello'})).ids != []
True
>>> db.execute(Collection('docs').find_one({'text': 'hello'}))['text']
'hello'
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from superduperdb.backends.base import DataBackend
from superduperdb.base.document import Document
from superduperdb.base.exceptions import ComponentInUse, InvalidName, NotSupported, QueryError
from superduperdb.components.component import Component
from superduperdb.components.encoder import BaseEncoder
from superduperdb.datalayer import listings
from superduperdb.datalayer.closed import Closed, operations
from superduperdb.datalayer.components import ComponentRegistry
from superduperdb.datalayer.encoders import EncoderRegistry
from superduperdb.freshness import triggers
from superduperdb.freshness.downloads import pending_fields
from superduperdb.predict import over_query
from superduperdb.query import objects as query
from superduperdb.query.cursor import Cursor
from superduperdb.query.filters import check_user_table, check_writable_fields
from superduperdb.store import arrow_reads, encoding
from superduperdb.store.artifacts import ArtifactStore
from superduperdb.store.metadata import MetadataStore
from superduperdb.store.names import check_input_keys, check_query, check_row_key
from superduperdb.store.outputs import Outputs
from superduperdb.vector_search.indexes import VectorIndexes
from superduperdb.vector_search.keywords import KeywordIndexes

if TYPE_CHECKING:
    from superduperdb.base.seal import Seal
    from superduperdb.components.model import Model
    from superduperdb.components.watcher import Watcher
    from superduperdb.datalayer.uninstall import Uninstalled
    from superduperdb.jobs.job import Job
    from superduperdb.jobs.local import Executor

logger = logging.getLogger(__name__)
C = TypeVar('C', bound=Component)


@dataclass
class WriteResult:
    """What a write did: the primary keys it touched, and the jobs it started."""

    ids: list[Any]
    jobs: list[Any] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.ids)


class Datalayer:
    """A database together with its metadata store and artifact store."""

    def __init__(
        self,
        databackend: DataBackend,
        metadata: MetadataStore,
        artifact_store: ArtifactStore,
        *,
        chunk_size: int = 1000,
        spec: dict[str, Any] | None = None,
    ) -> None:
        self.databackend = databackend
        #: how another process (a cluster worker) opens this same database; None if it cannot
        self.spec = spec
        self.metadata = metadata
        self.artifact_store = artifact_store
        self.chunk_size = chunk_size
        self._components = ComponentRegistry(self)
        self._created: dict[str, bool] = {}
        self._lock = threading.RLock()
        self._registry = EncoderRegistry(self, self._lock)
        self.outputs = Outputs(self)
        self.vectors = VectorIndexes(self)
        self.keywords = KeywordIndexes(self)
        self._executor: Executor | None = None
        self._cdc: Any = None
        self._watchers: tuple[float, list[dict[str, Any]]] | None = None  # (read at, watcher records)
        #: set by the server (create_app): the download jobs it makes carry the server's fetch policy
        self.serving = False

    def __repr__(self) -> str:
        return f'Datalayer({self.databackend.describe()})'

    def __enter__(self) -> Datalayer:
        """``with superduper(uri) as db:``: the database is closed when the block ends."""
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ======================================================================
    # queries
    # ======================================================================
    def execute(self, q: Any) -> Any:
        """Run a query object (or a SQLAlchemy statement on SQL databases).

        Returns a :class:`Cursor` for ``find``, a Document or None for
        ``find_one``, an int for ``count`` and a :class:`WriteResult` for writes.
        superduperdb's own tables (``_superduper*``) are refused (see docs/security.md), and on
        SQL so are tables and columns that do not exist (see :mod:`superduperdb.store.names`).
        """
        if isinstance(q, (query.Query, query.LikeFirst)):
            check_user_table(q.table)
            if self.databackend.is_internal(q.table):
                raise InvalidName(
                    f"{q.table!r} is a view over superduperdb's own tables (a model's outputs); queries "
                    'cannot read or write it. Read outputs with the rows they belong to '
                    '(doc["_outputs"][key][model]); SQL clients may read the view directly.',
                    name=q.table,
                )
            check_writable_fields(q)
            check_query(self.databackend, q)
        if logger.isEnabledFor(logging.DEBUG):  # what runs, never the values (they are data)
            logger.debug('execute %s', _described(q))
        return self._execute(q)

    def _execute(self, q: Any) -> Any:
        """:meth:`execute` without the check on internal tables (for superduperdb's own use)."""
        if isinstance(q, query.LikeFirst):  # coll.like(...) without .find(): every result
            q = q.find()
        if isinstance(q, query.FindOne):
            return next(iter(self.read(q)), None)
        if isinstance(q, query.Find):
            return self.read(q)
        if isinstance(q, query.Count):
            return self.databackend.count(q.table, q.filter)
        if isinstance(q, query.Insert):
            return self._insert(q)
        if isinstance(q, query.Update):
            return self._update(q)
        if isinstance(q, query.Delete):
            ids = self.databackend.delete(q.table, q.filter, many=q.many)
            return WriteResult(ids, triggers.after_write(self, q.table, ids, deleted=True))
        if type(q).__module__.startswith('sqlalchemy'):
            return self._raw(q)
        raise QueryError(
            f'db.execute() takes a query such as Collection("name").find(), got {type(q).__name__}.'
        )

    def read(self, q: query.Find, *, attach: bool = True) -> Cursor:
        """The rows ``q`` finds, decoded (``db.execute(q)`` without the name checks);
        ``attach=False``: without their model outputs."""
        if q.searches:
            from superduperdb.vector_search import hybrid

            return hybrid.cursor(self, q)
        find = functools.partial(self.databackend.find, q.table, q.filter, projection=q.projection)
        chunks = find(sort=q.sort_by, limit=q.limit_n, skip=q.skip_n, chunk_size=self.chunk_size)
        return Cursor(
            self._decode_chunks(q.table, chunks, attach=attach), arrow=arrow_reads.reader(self, q, attach)
        )

    def _decode_chunks(
        self, table: str, chunks: Iterator[list[dict[str, Any]]], *, attach: bool = True
    ) -> Iterator[list[Document]]:
        records = self.outputs.records(table) if attach else None  # one lookup per query
        for chunk in chunks:
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug('read a chunk of %d rows from %r', len(chunk), table)
            yield self.decode_chunk(table, chunk, attach=attach, records=records)

    def decode_chunk(
        self,
        table: str,
        chunk: list[dict[str, Any]],
        *,
        attach: bool = True,
        records: list[dict[str, Any]] | None = None,
    ) -> list[Document]:
        """Stored rows of ``table`` as Documents, with their model outputs attached."""
        docs = self._registry.decode(table, chunk)
        if attach:
            self.outputs.attach(table, docs, records)
        return docs

    def _insert(self, q: query.Insert) -> WriteResult:
        backend = self.databackend
        downloads = pending_fields(q.documents)
        if downloads and backend.append_only:
            raise NotSupported(
                f'Data references (uri=) in {", ".join(map(repr, downloads))} cannot be stored in the '
                f'{backend.name} table {q.table!r}: their download job writes the fetched data into the '
                'row, and its rows are append-only. Fetch the data first and insert the values '
                '(pil_image(PIL.Image.open(...))).'
            )
        rows, columns = encoding.encode_documents(
            q.documents, self_describing=backend.self_describing, register=self.register_encoder
        )
        if not rows:
            return WriteResult([])
        exists = backend.has_table(q.table)
        self._registry.refuse_raw_values(q.table, q.documents, columns, existing=exists)
        if columns:
            self.check_column_encoders(q.table, columns)
        if not exists:
            self.will_create(q.table)
        ids = backend.insert(q.table, rows, new_columns=not exists or self._created_by_us(q.table))
        if not exists:
            self._created[q.table] = True
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug('wrote %d rows to %r%s', len(ids), q.table, '' if exists else ' (a new table)')
        return WriteResult(ids, triggers.after_write(self, q.table, ids, downloads=downloads))

    def _update(self, q: query.Update) -> WriteResult:
        update = dict(q.update)
        if '$set' in update:
            rows, columns = encoding.encode_documents(
                [update['$set']],
                self_describing=self.databackend.self_describing,
                register=self.register_encoder,
                dotted_keys=True,
            )
            self._registry.refuse_raw_values(q.table, [update['$set']], columns)
            if columns:
                self.check_column_encoders(q.table, columns)
            update['$set'] = rows[0]
        ids = self.databackend.update(
            q.table, q.filter, update, many=q.many, new_columns=self._created_by_us(q.table)
        )
        downloads = pending_fields([q.update['$set']]) if '$set' in q.update else []
        fields = {key.split('.')[0] for change in q.update.values() for key in change}
        return WriteResult(ids, triggers.after_write(self, q.table, ids, downloads=downloads, fields=fields))

    def _raw(self, statement: Any) -> list[Document]:
        rows = self.databackend.execute_raw(statement)  # QueryError where it is not SQL
        froms: list[Any] = getattr(statement, 'get_final_froms', list)()
        names = [getattr(f, 'name', None) for f in froms]
        columns = self.encoders_of(names[0]) if len(names) == 1 and names[0] else {}
        return encoding.decode_rows(rows, column_encoders=columns, lookup=self.encoder)

    def will_create(self, table: str) -> None:
        """Record that superduperdb creates ``table`` (so later writes may add columns to it).

        Where the data backend records its creations itself (a SQL database holding its own
        metadata), the record is written in the same step as the table; elsewhere it is written
        here, before the table, so no table superduperdb made is ever left unrecorded.
        """
        if not (self.metadata.records_creations and self.metadata.backend is self.databackend):
            self.metadata.record_created_table(table)

    def _created_by_us(self, table: str) -> bool:
        """Whether superduperdb created ``table`` (then it may add columns to it)."""
        if table not in self._created:
            self._created[table] = self.metadata.created_table(table)
        return self._created[table]

    def drop_table(self, table: str) -> None:
        """Drop a table/collection and forget its column encoders."""
        check_user_table(table)
        from superduperdb.freshness.ledger import forget_rows

        forget_rows(self, table)  # failure-ledger entries too (its downloads'; its outputs' below)
        for record in self.metadata.outputs_of(table):  # its model outputs go with it, views first
            if self.databackend.capabilities.views:  # the readable views go first
                from superduperdb.backends.sql.views import drop_output_views

                drop_output_views(self.databackend, record['_id'])  # type: ignore[arg-type]
            self.databackend.drop_table(record['_id'])
            self.metadata.forget_outputs(record['_id'])
            self.metadata.forget_table(record['_id'])
        self.databackend.drop_table(table)
        self.metadata.forget_table(table)
        self._registry.forget_table(table)
        self._created.pop(table, None)

    # ----- encoders (the registry: superduperdb.datalayer.encoders) ---------
    def register_encoder(self, encoder: BaseEncoder) -> BaseEncoder:
        """The registered version of ``encoder``, adding it to the database if new."""
        return self._registry.register(encoder)

    def encoder(self, identifier: str, version: int | None = None) -> BaseEncoder:
        """A registered encoder by name (and version), loaded from the metadata store."""
        return self._registry.get(identifier, version)

    @functools.cached_property
    def seal(self) -> Seal:
        """This database's :class:`~superduperdb.base.seal.Seal` (its key made on first use)."""
        from superduperdb.base import seal

        return seal.open_or_make(self.metadata, self.artifact_store)

    def encoders_of(self, table: str, refresh: bool = False) -> Mapping[str, BaseEncoder]:
        """``{column: encoder}`` of ``table``'s encoded columns (cached; ``refresh`` reads again)."""
        return self._registry.of(table, refresh)

    def check_column_encoders(self, table: str, columns: dict[str, BaseEncoder]) -> None:
        """Record the encoders of ``columns`` of ``table`` (refusing one for a column that holds
        values already, which it did not write)."""
        self._registry.check_columns(table, columns)

    # ======================================================================
    # predict and fit over queries (what Model.predict / Model.fit call; a Client has the same)
    # ======================================================================
    def predict_over_query(
        self,
        model: Model,
        *,
        key: Any,
        select: query.Find,
        overwrite: bool = False,
        features: dict[str, str] | None = None,
        watch: bool = False,
        chunk_size: int | None = None,
    ) -> Any:
        """Run ``model`` over the rows of ``select``, outputs written next to their inputs: a
        :class:`~superduperdb.predict.over_query.PredictReport`. ``watch=True`` adds a
        :class:`~superduperdb.components.watcher.Watcher` instead, and returns its backfill job.
        The names used are checked before anything runs."""
        from superduperdb.components.watcher import Watcher

        keys = key if isinstance(key, (tuple, list)) else (key,)
        # input names only when every key is one (else predict_over_query says what key may be);
        # a watcher may wait for a table yet to come
        inputs = (
            [k for k in keys if k not in (features or {})] if all(isinstance(k, str) for k in keys) else []
        )
        self.check_keys(select, inputs, missing_table_ok=watch)
        if not watch:  # a watcher checks its backfill's cost when it is added
            self.check_cost(model, key=key, select=select, features=features)
        if watch:
            watcher = self.add(Watcher(model=model, key=key, select=select, features=features or {}))
            return watcher.backfill_
        return over_query.predict_over_query(
            self,
            model,
            key=key,
            select=select,
            overwrite=overwrite,
            features=features or {},
            chunk_size=chunk_size,
        )

    def estimate(
        self,
        what: Any,
        *,
        key: Any = None,
        select: query.Find | None = None,
        features: Any = None,
        confirm: bool = False,
    ) -> Any:
        """What predicting a watcher (or its identifier), or a model on ``key`` over ``select``, would
        compute and cost (:class:`~superduperdb.predict.estimate.Estimate`); ``confirm=True``
        confirms a backfill of up to that cost (``openai.confirm_cost_above``)."""
        from superduperdb.predict.estimate import estimate_for

        return estimate_for(self, what, key=key, select=select, features=features, confirm=confirm)

    def check_cost(self, model: Model, *, key: Any, select: query.Find, features: Any = None) -> None:
        """Refuse (CostNotConfirmed) a predict whose estimated cost is above
        ``openai.confirm_cost_above`` and not confirmed; nothing is read when the setting is unset."""
        from superduperdb.predict.estimate import check_cost

        check_cost(self, model, key=key, select=select, features=features)

    def usage(self, watcher: str) -> dict[str, Any] | None:
        """What watcher ``watcher``'s API model used: totals, limits and 10-second ``series``."""
        from superduperdb.store.usage import usage_of

        return usage_of(self.metadata, watcher, series=True)

    def check_keys(
        self, select: query.Find, keys: Sequence[str], *, what: str = 'X', missing_table_ok: bool = False
    ) -> None:
        """Refuse, before anything runs, to compute over ``select`` from input ``keys`` no row
        has (a typo: the error suggests the close ones), or over a table whose key cannot key
        outputs. ``missing_table_ok``: a table not made yet (a watcher waits for it)."""
        check_row_key(self.databackend, select.table)
        check_input_keys(
            self.databackend,
            select.table,
            keys,
            filter=select.filter,
            what=what,
            missing_table_ok=missing_table_ok,
        )

    def partitions(self, select: query.Find) -> list[query.Find]:
        """``select`` split for a backfill's parallel jobs (``cluster.backfill_partitions``,
        each with at least ``cluster.backfill_partition_rows`` rows): see
        :func:`~superduperdb.predict.over_query.partition`."""
        from superduperdb.base.config import CFG

        cluster = CFG.cluster
        return over_query.partition(
            self, select, cluster.backfill_partitions, min_rows=cluster.backfill_partition_rows
        )

    def fit_over_query(
        self, model: Model, *, X: Any, y: Any = None, select: query.Find, **kwargs: Any
    ) -> Model:
        """Train ``model`` on the rows of ``select`` and store the trained version (see
        :func:`~superduperdb.predict.over_query.fit_over_query`)."""
        return over_query.fit_over_query(self, model, X=X, y=y, select=select, **kwargs)

    # ======================================================================
    # components (the registry: superduperdb.datalayer.components)
    # ======================================================================
    def add(self, component: C) -> C:
        """Store ``component`` (and the components it refers to) as a new version.

        Adding a component identical to its latest version keeps that version.
        Returns the component, with ``version`` set.
        """
        if isinstance(component, Component):
            component.before_add(self)
        self._components.store(component)
        if component.type_id in ('watcher', 'vector_index', 'keyword_index'):
            self._watchers = None  # an index adds its watcher
            self.vectors.forget()
            self.keywords.forget()
        component.on_added(self)
        return component

    def load(
        self, type_id: str, identifier: str, version: int | None = None, *, cached: bool = True
    ) -> Component:
        """Load a component (its latest version unless ``version`` is given).

        Loaded components are cached and shared; ``cached=False`` builds a private copy (for
        a caller that changes it in place, such as a fit, while others may use the shared one).
        """
        return self._components.load(type_id, identifier, version, cached=cached)

    def show(self, type_id: str | None = None, identifier: str | None = None) -> Any:
        """What is registered.

        ``db.show()`` -> ``{type_id: [identifiers]}``; ``db.show('encoder')`` ->
        identifiers; ``db.show('encoder', 'name')`` -> versions; ``db.show('job')`` -> recent
        jobs, newest first.
        """
        return self._components.show(type_id, identifier)

    def remove(
        self, type_id: str, identifier: str, version: int | None = None, *, force: bool = False
    ) -> None:
        """Remove a component version (all versions if None).

        Refused, unless ``force=True``, while another component depends on it or
        (for an encoder) a table column holds its values.
        """

        def forget() -> None:  # what this Datalayer cached of the removed versions
            self._watchers = None
            self.vectors.forget()
            self.keywords.forget()
            if type_id == 'encoder':
                self._registry.forget(identifier)

        retired = self.keywords.retire(identifier, version) if type_id == 'keyword_index' else list
        self._components.remove(type_id, identifier, version, force=force, forget=forget)
        for watcher, watcher_version in retired():  # a keyword index's text copy goes with it
            with contextlib.suppress(ComponentInUse):  # unless another keyword index shares it
                self._components.remove('watcher', watcher, watcher_version, force=False, forget=forget)

    # ======================================================================
    # watchers and jobs
    # ======================================================================
    def watchers_on(self, table: str, *, broken: list[dict[str, Any]] | None = None) -> list[Watcher]:
        """The active watchers of ``table`` (the records are reread at most once a second).

        Only the watchers of ``table`` are loaded. ``broken``: where to put the records of
        watchers that cannot load here (their model's class or package missing) instead of
        raising.
        """
        from superduperdb.components.watcher import Watcher

        now = time.monotonic()
        if self._watchers is None or now - self._watchers[0] > 1.0:
            records = self.metadata.latest('watcher')
            self._watchers = (now, records)
        found = []
        for record in self._watchers[1]:
            params = record['config']['params']
            if params.get('active', True) and params['select']['_query']['table'] == table:
                try:
                    watcher = self.load('watcher', record['identifier'], record['version'])
                except Exception:
                    if broken is None:
                        raise
                    logger.warning(
                        'watcher %r cannot load in this process; its job will fail with the reason',
                        record['identifier'],
                        exc_info=True,
                    )
                    broken.append(record)
                    continue
                assert isinstance(watcher, Watcher)
                found.append(watcher)
        return found

    def start_jobs(self, table: str, ids: list[Any]) -> list[Job]:
        """Start the jobs (watchers, vector indexes) of rows ``ids`` of ``table``, written
        earlier by a write whose jobs may never have run (its process killed after the commit:
        the server does this for an insert retried with its idempotency key). Rows whose outputs
        are current cost a lookup: a predict skips them."""
        return triggers.after_write(self, table, ids)

    def trigger_jobs(
        self,
        table: str,
        ids: list[Any],
        *,
        downloads: list[str] | None = None,
        policy: dict[str, Any] | None = None,
        fields: set[str] | None = None,
    ) -> list[Job]:
        """Start the jobs for rows ``ids`` just written to ``table``: see :func:`triggers.trigger_jobs`."""
        return triggers.trigger_jobs(self, table, ids, downloads=downloads, policy=policy, fields=fields)

    def rows_deleted(self, table: str, ids: list[Any]) -> list[Job]:
        """Rows ``ids`` of ``table`` are gone: drop their outputs and failure-ledger entries, and
        them from vector indexes (see :func:`superduperdb.freshness.triggers.rows_deleted`)."""
        return triggers.rows_deleted(self, table, ids)

    def status(self) -> list[dict[str, Any]]:
        """How fresh each watcher's outputs are, read from the database (any process reports
        the same, whether or not change capture runs in it).

        Per watcher: ``rows`` selected, ``current`` outputs (of the model's version and the
        row's input as it is now), ``stale`` (of the model's version, but the input changed
        since), ``failed`` rows (in the failure ledger), ``queued`` changes captured but not
        handled yet, ``backlog`` (rows still without a current output, plus the queued
        changes), ``jobs`` (pending or running), ``lag_s``: seconds since the oldest
        unhandled change on the database's clock (0 when nothing is waiting), and
        ``table_missing`` (its table does not exist: reported, not raised). See
        :mod:`superduperdb.freshness.report`.

        ``.vector_indexes``: per vector index whose engine this process has, what its last check
        against the stored outputs found and how long ago (checked again if due; see
        :meth:`~superduperdb.vector_search.indexes.VectorIndexes.status`).
        ``.keyword_indexes``: each keyword index checked (:meth:`KeywordIndexes.status`).
        """
        from superduperdb.freshness.report import watcher_status

        report = watcher_status(self)
        rows = listings.Rows(report)
        rows.vector_indexes = listings.Rows(self.vectors.status())
        rows.keyword_indexes = listings.Rows(self.keywords.status())
        return rows

    def evaluate(
        self,
        index: str | None = None,
        evaluation_set: str | None = None,
        *,
        keyword: str | None = None,
        fuse: str | dict[str, Any] | None = None,
        rerank: Any = None,
        rerank_top: int = 50,
        k: int = 10,
        filter: dict[str, Any] | None = None,
    ) -> Any:
        """Measure a search on ``evaluation_set``: recall@k, precision@k, MRR, nDCG@k, latency;
        kept in the database (see :mod:`superduperdb.vector_search.evaluate`).

        The search: vector index ``index`` alone, keyword index ``keyword`` alone
        (``db.evaluate(evaluation_set='set', keyword='kw')``), or both, fused by ``fuse``
        (``'rrf'``, ``'weighted'`` or a dict of ``fuse()``'s arguments); ``rerank``: a stored
        model's identifier that scores the first ``rerank_top`` again.
        """
        from superduperdb.vector_search.evaluate import evaluate

        if evaluation_set is None:
            raise QueryError('evaluate() needs an evaluation set: db.evaluate("vec", "my-set").')
        return evaluate(
            self,
            index,
            evaluation_set,
            keyword=keyword,
            fuse=fuse,
            rerank=rerank,
            rerank_top=rerank_top,
            k=k,
            filter=filter,
        )

    def stage(self, index: Any) -> Any:
        """Add a new version of a vector index (a new model, say) that does not serve yet: it is
        built and kept in step with writes beside the live one; :meth:`promote` makes it serve
        (see :mod:`superduperdb.vector_search.staging`)."""
        from superduperdb.vector_search.staging import stage

        return stage(self, index)

    def promote(self, index: str, evaluation_set: str, *, rule: str | None = None, k: int = 10) -> Any:
        """Evaluate the staged version of ``index`` and the live one; make the staged one serve
        if it passes ``rule`` (default ``'ndcg@<k> >= live'``). Returns what was found."""
        from superduperdb.vector_search.staging import promote

        return promote(self, index, evaluation_set, rule=rule, k=k)

    def rollback(self, index: str) -> int:
        """Make the version of ``index`` that served before the current one serve again."""
        from superduperdb.vector_search.staging import rollback

        return rollback(self, index)

    def evaluations(self, index: str | None = None) -> list[dict[str, Any]]:
        """The evaluations kept (of ``index``), oldest first."""
        return self.metadata.evaluations(index) if self.metadata.present() else []

    @property
    def cdc(self) -> Any:
        """Change capture for writes made by other applications: ``db.cdc.start()``."""
        if self._cdc is None:
            from superduperdb.freshness.cdc import ChangeCapture

            self._cdc = ChangeCapture(self)
        return self._cdc

    @property
    def started_cdc(self) -> Any:
        """This process's change capture if it was made (``db.cdc``), else None."""
        return self._cdc

    @property
    def chosen_executor(self) -> Executor | None:
        """The executor jobs run on, if one was chosen or made yet (``db.executor`` makes one)."""
        return self._executor

    @property
    def executor(self) -> Executor:
        """Where jobs run: ``CFG.cluster.executor`` (``local`` unless configured)."""
        if self._executor is None:
            from superduperdb.jobs import executor_from_config

            self._executor = executor_from_config()
        return self._executor

    @executor.setter
    def executor(self, value: Executor) -> None:
        self._executor = value

    def new_job(self, method: str, args: dict[str, Any] | None = None, **kw: Any) -> Job:
        from superduperdb.jobs.job import new_job

        job = new_job(method, args, **kw)
        job.created_at = self.metadata.now()  # the database's clock, as every job time
        return job

    def submit_jobs(self, jobs: list[Job]) -> list[Job]:
        """Record ``jobs`` and hand them to the executor (in order: dependencies first)."""
        if jobs and logger.isEnabledFor(logging.DEBUG):
            for job in jobs:
                logger.debug('job %s submitted: %s of %s', job.id, job.method, job.component or '-')
        return self.executor.submit(self, jobs) if jobs else []

    def submit_job(self, method: str, args: dict[str, Any] | None = None, **kw: Any) -> Job:
        """Record and start one job of a registered method (``predict``, ``fit``, ...)."""
        return self.submit_jobs([self.new_job(method, args, **kw)])[0]

    def job(self, job_id: str) -> Job:
        """A job by id (or a unique prefix of one), as recorded now."""
        return listings.find_job(self, job_id)

    def jobs(
        self, status: str | None = None, *, limit: int | None = 100, component: str | None = None
    ) -> list[Job]:
        """Recent jobs, newest first (``status``: pending, running, success or failed;
        ``component``: only jobs whose component starts with this, e.g. ``'watcher/'`` or
        ``'watcher/words@reviews.text/'``)."""
        return listings.recent_jobs(self, status, limit=limit, component=component)

    def failures(self, watcher: str) -> list[dict[str, Any]]:
        """The failure ledger of ``watcher``, newest first (see :mod:`superduperdb.freshness.ledger`)."""
        from superduperdb.freshness.ledger import failures

        return listings.Rows(failures(self, watcher))

    def retry_failed(self, watcher: str) -> Job:
        """Run ``watcher``'s model again over its failed rows now; returns the job."""
        from superduperdb.freshness.ledger import retry_failed

        return retry_failed(self, watcher)

    def cancel_job(self, job_id: str) -> Job:
        """Cancel a pending job, where the executor can (Dask); :class:`QueryError` saying why
        where it cannot."""
        return self.executor.cancel(self, self.job(job_id))

    def unfinished_jobs(self, component: str) -> list[Job]:
        """Jobs of ``component`` (a unique id) still pending or running (orphans excluded: see
        :mod:`superduperdb.jobs.orphans`)."""
        return listings.unfinished_jobs(self, component)

    def watch_job(self, job_id: str, *, out: Any = None, poll: float = 0.5) -> Job:
        """Print a job's log and progress as they grow, until it finishes; returns the job."""
        return listings.watch_job(self, job_id, out=out, poll=poll)

    def __reduce__(self) -> tuple[Any, ...]:
        """Sent to another process (multiprocessing's spawn and forkserver start methods, a
        pool's task arguments), a Datalayer travels as its :attr:`spec`: the receiving process
        opens the same database, once per process."""
        if self.spec is None:
            raise TypeError(
                f'This Datalayer ({self.databackend.describe()}) cannot be sent to another process: '
                'its database has no address another process can open (in memory, mongomock, or '
                'an engine or client object). Use a database file or server URI, or open the '
                'database in the other process with superduper(uri).'
            )
        from superduperdb.connect import reopen

        return (reopen, (self.spec,))

    def drop_superduperdb(self) -> Uninstalled:
        """Remove everything superduperdb made in this database, and say what
        (:mod:`superduperdb.datalayer.uninstall`): its tables, views, triggers, functions,
        schema, artifacts and index files. Your tables and rows stay, including tables made by
        inserting into a new name (listed as kept). Stop other processes using it first (a
        server, ``superduperdb cdc``, workers): they would make it again on their next write."""
        from superduperdb.datalayer.uninstall import drop_superduperdb

        if self._cdc is not None:
            self._cdc.stop()
            self._cdc = None
        return drop_superduperdb(self)

    def forget_caches(self) -> None:
        """Forget what was read from the metadata store (after it was emptied)."""
        with self._lock:
            self._components.loaded.clear()
            self._registry.forget()
            self._created.clear()
            self._watchers = None
            self.__dict__.pop('seal', None)
        self.vectors = VectorIndexes(self)
        self.keywords = KeywordIndexes(self)

    def close(self) -> None:
        """Stop change capture and the executor, and close the database connections.

        The db refuses further use afterwards (:class:`DatalayerClosed`): SQLAlchemy would
        otherwise open new connections silently, and a watcher's job would run with no executor.
        """
        if self._cdc is not None:
            self._cdc.stop()
        if self._executor is not None:
            self._executor.close()
        self.databackend.close()
        if self.metadata.backend is not self.databackend:
            self.metadata.backend.close()
        self.__class__ = _ClosedDatalayer


class _ClosedDatalayer(Closed, Datalayer):
    """A Datalayer after :meth:`~Datalayer.close`: its operations raise :class:`DatalayerClosed`
    (see :mod:`superduperdb.datalayer.closed`)."""

    OPERATIONS = operations(Datalayer)


def _described(q: Any) -> str:
    """A query for a DEBUG line: its kind, table, the fields it filters on and how many rows
    it writes, never a value (values are data: they stay out of logs)."""
    kind = type(q).__name__
    table = getattr(q, 'table', None)
    if table is None:
        return kind  # a raw SQLAlchemy statement: its SQL is logged as it runs
    parts = [f'{kind} on {table!r}']
    filter = getattr(q, 'filter', None)
    if filter:
        parts.append(f'filtering on {", ".join(map(str, filter))}')
    documents = getattr(q, 'documents', None)
    if documents is not None:
        parts.append(f'{len(documents)} rows')
    return ', '.join(parts)
