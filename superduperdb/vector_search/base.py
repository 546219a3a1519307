"""The interface every vector-search engine implements, and the choice of engine by name.

An engine is an index of vectors keyed by string ids. It knows nothing of databases or
models: ``VectorIndex`` feeds it vectors and turns its answers into rows. Three measures:

- ``cosine``: the score is the cosine similarity, higher is better. Stored vectors and
  queries are normalised to unit length (a zero vector stays zero and scores 0).
- ``dot``: the score is the dot product, higher is better.
- ``l2``: the score is the euclidean distance, lower is better.

Results always come best first.

>>> import numpy as np
>>> engine = engine_from_config('demo', dimensions=2, engine='inmemory')
>>> engine.add(['a', 'b'], np.array([[1.0, 0.0], [0.0, 1.0]]))
>>> ids, scores = engine.search(np.array([1.0, 0.1]), n=1)
>>> ids
['a']
"""

from __future__ import annotations

import abc
import contextlib
import importlib
import inspect
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

import numpy as np

from superduperdb.base.exceptions import ConfigError, EncodingError, QueryError

#: The measures an engine understands.
MEASURES = ('cosine', 'dot', 'l2')

#: Engine names and where they live; modules are imported only when the engine is used.
ENGINES = {
    'inmemory': 'superduperdb.vector_search.inmemory:InMemoryVectorEngine',
    'lancedb': 'superduperdb.vector_search.lancedb:LanceDBVectorEngine',
}


