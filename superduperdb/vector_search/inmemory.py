"""Exact vector search in numpy: one float32 matrix and a map from id to row.

A search is one matrix-vector product and ``np.argpartition`` for the top ``n`` (only those
``n`` get sorted). Rows are kept packed: an upsert overwrites its row, a delete moves the
last rows into the holes, and appends grow the matrix by doubling its capacity, so adding
one vector at a time costs amortised O(1) copies.

Nothing is stored on disk: ``VectorIndex`` rebuilds the engine from the vectors kept in the
database.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence

import numpy as np

from superduperdb.vector_search.base import VectorEngine, scaled


class InMemoryVectorEngine(VectorEngine):
    """Exact search over vectors held in memory.

    >>> import numpy as np
    >>> engine = InMemoryVectorEngine('demo', dimensions=2, measure='l2')
    >>> engine.add(['a', 'b', 'c'], np.array([[0, 0], [3, 4], [1, 1]]))
    >>> engine.search(np.array([0, 0]), n=2)
    (['a', 'c'], array([0.       , 1.4142135], dtype=float32))
    """

    name = 'inmemory'

    def __init__(
        self, identifier: str, dimensions: int, measure: str = 'cosine', *, initial_capacity: int = 1024
    ) -> None:
        super().__init__(identifier, dimensions, measure)
        self.initial_capacity = max(1, int(initial_capacity))
        self._lock = threading.RLock()
        self._reset()

    def _reset(self) -> None:
        self._matrix = np.empty((0, self.dimensions), dtype=np.float32)
        # squared row norms, kept for l2: |x - q|^2 = |x|^2 - 2 x.q + |q|^2
        self._sq_norms = np.empty(0, dtype=np.float32)
        self._size = 0
        self._ids: list[str] = []
        self._row_of: dict[str, int] = {}

    def __len__(self) -> int:
        return self._size

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f', rows={self._size})'

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._ids)

    def clear(self) -> None:
        with self._lock:
            self._reset()

    def add(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        ids, matrix, scale = self._checked_vectors(ids, vectors)
        if not ids:
            return
        with self._lock:
            row_of = self._row_of
            if row_of and not row_of.keys().isdisjoint(ids):  # some replace rows held
                matrix, scale = scaled(matrix, scale), None
                rows = np.fromiter((row_of.get(id_, -1) for id_ in ids), dtype=np.intp, count=len(ids))
                known = rows >= 0
                self._matrix[rows[known]] = matrix[known]
                if self.measure == 'l2':
                    self._sq_norms[rows[known]] = _sq_norms(matrix[known])
                fresh = np.flatnonzero(~known)
                matrix = matrix[fresh]
                ids = [ids[i] for i in fresh.tolist()]
            if ids:  # new rows: copied once, into the rows after the last
                start, stop = self._size, self._size + len(ids)
                self._ensure_capacity(stop)
                scaled(matrix, scale, out=self._matrix[start:stop])  # normalised as they are copied
                if self.measure == 'l2':  # only l2 needs the norms
                    self._sq_norms[start:stop] = _sq_norms(matrix)
                row_of.update(zip(ids, range(start, stop)))
                self._ids.extend(ids)
                self._size = stop

    def reserve(self, rows: int) -> None:
        """Make room for ``rows`` vectors in all, so that adding them copies none twice.

        Growing by doubling holds the old matrix and the new one at once while copying (up to
        three times the vectors' size, at the step past a power of two); an index whose size
        is known up front (a build from stored vectors) asks for exactly that much.
        """
        with self._lock:
            if rows > len(self._matrix):
                self._resize(int(rows))

    def delete(self, ids: Sequence[str]) -> None:
        if isinstance(ids, str):
            ids = [ids]
        with self._lock:
            gone = sorted({self._row_of.pop(id_) for id_ in ids if id_ in self._row_of})
            if not gone:
                return
            size = self._size - len(gone)
            # swap-remove: the surviving rows past the new end fill the holes below it
            holes = [row for row in gone if row < size]
            gone_set = set(gone)
            movers = [row for row in range(size, self._size) if row not in gone_set]
            if holes:
                self._matrix[holes] = self._matrix[movers]
                if self.measure == 'l2':
                    self._sq_norms[holes] = self._sq_norms[movers]
                for hole, mover in zip(holes, movers):
                    id_ = self._ids[mover]
                    self._ids[hole] = id_
                    self._row_of[id_] = hole
            del self._ids[size:]
            self._size = size
            if self._size < len(self._matrix) // 4 and len(self._matrix) > self.initial_capacity:
                self._resize(max(self.initial_capacity, len(self._matrix) // 2))

    def search(
        self, vector: np.ndarray, n: int, *, within: Sequence[str] | None = None
    ) -> tuple[list[str], np.ndarray]:
        query = self._prepare_query(vector, n)
        with self._lock:
            if within is None:
                rows = None
                scores = self._scores(self._matrix[: self._size], self._sq_norms[: self._size], query)
            else:
                if isinstance(within, str):
                    within = [within]
                rows = self._rows_of(within)
                if 2 * len(rows) > self._size:  # most rows: one product beats copying them out
                    size = self._size
                    scores = self._scores(self._matrix[:size], self._sq_norms[:size], query)[rows]
                else:
                    norms = self._sq_norms[rows] if self.measure == 'l2' else self._sq_norms
                    scores = self._scores(self._matrix[rows], norms, query)
            top = self._top(scores, n)
            found = top if rows is None else rows[top]
            hits = [self._ids[row] for row in found.tolist()]
            if self.measure == 'l2':
                # the expanded form above loses precision for near neighbours: recompute these
                exact = self._exact_scores(self._matrix[found], query)
                order = self._best_first(exact)
                return [hits[i] for i in order.tolist()], exact[order]
            return hits, scores[top]

    # -- internals -------------------------------------------------------------------------

    def _rows_of(self, ids: Sequence[str]) -> np.ndarray:
        """The rows holding ``ids``, each once (ids the engine does not hold left out): one
        lookup per id at C speed; a list with repeats (rare: a filter's keys are unique) is
        made unique by sorting."""
        rows = np.fromiter(map(self._row_of.get, ids, itertools.repeat(-1)), dtype=np.intp, count=len(ids))
        if rows.size and rows.min() < 0:
            rows = rows[rows >= 0]
        if len(set(ids)) < len(ids):
            rows = np.unique(rows)
        return rows

    def _scores(self, matrix: np.ndarray, sq_norms: np.ndarray, query: np.ndarray) -> np.ndarray:
        products = matrix @ query
        if self.measure != 'l2':
            return products
        # squared distance less |q|^2: same order, and the exact distance is computed for the top n
        return sq_norms - 2 * products

    def _top(self, scores: np.ndarray, n: int) -> np.ndarray:
        """Positions of the ``n`` best scores, best first."""
        keys = -scores if self.higher_is_better else scores
        if n < len(keys):
            part = np.argpartition(keys, n - 1)[:n]
            return part[np.argsort(keys[part], kind='stable')]
        return np.argsort(keys, kind='stable')

    def _ensure_capacity(self, rows: int) -> None:
        if rows > len(self._matrix):
            self._resize(max(rows, 2 * len(self._matrix), self.initial_capacity))

    def _resize(self, capacity: int) -> None:
        matrix = np.empty((capacity, self.dimensions), dtype=np.float32)
        matrix[: self._size] = self._matrix[: self._size]
        self._matrix = matrix
        if self.measure == 'l2':
            sq_norms = np.empty(capacity, dtype=np.float32)
            sq_norms[: self._size] = self._sq_norms[: self._size]
            self._sq_norms = sq_norms


def _sq_norms(matrix: np.ndarray) -> np.ndarray:
    return np.einsum('ij,ij->i', matrix, matrix)
