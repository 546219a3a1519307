"""Backend-free query objects: build them anywhere, run them with ``db.execute``.

The same objects run on every backend: Mongo-style filters become SQL
``WHERE`` clauses on SQL databases and native filters on MongoDB.

>>> from superduperdb import Collection
>>> coll = Collection('products')
>>> coll.find({'price': {'$lt': 10}}, {'name': 1}).sort('price', -1).limit(5)
Find(table='products', filter={'price': {'$lt': 10}}, projection={'name': 1}, sort=(('price', -1),), limit=5)
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from superduperdb.base.document import Document
from superduperdb.base.exceptions import QueryError
from superduperdb.query.filters import (
    INT_MAX,
    check_field_path,
    check_sort_keys,
    check_table_name,
    validate_filter,
    validate_update,
)
from superduperdb.query.search import Fuse, Match, Rerank, fuse


def _projection(projection: Mapping[str, Any] | Sequence[str] | None) -> dict[str, int] | None:
    if projection is None:
        return None
    if isinstance(projection, str):
        projection = [projection]
    if not isinstance(projection, Mapping):
        projection = {key: 1 for key in projection}
    values = {bool(v) for k, v in projection.items() if k != '_id'}
    if len(values) > 1:
        raise QueryError(
            f'A projection either includes fields ({{"a": 1}}) or excludes them ({{"a": 0}}), '
            f'not both: {dict(projection)!r}.'
        )
    for key in projection:
        check_field_path(key)
    return {k: int(bool(v)) for k, v in projection.items()}


def _count(what: str, n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= INT_MAX:
        raise QueryError(f'{what}() takes a non-negative int (at most 2**63 - 1), got {n!r}.')
    return n


@dataclass(frozen=True)
class Query:
    """Base of every query: it names the table/collection it runs on."""

    table: str

    def __post_init__(self) -> None:
        check_table_name(self.table)


@dataclass(frozen=True)
class Find(Query):
    """Select documents; build with ``.sort()``, ``.limit()``, ``.skip()``."""

    filter: dict[str, Any] = field(default_factory=dict)
    projection: dict[str, int] | None = None
    sort_by: tuple[tuple[str, int], ...] = ()
    limit_n: int | None = None
    skip_n: int = 0
    #: a vector search: with ``like_first`` it runs before the filter, else among the matching rows
    similar: Like | None = None
    like_first: bool = False
    #: a keyword search (``like_first`` applies to it too); with ``similar``, the two are fused
    matched: Match | None = None
    #: how ``similar`` and ``matched`` results are fused (None: reciprocal rank fusion)
    fusion: Fuse | None = None
    #: the candidates scored again by a model
    reranker: Rerank | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        validate_filter(self.filter)
        if self.limit_n is not None:
            _count('limit', self.limit_n)
        _count('skip', self.skip_n)
        if (self.fusion is not None or self.reranker is not None) and not self.searches:
            raise QueryError(
                'fuse() and rerank() order the results of like() and match(): chain them after one, '
                "e.g. coll.like({'body': 'a query'}, 'my-index').rerank('my-reranker')."
            )

    def like(self, value: Any, index: str, n: int = 10, *, chunks: bool = False) -> Find:
        """Search among the rows this query matches: the ``n`` most similar to ``value``.

        Filter-then-search returns ``n`` results whenever at least ``n`` rows match. Over an
        index of this table's chunks (see :meth:`Collection.chunks`), each row comes once,
        scored by its best chunk, with its matching chunks under ``_chunks``; ``chunks=True``
        returns the ``n`` best chunks themselves.
        """
        if self.similar is not None:
            raise QueryError('A query takes one like(); this one already has one.')
        return dataclasses.replace(self, similar=Like(value, index, n, chunks), like_first=False)

    def match(self, value: dict[str, str], index: str, n: int = 10) -> Find:
        """Search among the rows this query matches: the ``n`` whose text best matches the words
        of ``value`` (``{'body': 'error 0x80070005'}``) in keyword index ``index``, best first, each
        with its ``_score``. With :meth:`like` too, the two are fused (:meth:`fuse`)."""
        if self.matched is not None:
            raise QueryError('A query takes one match(); this one already has one.')
        return dataclasses.replace(self, matched=Match(value, index, n), like_first=False)

    def fuse(
        self,
        method: str = 'rrf',
        *,
        k: int = 60,
        weights: Mapping[str, float] | None = None,
        n: int | None = None,
    ) -> Find:
        """How this query's ``like()`` and ``match()`` results are ranked together: ``'rrf'``
        (reciprocal rank fusion, ``k``) or ``'weighted'`` (each part's scores scaled to 0..1,
        summed with ``weights`` such as ``{'like': 0.7, 'match': 0.3}``); ``n`` results (default:
        the larger of the two parts' ``n``). Each result has ``_scores`` and ``_ranks`` by part."""
        return dataclasses.replace(self, fusion=fuse(method, k=k, weights=weights, n=n))

    def rerank(self, model: Any, top: int = 50, *, key: str | None = None, n: int | None = None) -> Find:
        """Score the first ``top`` results again with ``model`` (see
        :class:`~superduperdb.query.search.Rerank`) and keep the best ``n``, best first."""
        return dataclasses.replace(self, reranker=Rerank(model, top, key, n))

    @property
    def searches(self) -> bool:
        """Whether this query searches (``like``, ``match``) rather than reads rows in order."""
        return self.similar is not None or self.matched is not None

    def sort(self, key: str | Sequence[tuple[str, int]], direction: int = 1) -> Find:
        """Order by ``key`` (1 ascending, -1 descending) or a list of ``(key, direction)``."""
        pairs = [(key, direction)] if isinstance(key, str) else list(key)
        check_sort_keys(len(self.sort_by) + len(pairs))
        for name, d in pairs:
            check_field_path(name)
            if d not in (1, -1):
                raise QueryError(f'Sort direction for {name!r} must be 1 or -1, got {d!r}.')
        return dataclasses.replace(self, sort_by=self.sort_by + tuple(pairs))

    def limit(self, n: int) -> Find:
        """At most ``n`` documents."""
        return dataclasses.replace(self, limit_n=_count('limit', n))

    def skip(self, n: int) -> Find:
        """Skip the first ``n`` documents."""
        return dataclasses.replace(self, skip_n=_count('skip', n))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form (for component configs, job records and the wire): see :func:`query_from_dict`."""
        return {
            'kind': type(self).__name__.lower(),
            'table': self.table,
            'filter': self.filter,
            'projection': self.projection,
            'sort': [list(pair) for pair in self.sort_by],
            'limit': self.limit_n,
            'skip': self.skip_n,
            **(self.similar.to_dict(self.like_first) if self.similar is not None else {}),
            **(_first(self.matched.to_dict(), self.like_first) if self.matched is not None else {}),
            **(self.fusion.to_dict() if self.fusion is not None else {}),
            **(self.reranker.to_dict() if self.reranker is not None else {}),
        }

    def to_projection(self, projection: dict[str, int]) -> Find:
        """The same selection, reading only the fields of ``projection``."""
        return dataclasses.replace(self, projection=_projection(projection))

    def restrict(self, key: str, ids: Sequence[Any]) -> Find:
        """The same selection narrowed to the rows whose ``key`` is in ``ids`` (no limit or skip)."""
        narrowed = {key: {'$in': list(ids)}}
        return dataclasses.replace(
            self,
            filter={'$and': [self.filter, narrowed]} if self.filter else narrowed,
            limit_n=None,
            skip_n=0,
        )

    def __repr__(self) -> str:
        parts = [f'table={self.table!r}', f'filter={self.filter!r}']
        if self.projection is not None:
            parts.append(f'projection={self.projection!r}')
        if self.sort_by:
            parts.append(f'sort={self.sort_by!r}')
        if self.limit_n is not None:
            parts.append(f'limit={self.limit_n!r}')
        if self.skip_n:
            parts.append(f'skip={self.skip_n!r}')
        searches = [repr(s) for s in (self.similar, self.matched) if s is not None]
        parts[0:0] = searches if self.like_first else []
        parts.extend([] if self.like_first else searches)
        parts.extend(repr(s) for s in (self.fusion, self.reranker) if s is not None)
        return f'{type(self).__name__}({", ".join(parts)})'


def _first(part: dict[str, Any], first: bool) -> dict[str, Any]:
    ((name, value),) = part.items()
    return {name: {**value, 'first': first}}


@dataclass(frozen=True)
class Like:
    """A vector search: rows most similar to ``value`` in vector index ``index``.

    ``value``: a document (``{'text': 'a query'}``, encoded by the index's model, or by
    its compatible model for that key), a raw vector, or ``{'_id': id}`` for the rows
    most like a stored one.
    """

    value: Any
    index: str
    n: int = 10
    #: over an index of chunks: the chunks themselves (``n`` of them) rather than their rows
    chunks: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.chunks, bool):
            raise QueryError(f'like(..., chunks=) takes True or False, got {self.chunks!r}.')
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise QueryError(f'like(..., n=) takes a positive int, got {self.n!r}.')
        if not isinstance(self.index, str) or not self.index:
            raise QueryError(
                f'like(value, index) names a vector index (db.show("vector_index")), got {self.index!r}.'
            )

    def to_dict(self, first: bool) -> dict[str, Any]:
        """The ``like`` part of :meth:`Find.to_dict` (``value`` as given: the caller makes it JSON)."""
        like = {'value': self.value, 'index': self.index, 'n': self.n, 'first': first}
        return {'like': {**like, 'chunks': True} if self.chunks else like}

    def __repr__(self) -> str:  # never render a vector
        shown = self.value if isinstance(self.value, Mapping) else f'<{type(self.value).__name__}>'
        return f'like({shown!r}, {self.index!r}, n={self.n}{", chunks=True" if self.chunks else ""})'


class LikeFirst:
    """``Collection.like(...)`` or ``Collection.match(...)``: a search (vector, keyword, or both
    chained); ``.find(filter)`` then filters its results, and runs it without one."""

    def __init__(self, table: str, similar: Like | None, matched: Match | None = None) -> None:
        self.table, self.similar, self.matched = table, similar, matched

    def like(self, value: Any, index: str, n: int = 10, *, chunks: bool = False) -> LikeFirst:
        if self.similar is not None:
            raise QueryError('A query takes one like(); this one already has one.')
        return LikeFirst(self.table, Like(value, index, n, chunks), self.matched)

    def match(self, value: dict[str, str], index: str, n: int = 10) -> LikeFirst:
        if self.matched is not None:
            raise QueryError('A query takes one match(); this one already has one.')
        return LikeFirst(self.table, self.similar, Match(value, index, n))

    def find(
        self,
        filter: dict[str, Any] | None = None,
        projection: Mapping[str, Any] | Sequence[str] | None = None,
    ) -> Find:
        return Find(
            self.table,
            dict(filter or {}),
            _projection(projection),
            similar=self.similar,
            like_first=True,
            matched=self.matched,
        )

    def fuse(self, *args: Any, **kw: Any) -> Find:
        return self.find().fuse(*args, **kw)

    def rerank(self, *args: Any, **kw: Any) -> Find:
        return self.find().rerank(*args, **kw)

    def __repr__(self) -> str:
        parts = '.'.join(repr(s) for s in (self.similar, self.matched) if s is not None)
        return f'Collection({self.table!r}).{parts}'


@dataclass(frozen=True, repr=False)
class FindOne(Find):
    """The first matching document, or None."""


@dataclass(frozen=True)
class Count(Query):
    """The number of matching documents."""

    filter: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        validate_filter(self.filter)

    def to_dict(self) -> dict[str, Any]:
        return {'kind': 'count', 'table': self.table, 'filter': self.filter}


@dataclass(frozen=True)
class Insert(Query):
    """Insert documents, all or nothing."""

    documents: tuple[Document, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        for i, doc in enumerate(self.documents):
            if not isinstance(doc, Mapping):
                raise QueryError(
                    f'insert: document {i} is a {type(doc).__name__}; documents are dicts '
                    'like {"text": "hello"}.'
                )

    def to_dict(self) -> dict[str, Any]:
        """The documents as they are (Encodable values included): the wire layer encodes them."""
        return {'kind': 'insert', 'table': self.table, 'documents': [dict(d) for d in self.documents]}

    def __repr__(self) -> str:  # never render the data: it may be large
        return f'Insert(table={self.table!r}, documents=<{len(self.documents)} documents>)'


@dataclass(frozen=True)
class Update(Query):
    """Apply an update document (``$set``, ``$unset``, ``$inc``) to one or many documents."""

    filter: dict[str, Any] = field(default_factory=dict)
    update: dict[str, Any] = field(default_factory=dict)
    many: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        validate_filter(self.filter)
        validate_update(self.update)

    def to_dict(self) -> dict[str, Any]:
        return {
            'kind': 'update',
            'table': self.table,
            'filter': self.filter,
            'update': self.update,
            'many': self.many,
        }

    def __repr__(self) -> str:
        return f'Update(table={self.table!r}, filter={self.filter!r}, many={self.many})'


@dataclass(frozen=True)
class Delete(Query):
    """Delete one or many documents."""

    filter: dict[str, Any] = field(default_factory=dict)
    many: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        validate_filter(self.filter)

    def to_dict(self) -> dict[str, Any]:
        return {'kind': 'delete', 'table': self.table, 'filter': self.filter, 'many': self.many}


#: Longest chunk table name (MariaDB takes 64 characters, PostgreSQL 63).
_LONGEST = 60
_NOT_A_NAME = re.compile(r'[^0-9A-Za-z_]+')


def chunk_table(table: str, key: str, model: str) -> str:
    """The name of the chunk table of ``model``'s chunks of ``table``'s ``key``.

    >>> chunk_table('docs', 'body', 'splitter')
    'docs__body__splitter__chunks'
    """
    name = _NOT_A_NAME.sub('_', f'{table}__{key}__{model}')
    if len(name) + len('__chunks') > _LONGEST:  # cut, and told apart from other cuts by a hash
        digest = hashlib.sha1(f'{table}\x00{key}\x00{model}'.encode()).hexdigest()[:8]
        name = f'{name[: _LONGEST - len("__chunks") - 9]}_{digest}'
    return f'{name}__chunks'


@dataclass(frozen=True)
class Collection:
    """A table (SQL) or collection (MongoDB), named; the entry point for queries.

    ``Table`` is the same class, for readers who think in SQL.

    >>> Collection('docs').insert_one({'text': 'hi'})
    Insert(table='docs', documents=<1 documents>)
    """

    name: str

    def __post_init__(self) -> None:
        check_table_name(self.name)

    def find(
        self,
        filter: dict[str, Any] | None = None,
        projection: Mapping[str, Any] | Sequence[str] | None = None,
    ) -> Find:
        return Find(self.name, dict(filter or {}), _projection(projection))

    def find_one(
        self,
        filter: dict[str, Any] | None = None,
        projection: Mapping[str, Any] | Sequence[str] | None = None,
    ) -> FindOne:
        return FindOne(self.name, dict(filter or {}), _projection(projection), limit_n=1)

    def count(self, filter: dict[str, Any] | None = None) -> Count:
        return Count(self.name, dict(filter or {}))

    def like(self, value: Any, index: str, n: int = 10, *, chunks: bool = False) -> LikeFirst:
        """The ``n`` rows most similar to ``value`` in vector index ``index``, best first, each
        with a ``_score``; chain ``.find(filter)`` to filter them (search, then filter).

        ``value``: a document such as ``{'text': 'clothing item'}``, a raw vector, or
        ``{'_id': id}`` (rows most like that one). Over an index of this table's chunks: see
        :meth:`Find.like`.
        """
        return LikeFirst(self.name, Like(value, index, n, chunks))

    def match(self, value: dict[str, str], index: str, n: int = 10) -> LikeFirst:
        """The ``n`` rows whose text best matches the words of ``value`` (``{'body': 'error
        0x80070005'}``) in keyword index ``index``, best first, each with a ``_score``; chain
        ``.like(...)`` to fuse with a vector search, ``.find(filter)`` to filter the results."""
        return LikeFirst(self.name, None, Match(value, index, n))

    def chunks(self, key: str, model: Any) -> Collection:
        """The chunk table where the watcher of chunker ``model`` (a model or its identifier)
        on ``key`` keeps this table's chunks (see :mod:`superduperdb.store.chunks`): a
        collection like any other, to find, embed and search.

        >>> Collection('docs').chunks('body', 'splitter').find({'parent': 7})
        Find(table='docs__body__splitter__chunks', filter={'parent': 7})
        """
        if not isinstance(key, str) or not key:
            raise QueryError(f'chunks() takes the chunked field as text, such as "body", got {key!r}.')
        identifier = model if isinstance(model, str) else getattr(model, 'identifier', None)
        if not isinstance(identifier, str):
            raise QueryError(
                f'chunks() takes the chunker, or its identifier, such as "splitter", got {model!r}.'
            )
        return Collection(chunk_table(self.name, key, identifier))

    def insert_one(self, document: Mapping[str, Any]) -> Insert:
        return Insert(self.name, (_as_document(document),))

    def insert_many(self, documents: Sequence[Mapping[str, Any]]) -> Insert:
        if isinstance(documents, Mapping):
            raise QueryError('insert_many takes a list of documents; use insert_one for one.')
        return Insert(self.name, tuple(_as_document(d) for d in documents))

    def update_one(self, filter: dict[str, Any], update: dict[str, Any]) -> Update:
        return Update(self.name, dict(filter or {}), update, many=False)

    def update_many(self, filter: dict[str, Any], update: dict[str, Any]) -> Update:
        return Update(self.name, dict(filter or {}), update, many=True)

    def delete_one(self, filter: dict[str, Any]) -> Delete:
        return Delete(self.name, dict(filter or {}), many=False)

    def delete_many(self, filter: dict[str, Any]) -> Delete:
        return Delete(self.name, dict(filter or {}), many=True)


Table = Collection


def query_from_dict(data: dict[str, Any]) -> Find:
    """Rebuild a ``find``/``find_one`` from :meth:`Find.to_dict`, validating it like a new one.

    >>> q = Collection('docs').find({'n': {'$gt': 1}}).sort('n', -1).limit(3)
    >>> query_from_dict(q.to_dict()) == q
    True
    """
    if not isinstance(data, Mapping) or data.get('kind') not in ('find', 'findone'):
        raise QueryError(f'Not a serialized find query: {data!r}.')
    cls = FindOne if data['kind'] == 'findone' else Find
    sort = data.get('sort') or []
    for pair in sort:
        check_field_path(pair[0])
    like = data.get('like')
    similar = None
    if like is not None:
        if not isinstance(like, Mapping):
            raise QueryError(f'"like" takes {{"value", "index", "n"}}, got {like!r}.')
        similar = Like(like.get('value'), like.get('index'), like.get('n', 10), like.get('chunks', False))  # type: ignore[arg-type]
    match = data.get('match')
    matched = Match.from_dict(match) if match is not None else None
    first = like if like is not None else match
    found = cls(
        data['table'],
        _filter(data.get('filter')),
        _projection(data.get('projection')),
        (),
        None,
        0,
        similar,
        bool(first.get('first')) if isinstance(first, Mapping) else False,
        matched,
        Fuse.from_dict(data['fuse']) if data.get('fuse') is not None else None,
        Rerank.from_dict(data['rerank']) if data.get('rerank') is not None else None,
    )
    found = found.sort([(k, d) for k, d in sort]) if sort else found
    found = found.limit(data['limit']) if data.get('limit') is not None else found
    return found.skip(data['skip']) if data.get('skip') else found


def any_query_from_dict(data: Any) -> Query:
    """Rebuild any query from its ``to_dict()`` form, validating it like a new one.

    Unlike :func:`query_from_dict` it takes every kind (``find``, ``findone``, ``count``,
    ``insert``, ``update``, ``delete``); any malformed part raises :class:`QueryError`.

    >>> any_query_from_dict(Collection('docs').delete_one({'n': 1}).to_dict())
    Delete(table='docs', filter={'n': 1}, many=False)
    """
    kinds = ('find', 'findone', 'count', 'insert', 'update', 'delete')
    if not isinstance(data, Mapping) or data.get('kind') not in kinds:
        raise QueryError(f'A query is a dict with "kind" one of {", ".join(kinds)} and "table".')
    kind = data['kind']
    try:
        if kind in ('find', 'findone'):
            return query_from_dict(dict(data))
        table = data.get('table')
        if kind == 'count':
            return Count(table, _filter(data.get('filter')))  # type: ignore[arg-type]
        if kind == 'insert':
            documents = data.get('documents')
            if not isinstance(documents, list):
                raise QueryError('An insert query takes "documents": a list of dicts.')
            return Insert(table, tuple(_as_document(d) for d in documents))  # type: ignore[arg-type]
        many = data.get('many', True)
        if not isinstance(many, bool):
            raise QueryError(f'"many" takes true or false, got {many!r}.')
        if kind == 'update':
            return Update(table, _filter(data.get('filter')), data.get('update'), many)  # type: ignore[arg-type]
        return Delete(table, _filter(data.get('filter')), many)  # type: ignore[arg-type]
    except QueryError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as exc:
        raise QueryError(f'Malformed {kind} query: {exc}.') from exc


def _filter(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    validate_filter(value)
    return dict(value)


def _as_document(doc: Any) -> Any:
    if isinstance(doc, Document) or not isinstance(doc, Mapping):
        return doc
    return Document(doc)