class VectorEngine(abc.ABC):
    """An index of vectors keyed by string ids.

    Subclasses implement the storage and the search; this class validates what goes in
    (ids, shapes, finite values, the measure, ``n``) so every engine rejects the same
    input with the same message.
    """

    #: The name ``engine_from_config`` knows the engine by.
    name: ClassVar[str]

    def __init__(self, identifier: str, dimensions: int, measure: str = 'cosine', **options: Any) -> None:
        if options:
            raise ConfigError(
                f'{type(self).__name__} got unknown options {sorted(options)}; '
                f'it accepts {sorted(engine_options(type(self)))}.'
            )
        if measure not in MEASURES:
            raise ConfigError(
                f'Unknown vector-search measure {measure!r}; choose one of {", ".join(MEASURES)}.'
            )
        if isinstance(dimensions, bool) or not isinstance(dimensions, int | np.integer) or dimensions < 1:
            raise ConfigError(
                f'Vector index {identifier!r}: dimensions must be a positive int, got {dimensions!r}.'
            )
        self.identifier = identifier
        self.dimensions = int(dimensions)
        self.measure = measure

    @property
    def higher_is_better(self) -> bool:
        """True for similarities (``cosine``, ``dot``), False for distances (``l2``)."""
        return self.measure != 'l2'

    @contextlib.contextmanager
    def building(self) -> Iterator[VectorEngine]:
        """Hold the engine alone while a build checks, clears and fills it (a persistent engine
        shared by several processes locks them out meanwhile; in memory there is nothing to do)."""
        yield self

    @abc.abstractmethod
    def add(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        """Add vectors; an id already present gets its new vector (upsert)."""

    @abc.abstractmethod
    def delete(self, ids: Sequence[str]) -> None:
        """Remove these ids; unknown ids are ignored."""

    @abc.abstractmethod
    def search(
        self, vector: np.ndarray, n: int, *, within: Sequence[str] | None = None
    ) -> tuple[list[str], np.ndarray]:
        """The ``n`` best ids for ``vector`` and their scores, best first.

        ``within`` restricts the search to those ids (unknown ones are ignored); the
        result then holds ``min(n, number of known ids in within)`` entries.
        """

    @abc.abstractmethod
    def __len__(self) -> int:
        """The number of vectors held."""

    @abc.abstractmethod
    def ids(self) -> list[str]:
        """Every id held, in no particular order."""

    @abc.abstractmethod
    def clear(self) -> None:
        """Drop every vector (and the engine's files, if it has any)."""

    def __repr__(self) -> str:
        name, identifier = type(self).__name__, self.identifier
        return f'{name}({identifier!r}, dimensions={self.dimensions}, measure={self.measure!r})'

    # -- validation shared by the engines ---------------------------------------------------

    def _prepare_vectors(self, ids: Sequence[str], vectors: Any) -> tuple[list[str], np.ndarray]:
        """Checked ids (duplicates: the last one wins) and a float32 matrix, normalised for cosine."""
        ids, matrix, scale = self._checked_vectors(ids, vectors)
        return ids, np.ascontiguousarray(scaled(matrix, scale))

    def _checked_vectors(
        self, ids: Sequence[str], vectors: Any
    ) -> tuple[list[str], np.ndarray, np.ndarray | None]:
        """Checked ids (duplicates: the last one wins), their float32 matrix as given, and for
        cosine each row's factor to unit length (:func:`scaled`; None for the other measures):
        an engine scales the rows into its own storage, with no normalised copy made first."""
        if isinstance(ids, str):
            raise EncodingError(
                f'Vector index {self.identifier!r}: ids must be a sequence of str, got one str.'
            )
        ids = list(ids)
        for id_ in ids:
            if type(id_) is not str:
                if not isinstance(id_, str):
                    kind = type(id_).__name__
                    raise EncodingError(
                        f'Vector index {self.identifier!r}: ids must be str, got {kind} {id_!r}.'
                    )
                ids = [str(i) for i in ids]  # str subclasses (numpy.str_) stored as plain str
                break
        try:
            matrix = np.asarray(vectors, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise EncodingError(
                f'Vector index {self.identifier!r}: vectors must be a 2-d array of numbers ({exc}).'
            ) from exc
        if matrix.ndim == 1 and len(ids) == 1:
            matrix = matrix.reshape(1, -1)
        if matrix.ndim != 2 or matrix.shape[1] != self.dimensions:
            got = matrix.shape[-1] if matrix.ndim else 'a scalar'
            raise EncodingError(
                f'Vector index {self.identifier!r} expects vectors of {self.dimensions} dimensions, '
                f'got {got} (array of shape {matrix.shape}).'
            )
        if matrix.shape[0] != len(ids):
            raise EncodingError(
                f'Vector index {self.identifier!r}: got {len(ids)} ids but {matrix.shape[0]} vectors.'
            )
        # each row's squared length, in one pass: NaN or inf where a value is (the finiteness
        # check), and what cosine scales by; values whose squares overflow float32 are rare
        squares = np.einsum('ij,ij->i', matrix, matrix)
        if not np.isfinite(squares).all():
            bad = [ids[i] for i in np.flatnonzero(~np.isfinite(matrix).all(axis=1))[:5]]
            if bad:
                raise EncodingError(
                    f'Vector index {self.identifier!r}: vectors must be finite; NaN or inf in ids {bad}.'
                )
            squares = np.einsum('ij,ij->i', matrix, matrix, dtype=np.float64)
        if len(set(ids)) < len(ids):
            last = {id_: i for i, id_ in enumerate(ids)}
            rows = np.fromiter(last.values(), dtype=np.intp, count=len(last))
            ids, matrix, squares = list(last), matrix[rows], squares[rows]
        if self.measure != 'cosine':
            return ids, matrix, None
        norms = np.sqrt(squares)
        scale = np.divide(1.0, norms, out=np.ones_like(norms), where=norms > 0)  # zero rows stay zero
        return ids, matrix, scale.astype(np.float32, copy=False)

    def _prepare_query(self, vector: Any, n: int) -> np.ndarray:
        """A checked float32 query vector, normalised for cosine."""
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            raise QueryError(f'Vector index {self.identifier!r}: n must be an int >= 1, got {n!r}.')
        try:
            query = np.asarray(vector, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise QueryError(
                f'Vector index {self.identifier!r}: the query must be a vector ({exc}).'
            ) from exc
        if query.ndim == 2 and query.shape[0] == 1:
            query = query[0]
        if query.ndim != 1 or query.shape[0] != self.dimensions:
            raise QueryError(
                f'Vector index {self.identifier!r} expects a query vector of {self.dimensions} dimensions, '
                f'got an array of shape {query.shape}.'
            )
        if not np.isfinite(query).all():
            raise QueryError(f'Vector index {self.identifier!r}: the query vector has NaN or inf values.')
        if self.measure == 'cosine':
            query = normalise(query[None, :])[0]
        return query

    def _exact_scores(self, matrix: np.ndarray, query: np.ndarray) -> np.ndarray:
        """Scores of these (prepared) rows against a (prepared) query."""
        if self.measure == 'l2':
            return np.asarray(np.linalg.norm(matrix - query, axis=1), dtype=np.float32)
        return np.asarray(matrix @ query, dtype=np.float32)

    def _best_first(self, scores: np.ndarray) -> np.ndarray:
        """Positions of ``scores`` ordered best first (stable on ties)."""
        return np.argsort(-scores if self.higher_is_better else scores, kind='stable')


def normalise(matrix: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length; zero rows stay zero (no NaN)."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.asarray(matrix / np.where(norms == 0, 1, norms), dtype=np.float32)


def scaled(matrix: np.ndarray, scale: np.ndarray | None, out: np.ndarray | None = None) -> np.ndarray:
    """``matrix``'s rows each multiplied by its factor in ``scale`` (into ``out`` if given);
    ``matrix`` itself (or copied into ``out``) when ``scale`` is None."""
    if scale is None:
        if out is None:
            return matrix
        out[...] = matrix
        return out
    return np.multiply(matrix, scale[:, None], out=out)


def engine_class(name: str) -> type[VectorEngine]:
    """The engine class registered under ``name``, imported on first use."""
    try:
        target = ENGINES[name]
    except KeyError:
        raise ConfigError(
            f'Unknown vector-search engine {name!r}; choose one of {", ".join(sorted(ENGINES))} '
            '(setting: vector_search.engine).'
        ) from None
    module, _, attr = target.partition(':')
    cls: type[VectorEngine] = getattr(importlib.import_module(module), attr)
    return cls


def engine_options(cls: type[VectorEngine]) -> list[str]:
    """The keyword options an engine class accepts beyond identifier, dimensions and measure."""
    params = inspect.signature(cls.__init__).parameters
    return [p for p, spec in params.items() if spec.kind is inspect.Parameter.KEYWORD_ONLY]


def engine_from_config(
    identifier: str, dimensions: int, measure: str = 'cosine', engine: str | None = None, **options: Any
) -> VectorEngine:
    """An engine for one index; ``engine`` defaults to ``CFG.vector_search.engine``.

    >>> engine_from_config('docs', dimensions=3, engine='inmemory')
    InMemoryVectorEngine('docs', dimensions=3, measure='cosine', rows=0)
    """
    from superduperdb.base.config import CFG

    cls = engine_class(engine or CFG.vector_search.engine)
    unknown = sorted(set(options) - set(engine_options(cls)))
    if unknown:
        raise ConfigError(
            f'Vector-search engine {cls.name!r} got unknown options {unknown}; '
            f'it accepts {engine_options(cls)}.'
        )
    return cls(identifier, dimensions, measure, **options)
