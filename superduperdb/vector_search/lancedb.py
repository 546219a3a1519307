"""LanceDB: vectors persisted in a Lance table, searched exactly or through an ANN index.

One table per index, ``<path>/<identifier>.lance`` (``path`` defaults to
``CFG.vector_search.path``), with two columns: ``id`` (string) and ``vector``
(``float32[dimensions]``). The measure and the index's training state are kept in the
``vector`` field's metadata, so a new engine object (another process, the next day) finds
the same data and refuses a table built for another measure or dimension.

- Writes are upserts (``merge_insert`` on ``id``); deletes are ``id IN (...)`` with the ids
  quoted as SQL literals (any string is a valid id).
- Below ``ann_threshold`` rows a search is exact (a flat scan). From there on an IVF index
  is trained (``index_type``, ``partition_rows`` rows per partition); new rows are folded
  into it by ``optimize`` and it is retrained once the table has grown by ``retrain_growth``
  since training. Rows not yet indexed are still searched (flat), so nothing is missed.
- ``within`` is a prefilter. Up to 256 ids the filtered rows are searched exactly; for
  larger sets the index is used and may probe more partitions than ``probe_fraction`` asks
  for until it has ``n`` hits. If a search still returns fewer than ``n`` while the filter
  matches more rows, it is redone exactly: a filtered search always returns
  ``min(n, matching rows)`` results. Past 4096 ids (with an index) the set is not sent as a
  filter: a search for more neighbours than ``n`` (twice what the set's share of the table
  should hold, widened until ``n`` are in the set) keeps those in the set, falling back to the
  prefilter when that would read over a fifth of the table.
- Scores are exact and identical in meaning to the in-memory engine's (cosine similarity, dot
  product, euclidean distance): from LanceDB's distances where those are exact (a flat scan,
  IVF_FLAT, a refined search), else recomputed in numpy from the returned vectors.

Cosine is implemented as the dot product of normalised vectors (zero vectors stay zero).
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import threading
from collections.abc import Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from superduperdb.base._deps import require
from superduperdb.base.exceptions import ConfigError
from superduperdb.vector_search.base import VectorEngine

INDEX_TYPES = ('IVF_FLAT', 'IVF_SQ', 'IVF_PQ', 'IVF_HNSW_SQ')
_INDEX_NAME = 'vector_idx'
_META = 'superduperdb:'
#: Writes (adds, deletes) after which small files are compacted even without an index.
_COMPACT_EVERY = 50
#: Old table versions are deleted by ``optimize`` once this old: long past any query still
#: reading one, short enough that row-at-a-time writes do not pile up files for days.
_KEEP_VERSIONS = timedelta(minutes=10)
#: ``within`` sets up to this size are searched exactly (a filtered scan), larger ones via the index.
_EXACT_WITHIN = 256
#: Larger ``within`` sets are not sent as a prefilter (an ``IN`` list of every id) but applied to
#: a wider search through the index (see ``_post_filtered``).
_PREFILTER_WITHIN = 4096
#: Unindexed rows, as a fraction of the indexed ones, that trigger folding them into the index.
_FOLD_FRACTION = 0.1


class LanceDBVectorEngine(VectorEngine):
    """Vectors in a LanceDB table; exact search when small, an IVF index when large.

    Options left as None take their value from ``CFG.vector_search`` when the engine is made.

    >>> import numpy as np, tempfile
    >>> with tempfile.TemporaryDirectory() as path:
    ...     LanceDBVectorEngine('demo', dimensions=2, path=path).add(['a', 'b'], np.eye(2))
    ...     LanceDBVectorEngine('demo', dimensions=2, path=path).search([0.9, 0.1], n=1)
    (['a'], array([0.9938837], dtype=float32))
    """

    name = 'lancedb'

    def __init__(
        self,
        identifier: str,
        dimensions: int,
        measure: str = 'cosine',
        *,
        path: str | None = None,
        ann_threshold: int | None = None,
        index_type: str | None = None,
        partition_rows: int | None = None,
        probe_fraction: float | None = None,
        refine_factor: int | None = None,
        retrain_growth: float | None = None,
    ) -> None:
        from superduperdb.base.config import CFG

        super().__init__(identifier, dimensions, measure)
        cfg = CFG.vector_search
        if path is None:  # a datalayer passes its database's own directory (see vector_search/indexes.py)
            path = cfg.path if cfg.path is not None else str(Path('~/.superduperdb/vectors').expanduser())
        self.path = str(path)
        self.ann_threshold = int(ann_threshold if ann_threshold is not None else cfg.ann_threshold)
        self.index_type = (index_type or cfg.index_type).upper()
        self.partition_rows = int(partition_rows or cfg.partition_rows)
        self.probe_fraction = float(probe_fraction if probe_fraction is not None else cfg.probe_fraction)
        self.refine_factor = refine_factor if refine_factor is not None else cfg.refine_factor
        self.retrain_growth = float(retrain_growth if retrain_growth is not None else cfg.retrain_growth)
        if self.index_type not in INDEX_TYPES:
            raise ConfigError(
                f'Unknown LanceDB index type {self.index_type!r}; choose one of {", ".join(INDEX_TYPES)} '
                '(setting: vector_search.index_type).'
            )
        if not 0 < self.probe_fraction <= 1:
            raise ConfigError(f'probe_fraction must be in (0, 1], got {self.probe_fraction}.')
        if self.partition_rows < 1:
            raise ConfigError(f'partition_rows must be >= 1, got {self.partition_rows}.')
        self.table_name = table_name(identifier)
        self._lock = threading.RLock()
        self._db: Any = None
        self._writes = 0
        self._bulk: str | None = None  # inside bulk(): 'append' (the table was empty) or 'merge'
        self._building = False  # inside building(): this process holds the table alone

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f', path={self.path!r})'

    def __getstate__(self) -> dict[str, Any]:
        # connections and locks stay behind; the table reopens from its path
        state = self.__dict__.copy()
        state.update(_lock=None, _db=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    @property
    def uri(self) -> str:
        """Where the table lives on disk."""
        if _is_url(self.path):  # object storage: s3://bucket/vectors
            return f'{self.path.rstrip("/")}/{self.table_name}.lance'
        return str(Path(self.path) / f'{self.table_name}.lance')

    # -- the interface ---------------------------------------------------------------------

    def add(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        ids, matrix = self._prepare_vectors(ids, vectors)
        if not ids:
            return
        with self._lock, self._across_processes(exclusive=False):
            table = self._open(create=True)
            data = self._arrow(ids, matrix)
            if self._bulk == 'append':  # a build into an empty table: ids are new, no merge by id
                table.add(data)
                return
            table.merge_insert('id').when_matched_update_all().when_not_matched_insert_all().execute(data)
            if not self._bulk:
                self._maintain(table)

    @contextlib.contextmanager
    def bulk(self) -> Iterator[LanceDBVectorEngine]:
        """Many adds in a row (an index built from stored vectors, unique ids): the ANN index is
        trained once, at the end, instead of at each size it passes on the way (50k, 100k,
        200k, ...: about as much work again as the last training); into an empty table the
        vectors are appended rather than merged by id."""
        with self._lock:
            self._bulk = 'append' if len(self) == 0 else 'merge'
            try:
                yield self
            finally:
                self._bulk = None
                table = self._open(create=False)
                if table is not None:
                    self._maintain(table)

    @contextlib.contextmanager
    def building(self) -> Iterator[LanceDBVectorEngine]:
        """Hold the table alone while it is checked, dropped and filled again (a build): other
        processes on this machine building it wait, then find it filled; their writes wait."""
        with self._lock, self._across_processes(exclusive=True):
            self._building = True
            try:
                yield self
            finally:
                self._building = False

    @contextlib.contextmanager
    def _across_processes(self, *, exclusive: bool) -> Iterator[None]:
        """A lock file beside the table (``<table>.lock``): builds exclusive, writes shared.

        Without it, four processes building one index at once (replicas starting together)
        dropped the table under each other's writes ("Not found: .../data/....lance", a failed
        update job). Not on object storage, which has no locks: build from one process there.
        """
        if self._building or _is_url(self.path):
            yield
            return
        import fcntl

        Path(self.path).mkdir(parents=True, exist_ok=True)
        fd = os.open(Path(self.path) / f'{self.table_name}.lock', os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # releases the lock

    def delete(self, ids: Sequence[str]) -> None:
        if isinstance(ids, str):
            ids = [ids]
        ids = list(dict.fromkeys(ids))
        if not ids:
            return
        with self._lock, self._across_processes(exclusive=False):
            table = self._open(create=False)
            if table is None:
                return
            table.delete(in_filter(ids))
            self._maintain(table)

    def search(
        self, vector: np.ndarray, n: int, *, within: Sequence[str] | None = None
    ) -> tuple[list[str], np.ndarray]:
        query = self._prepare_query(vector, n)
        table = self._open(create=False)
        wanted = None
        if within is not None:
            wanted = {within} if isinstance(within, str) else set(within)
        if table is None or wanted == set():
            return [], np.empty(0, dtype=np.float32)
        partitions = self._partitions(table)
        result = None
        if wanted is not None and partitions and len(wanted) > _PREFILTER_WITHIN:
            result = self._post_filtered(table, query, n, wanted, partitions)
        where = None
        if wanted is not None and result is None:
            where = in_filter(sorted(wanted))
            if len(wanted) <= _EXACT_WITHIN:
                partitions = 0  # a few ids: an exact filtered scan costs no more than the index
        if result is None:
            result = self._query(table, query, n, where, partitions)
        # the probed partitions held too few matches: fall back to an exact filtered search
        if (
            where is not None
            and partitions
            and result.num_rows < n
            and table.count_rows(where) > result.num_rows
        ):
            result = self._query(table, query, n, where, partitions=0)
        ids = result.column('id').to_pylist()
        if not ids:
            return [], np.empty(0, dtype=np.float32)
        if 'vector' in result.column_names:  # distances from a quantized index: recomputed
            flat = result.column('vector').combine_chunks().flatten().to_numpy(zero_copy_only=False)
            scores = self._exact_scores(flat.astype(np.float32, copy=False).reshape(len(ids), -1), query)
        else:
            scores = self._scores_of(result.column('_distance').to_numpy())
        order = self._best_first(scores)
        return [ids[i] for i in order.tolist()], scores[order]

    def _post_filtered(
        self, table: Any, query: np.ndarray, n: int, wanted: set[str], partitions: int
    ) -> Any | None:
        """The ``n`` best of ``wanted`` from a wider search through the index, kept if they are
        in ``wanted``: for large sets, where a prefilter would send every id as a literal.
        Asks for twice the hits the set's share of the table should give, four times more
        each time that falls short; None past a fifth of the table (then: the prefilter)."""
        total = max(1, int(table.count_rows()))
        k = max(n, math.ceil(2 * n * total / len(wanted)))
        while k <= max(n, total // 5):
            result = self._query(table, query, k, None, partitions)
            keep = [i for i, id_ in enumerate(result.column('id').to_pylist()) if id_ in wanted]
            if len(keep) >= n:
                return result.take(keep[:n])
            k *= 4
        return None

    def __len__(self) -> int:
        table = self._open(create=False)
        return 0 if table is None else int(table.count_rows())

    def ids(self) -> list[str]:
        table = self._open(create=False)
        if table is None:
            return []
        ids: list[str] = table.search().select(['id']).limit(None).to_arrow().column('id').to_pylist()
        return ids

    def clear(self) -> None:
        with self._lock:
            self._connect().drop_table(self.table_name, ignore_missing=True)
            self._writes = 0

    # -- table access ----------------------------------------------------------------------

    def _connect(self) -> Any:
        if self._db is None:
            lancedb = require('lancedb', extra='lancedb', what='LanceDB vector search')
            options: dict[str, str] = {}
            if _is_url(self.path):  # s3://bucket/prefix: LanceDB in the same bucket as a lake
                from superduperdb.backends.lake.formats import object_store_options

                options = object_store_options(self.path)
            else:
                Path(self.path).mkdir(parents=True, exist_ok=True)
            # interval 0: every read sees the latest version, also writes by other processes
            self._db = lancedb.connect(
                self.path, read_consistency_interval=timedelta(0), storage_options=options or None
            )
        return self._db

    def _open(self, *, create: bool) -> Any:
        """The table, checked against this engine; None if absent and not ``create``.

        Opened afresh by every call (a fraction of a millisecond), so a table dropped or
        rebuilt through another engine object or process is never read through a stale handle.
        """
        db = self._connect()
        try:
            table = db.open_table(self.table_name)
        except ValueError:  # LanceDB's "Table ... was not found"
            if not _is_url(self.uri) and Path(self.uri).exists():
                raise
            if not create:
                return None
            table = db.create_table(self.table_name, schema=self._schema(), exist_ok=True)
        self._check(table)
        return table

    def _schema(self) -> Any:
        pa = require('pyarrow', extra='lancedb', what='LanceDB vector search')
        vector = pa.field(
            'vector',
            pa.list_(pa.float32(), self.dimensions),
            nullable=False,
            metadata={f'{_META}measure': self.measure},
        )
        return pa.schema([pa.field('id', pa.string(), nullable=False), vector])

    def _check(self, table: Any) -> None:
        field = table.schema.field('vector')
        stored_dims = field.type.list_size
        if stored_dims != self.dimensions:
            raise ConfigError(
                f'The LanceDB table {self.uri} holds vectors of {stored_dims} dimensions; '
                f'vector index {self.identifier!r} expects {self.dimensions}. '
                'Use another identifier, or clear() the table to rebuild it.'
            )
        stored_measure = _metadata(field).get('measure', self.measure)
        if stored_measure != self.measure:
            raise ConfigError(
                f'The LanceDB table {self.uri} was built for measure {stored_measure!r}, '
                f'not {self.measure!r}. Use another identifier, or clear() the table to rebuild it.'
            )

    def _arrow(self, ids: list[str], matrix: np.ndarray) -> Any:
        import pyarrow as pa

        vectors = pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1)), self.dimensions)
        return pa.Table.from_arrays([pa.array(ids, type=pa.string()), vectors], schema=self._schema())

    # -- search ----------------------------------------------------------------------------

    @property
    def _metric(self) -> str:
        return 'l2' if self.measure == 'l2' else 'dot'  # cosine: dot of normalised vectors

    def _partitions(self, table: Any) -> int:
        """Partitions of the trained index, 0 when the table has none."""
        return int(_metadata(table.schema.field('vector')).get('partitions', 0))

    def _scores_of(self, distances: np.ndarray) -> np.ndarray:
        """Scores in the engine's meaning from LanceDB's exact distances: ``dot`` is ``1 - x.q``,
        ``l2`` the squared euclidean distance."""
        distances = distances.astype(np.float32, copy=False)
        if self.measure == 'l2':
            return np.sqrt(np.maximum(distances, 0))
        return np.float32(1) - distances

    def _exact_distances(self, partitions: int) -> bool:
        """Whether a search's distances are exact: a flat scan, an IVF_FLAT index, or candidates
        re-ranked by exact distance (``refine_factor``). Else the vectors are read back too (a
        random read per hit: 4 ms of a 9 ms search at 1M rows) and scores recomputed from them."""
        return not partitions or self.index_type == 'IVF_FLAT' or bool(self.refine_factor)

    def _query(self, table: Any, query: np.ndarray, n: int, where: str | None, partitions: int) -> Any:
        columns = ['id', '_distance'] if self._exact_distances(partitions) else ['id', 'vector', '_distance']
        builder = (
            table.search(query, vector_column_name='vector')
            .distance_type(self._metric)
            .select(columns)
            .limit(n)
        )
        if partitions:
            probes = max(1, min(partitions, math.ceil(partitions * self.probe_fraction)))
            builder = builder.nprobes(probes)
            if where is not None:
                builder = builder.maximum_nprobes(0)  # keep probing until n matches are found
            if self.refine_factor:
                builder = builder.refine_factor(int(self.refine_factor))
        else:
            builder = builder.bypass_vector_index()
        if where is not None:
            builder = builder.where(where, prefilter=True)
        return builder.to_arrow()

    # -- upkeep ----------------------------------------------------------------------------

    def _maintain(self, table: Any) -> None:
        """Train, extend or retrain the ANN index as the table grows; compact small files."""
        self._writes += 1
        rows = table.count_rows()
        trained = int(_metadata(table.schema.field('vector')).get('trained_rows', 0))
        if rows >= self.ann_threshold and (not trained or rows > trained * (1 + self.retrain_growth)):
            self._train(table, rows)
            return
        if trained:
            stats = table.index_stats(_INDEX_NAME)
            if stats is not None and stats.num_unindexed_rows > _FOLD_FRACTION * max(
                stats.num_indexed_rows, 1
            ):
                self._optimize(table)
                return
        if self._writes >= _COMPACT_EVERY:
            self._optimize(table)

    def _optimize(self, table: Any) -> None:
        table.optimize(cleanup_older_than=_KEEP_VERSIONS)
        self._writes = 0

    def _train(self, table: Any, rows: int) -> None:
        from lancedb.index import BTree, IvfFlat, IvfHnswSq, IvfPq, IvfSq

        partitions = max(1, min(rows // self.partition_rows, 4096))
        config_class = {'IVF_FLAT': IvfFlat, 'IVF_SQ': IvfSq, 'IVF_PQ': IvfPq, 'IVF_HNSW_SQ': IvfHnswSq}
        config = config_class[self.index_type](distance_type=self._metric, num_partitions=partitions)
        # compact first: the index is built from fewer, larger files
        table.optimize(cleanup_older_than=_KEEP_VERSIONS)
        table.create_index('vector', config=config, replace=True, name=_INDEX_NAME)
        table.create_index('id', config=BTree(), replace=True)
        table.update_field_metadata(
            {
                'path': 'vector',
                'metadata': {f'{_META}trained_rows': str(rows), f'{_META}partitions': str(partitions)},
            }
        )
        self._writes = 0


def in_filter(ids: Sequence[str]) -> str:
    """A SQL filter ``id IN (...)`` with each id quoted as a string literal.

    >>> in_filter(['a', "it's"])
    "id IN ('a', 'it''s')"
    """
    return 'id IN (' + ', '.join("'" + id_.replace("'", "''") + "'" for id_ in ids) + ')'


def table_name(identifier: str) -> str:
    """A LanceDB table name for an index identifier: itself when allowed, else a safe, unique form.

    >>> table_name('my-index')
    'my-index'
    >>> table_name('docs/text')
    'docs_text-600d1a86'
    """
    if re.fullmatch(r'[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*', identifier) and len(identifier) <= 128:
        return identifier
    digest = hashlib.sha1(identifier.encode()).hexdigest()[:8]
    return re.sub(r'[^A-Za-z0-9_\-]', '_', identifier)[:100] + '-' + digest


def _metadata(field: Any) -> dict[str, str]:
    """The ``superduperdb:`` entries of an Arrow field's metadata, prefix removed."""
    raw = field.metadata or {}
    out = {}
    for key, value in raw.items():
        key = key.decode() if isinstance(key, bytes) else key
        if key.startswith(_META):
            out[key[len(_META) :]] = value.decode() if isinstance(value, bytes) else value
    return out


def _is_url(path: str) -> bool:
    """Whether ``path`` is an object-storage URL (``s3://...``) rather than a directory."""
    return '://' in path and not path.startswith('file://')
