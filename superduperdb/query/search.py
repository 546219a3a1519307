"""The search parts of a query beside ``like()``: keyword matches, their fusion with vector
results, and reranking.

- :class:`Match`: ``match({'body': 'error 0x80070005'}, 'kw', n=10)``: the rows whose text
  best matches the words, in keyword index ``kw`` (the database's own full-text engine, or
  BM25 where it has none).
- :class:`Fuse`: how a query with both ``like()`` and ``match()`` ranks its rows: reciprocal
  rank fusion (``rrf``, the default) or weighted scores (``weighted``).
- :class:`Rerank`: the best ``top`` candidates scored again by a model of (query, row).

They are plain values; :mod:`superduperdb.vector_search.hybrid` runs them.

>>> from superduperdb import Collection
>>> q = Collection('docs').like({'body': 'disk'}, 'vec', n=20).match({'body': 'disk'}, 'kw', n=20)
>>> q.find({'lang': 'en'}).fuse('rrf', k=60).rerank('cross', top=20)  # doctest: +NORMALIZE_WHITESPACE
Find(like({'body': 'disk'}, 'vec', n=20), match({'body': 'disk'}, 'kw', n=20), table='docs',
     filter={'lang': 'en'}, fuse('rrf', k=60), rerank('cross', top=20))
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from superduperdb.base.exceptions import QueryError

FUSIONS = ('rrf', 'weighted')
PARTS = ('like', 'match')


def _positive(what: str, n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise QueryError(f'{what} takes a positive int, got {n!r}.')
    return n


def query_text(value: Any, what: str) -> tuple[str, str]:
    """``(key, text)`` of a search value such as ``{'body': 'disk full'}``."""
    if not isinstance(value, Mapping) or len(value) != 1:
        raise QueryError(
            f'{what} takes one field and its text, such as {{"body": "error 0x80070005"}}, got {value!r}.'
        )
    ((key, text),) = value.items()
    if not isinstance(key, str) or not isinstance(text, str):
        raise QueryError(
            f'{what} takes a field name and a text, such as {{"body": "disk full"}}, got {value!r}.'
        )
    return key, text


@dataclass(frozen=True)
class Match:
    """A keyword search: the ``n`` rows whose text best matches ``value`` in keyword index ``index``."""

    value: dict[str, str]
    index: str
    n: int = 10

    def __post_init__(self) -> None:
        query_text(self.value, 'match()')
        _positive('match(..., n=)', self.n)
        if not isinstance(self.index, str) or not self.index:
            raise QueryError(
                f'match(value, index) names a keyword index (db.show("keyword_index")), got {self.index!r}.'
            )

    @property
    def text(self) -> str:
        return query_text(self.value, 'match()')[1]

    def to_dict(self) -> dict[str, Any]:
        return {'match': {'value': dict(self.value), 'index': self.index, 'n': self.n}}

    @classmethod
    def from_dict(cls, data: Any) -> Match:
        if not isinstance(data, Mapping):
            raise QueryError(f'"match" takes {{"value", "index", "n"}}, got {data!r}.')
        return cls(data.get('value'), data.get('index'), data.get('n', 10))  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f'match({self.value!r}, {self.index!r}, n={self.n})'


@dataclass(frozen=True)
class Fuse:
    """How ``like()`` and ``match()`` results become one ranking.

    ``rrf``: each row scores ``sum(weight / (k + rank))`` over the parts that found it (ranks
    from 1), the usual reciprocal rank fusion (k=60). ``weighted``: each part's scores are
    scaled to 0..1 over its candidates (min-max) and summed with ``weights``. ``weights``:
    ``{'like': w, 'match': w}`` (1 each by default). ``n``: results kept (default: the larger
    of the parts' ``n``).
    """

    method: str = 'rrf'
    k: int = 60
    weights: tuple[tuple[str, float], ...] = ()
    n: int | None = None

    def __post_init__(self) -> None:
        if self.method not in FUSIONS:
            raise QueryError(f'fuse() method is one of {", ".join(FUSIONS)}, got {self.method!r}.')
        _positive('fuse(..., k=)', self.k)
        if self.n is not None:
            _positive('fuse(..., n=)', self.n)
        for part, weight in self.weights:
            if part not in PARTS:
                raise QueryError(f'fuse(weights=) takes weights of {" and ".join(PARTS)}, got {part!r}.')
            if (
                isinstance(weight, bool)
                or not isinstance(weight, int | float)
                or not 0 <= weight < float('inf')
            ):
                raise QueryError(f'fuse(weights=) takes non-negative numbers, got {part}: {weight!r}.')

    def weight(self, part: str) -> float:
        return float(dict(self.weights).get(part, 1.0))

    def to_dict(self) -> dict[str, Any]:
        return {'fuse': {'method': self.method, 'k': self.k, 'weights': dict(self.weights), 'n': self.n}}

    @classmethod
    def from_dict(cls, data: Any) -> Fuse:
        if not isinstance(data, Mapping):
            raise QueryError(f'"fuse" takes {{"method", "k", "weights", "n"}}, got {data!r}.')
        return fuse(
            data.get('method', 'rrf'), k=data.get('k', 60), weights=data.get('weights'), n=data.get('n')
        )

    def __repr__(self) -> str:
        shown = f'{self.method!r}, k={self.k}' if self.method == 'rrf' else repr(self.method)
        if self.weights:
            shown += f', weights={dict(self.weights)!r}'
        return f'fuse({shown}{f", n={self.n}" if self.n is not None else ""})'


def fuse(
    method: str = 'rrf', *, k: int = 60, weights: Mapping[str, float] | None = None, n: int | None = None
) -> Fuse:
    if weights is not None and not isinstance(weights, Mapping):
        raise QueryError(f'fuse(weights=) takes {{"like": w, "match": w}}, got {weights!r}.')
    return Fuse(method, k, tuple(sorted((weights or {}).items())), n)


@dataclass(frozen=True)
class Rerank:
    """Score the first ``top`` candidates again with ``model`` and keep the best ``n``.

    ``model``: a stored model's identifier or a :class:`~superduperdb.components.model.Model`
    whose inputs are ``(query, text)`` pairs and outputs a score each, higher better (such
    as ``FunctionModel('rr', object=lambda query, text: ...)``); a sentence-transformers
    ``CrossEncoder`` (its ``predict`` takes the pairs); or, in this process only, any
    function ``f(query, row) -> float``. ``key``: the row's field the model reads
    (default: the field the query searched). ``n``: results kept (default: as many as fused).
    """

    model: Any
    top: int = 50
    key: str | None = None
    n: int | None = None

    def __post_init__(self) -> None:
        _positive('rerank(..., top=)', self.top)
        if self.n is not None:
            _positive('rerank(..., n=)', self.n)
        if self.key is not None and (not isinstance(self.key, str) or not self.key):
            raise QueryError(f'rerank(key=) names the field the model reads, got {self.key!r}.')
        if (
            not (isinstance(self.model, str) and self.model)
            and not callable(self.model)
            and not hasattr(self.model, 'predict_values')
        ):
            raise QueryError(
                "rerank() takes a model: a stored model's identifier, a Model, or a function "
                f'f(query, row) -> score; got {self.model!r}.'
            )

    @property
    def name(self) -> str:
        if isinstance(self.model, str):
            return self.model
        return str(
            getattr(self.model, 'identifier', None)
            or getattr(self.model, '__name__', type(self.model).__name__)
        )

    def to_dict(self) -> dict[str, Any]:
        identifier = self.model if isinstance(self.model, str) else getattr(self.model, 'identifier', None)
        if not isinstance(identifier, str) or not identifier:
            raise QueryError(
                'A query that reranks with a function cannot be sent or stored: add the reranker '
                'as a model (db.add(superduper(f, identifier="my-reranker"))) and name it.'
            )
        return {'rerank': {'model': identifier, 'top': self.top, 'key': self.key, 'n': self.n}}

    @classmethod
    def from_dict(cls, data: Any) -> Rerank:
        if not isinstance(data, Mapping):
            raise QueryError(f'"rerank" takes {{"model", "top", "key", "n"}}, got {data!r}.')
        model = data.get('model')
        if not isinstance(model, str):
            raise QueryError(f'"rerank" names a stored model by its identifier, got {model!r}.')
        return cls(model, data.get('top', 50), data.get('key'), data.get('n'))  # type: ignore[arg-type]

    def __repr__(self) -> str:
        return f'rerank({self.name!r}, top={self.top}{f", n={self.n}" if self.n is not None else ""})'
