"""Measure a search against an evaluation set: recall, precision, MRR, nDCG, latency.

``db.evaluate('index', 'set', k=10)`` runs each query of the
:class:`~superduperdb.components.evaluation.EvaluationSet` through vector index ``index``, the
way a user's search runs (``coll.like({key: query}, index, n=k)``, on the rows' table: for an
index of chunks, its rows), and compares the keys that came back with the keys the set names as
relevant. The same for the other searches (see :mod:`superduperdb.vector_search.hybrid`):

- keyword alone: ``db.evaluate(None, 'set', keyword='kw')`` (``coll.match({key: query}, 'kw')``);
- hybrid: ``db.evaluate('vec', 'set', keyword='kw', fuse='rrf')`` (``like()`` and ``match()``
  fused; ``fuse='weighted'`` or ``fuse={'method': 'weighted', 'weights': {'like': .7, 'match': .3}}``);
- any of them reranked: ``rerank='cross'`` (a stored model scoring ``(query, text)`` pairs)
  rescores the first ``rerank_top`` candidates (each part then finds ``max(k, rerank_top)``).

The metrics:

- ``recall@k``: the share of a query's relevant rows found in its top k;
- ``precision@k``: the share of the top k that is relevant;
- ``mrr``: 1 / the rank of the first relevant row (0 when none is found);
- ``ndcg@k``: discounted cumulative gain (gain = the grade, discount ``log2(rank + 1)``) over
  that of the ideal order;
- ``latency_p50_ms``, ``latency_p95_ms``: of each whole query (every part, the fusion, the
  rows read, the reranker), as the user would wait for it.

Each metric is the mean over the set's queries. The result is stored (``db.evaluations()``
lists them, newest last) with what it measured: ``search`` (``vector``, ``keyword`` or
``hybrid``, ``+rerank`` after a reranker), the vector index's model and version, the engine and
its settings, the keyword index (its engine and language), the fusion, the reranker (model and
version, ``top``), the set's version, ``k`` and a filter when given, so results can be compared
over time and across model versions and engine settings (LanceDB's ``probe_fraction`` trades
recall for speed: measure both).
"""

from __future__ import annotations

import math
import statistics
import time
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from superduperdb.base.config import CFG
from superduperdb.base.exceptions import QueryError
from superduperdb.query.objects import Collection
from superduperdb.query.search import Rerank
from superduperdb.query.search import fuse as make_fuse

if TYPE_CHECKING:
    from superduperdb.datalayer.datalayer import Datalayer
    from superduperdb.query.objects import Find


@dataclass
class Evaluation:
    """What one evaluation of a search measured, and of what."""

    #: the vector index measured, or the keyword index where the search is keyword alone
    index: str
    evaluation_set: str
    k: int
    metrics: dict[str, float]
    #: the vector index's model: ``[identifier, version]`` (None for keyword alone), its engine
    #: and the engine's settings
    model: list[Any] | None
    engine: str | None
    settings: dict[str, Any]
    set_version: int | None
    queries: int
    #: the version of the index measured
    version: int | None = None
    filter: dict[str, Any] | None = None
    #: per query: ``{'query', 'found' (keys, best first), 'recall', 'rr', 'ndcg'}``
    per_query: list[dict[str, Any]] = field(default_factory=list, repr=False)
    created_at: float = 0.0
    id: str = ''
    #: which search was measured: ``vector``, ``keyword`` or ``hybrid``, ``+rerank`` after a reranker
    search: str = 'vector'
    #: the keyword index: ``{'identifier', 'version', 'engine', 'language'}`` (None: not used)
    keyword: dict[str, Any] | None = None
    #: how a hybrid search fused its parts: ``{'method', 'k', 'weights', 'n'}``
    fusion: dict[str, Any] | None = None
    #: the reranker: ``{'model': [identifier, version], 'top'}``
    rerank: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def configuration(self) -> str:
        """The search measured, in one line: ``hybrid(rrf k=60) vec + kw, rerank minilm top 50``."""
        return describe(self.to_dict())

    def __str__(self) -> str:
        shown = ', '.join(f'{name} {value:.3f}' for name, value in self.metrics.items())
        return f'{self.configuration} on {self.evaluation_set} (k={self.k}, {self.queries} queries): {shown}'


def describe(e: dict[str, Any]) -> str:
    """An evaluation record's configuration in one line (records from before keyword search too)."""
    search = e.get('search', 'vector')
    keyword = (e.get('keyword') or {}).get('identifier')
    vector = e['index'] if search.startswith(('vector', 'hybrid')) else None
    names = ' + '.join(n for n in (vector, keyword) if n)
    fusion = e.get('fusion')
    kind = search.split('+')[0]
    if fusion:
        weights = ''.join(f' {part}={w}' for part, w in sorted(fusion['weights'].items()))
        k = f' k={fusion["k"]}' if fusion['method'] == 'rrf' else ''
        kind += f'({fusion["method"]}{k}{weights})'
    shown = f'{kind} {names}'
    if e.get('rerank'):
        shown += f', rerank {e["rerank"]["model"][0]} top {e["rerank"]["top"]}'
    return shown


def evaluate(
    db: Datalayer,
    index: str | None,
    evaluation_set: str,
    *,
    keyword: str | None = None,
    fuse: str | Mapping[str, Any] | None = None,
    rerank: Any = None,
    rerank_top: int = 50,
    k: int = 10,
    filter: dict[str, Any] | None = None,
    store: bool = True,
    version: int | None = None,
) -> Evaluation:
    """Run ``evaluation_set``'s queries through a search; see the module docstring.

    ``index``: the vector index (None: keyword alone). ``keyword``: a keyword index; with
    ``index`` too, the search is hybrid, fused by ``fuse`` (``'rrf'``, the default, or
    ``'weighted'``, or a dict of :meth:`~superduperdb.query.objects.Find.fuse`'s arguments such
    as ``{'method': 'weighted', 'weights': {'like': 0.7, 'match': 0.3}}``). ``rerank``: a
    reranker (a stored model's identifier, or what ``rerank()`` takes) that scores the first
    ``rerank_top`` candidates again (each part then finds ``max(k, rerank_top)``). ``filter``:
    search among the rows it matches. ``store``: keep the result in the database
    (``db.evaluations()``). ``version``: that version of the vector index (a staged one) rather
    than the one serving (vector alone only).
    """
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 1000:
        raise QueryError(f'evaluate(..., k=) takes a number of results from 1 to 1000, got {k!r}.')
    plan = _plan(db, index, keyword, fuse, rerank, rerank_top, version)
    the_set: Any = db.load('evaluation_set', evaluation_set)
    per_query, latencies = [], []
    for entry in the_set.queries:
        query = plan.query(the_set, the_set.query_value(entry), k, filter)
        started = time.perf_counter()
        docs = db.execute(query) if version is None else db.vectors.search(query, version=version)
        found = [str(doc[plan.pk]) for doc in docs]
        latencies.append(1000 * (time.perf_counter() - started))
        per_query.append({'query': entry['query'], 'found': found, **_measured(found, entry['relevant'], k)})
    n = len(per_query)
    metrics = {
        f'recall@{k}': sum(q['recall'] for q in per_query) / n,
        f'precision@{k}': sum(q['precision'] for q in per_query) / n,
        'mrr': sum(q['rr'] for q in per_query) / n,
        f'ndcg@{k}': sum(q['ndcg'] for q in per_query) / n,
        'latency_p50_ms': statistics.median(latencies),
        'latency_p95_ms': _percentile(latencies, 0.95),
    }
    result = Evaluation(
        index=plan.name,
        evaluation_set=evaluation_set,
        k=k,
        metrics=metrics,
        set_version=the_set.version,
        queries=n,
        filter=filter,
        per_query=per_query,
        created_at=db.metadata.now(),
        id=uuid.uuid4().hex,
        **plan.described(),
    )
    if store:
        db.metadata.record_evaluation(result.to_dict())
    return result


@dataclass
class _Plan:
    """The search an evaluation runs for each query, and what it records of it."""

    table: str
    pk: str
    vector: Any = None
    keyword: Any = None
    fusion: dict[str, Any] | None = None
    rerank: Any = None
    rerank_top: int = 50
    rerank_version: int | None = None

    @property
    def name(self) -> str:
        return str((self.vector or self.keyword).identifier)

    def query(self, the_set: Any, value: Any, k: int, filter: dict[str, Any] | None) -> Find:
        """The query a user would write for ``value``: ``like``, ``match`` or both, fused, reranked."""
        n = max(k, self.rerank_top) if self.rerank is not None else k
        coll = Collection(self.table)
        q: Any = coll.find(filter) if filter else coll
        if self.vector is not None:
            q = q.like({the_set.key or self.vector.indexing_watcher.key: value}, self.vector.identifier, n=n)
        if self.keyword is not None:
            if not isinstance(value, str):
                raise QueryError(
                    f'Keyword index {self.keyword.identifier!r} searches text; evaluation set '
                    f'query {value!r} is not. Evaluate it with a vector index alone.'
                )
            q = q.match({self.keyword.key: value}, self.keyword.identifier, n=n)
        q = q if filter else q.find()
        if self.fusion is not None:
            q = q.fuse(**{**self.fusion, 'n': self.fusion.get('n') or n})
        if self.rerank is not None:
            q = q.rerank(self.rerank, top=self.rerank_top, n=k)
        return q

    def described(self) -> dict[str, Any]:
        """The record's fields that say which search this was."""
        parts = {(True, False): 'vector', (False, True): 'keyword', (True, True): 'hybrid'}
        search = parts[self.vector is not None, self.keyword is not None]
        out: dict[str, Any] = {'search': search + ('+rerank' if self.rerank is not None else '')}
        out.update(model=None, engine=None, settings={}, version=None)
        if self.vector is not None:
            model = self.vector.indexing_watcher.model
            engine = self.vector.engine or CFG.vector_search.engine
            out.update(
                model=[model.identifier, model.version],
                engine=engine,
                settings=_engine_settings(engine),
                version=self.vector.version,
            )
        if self.keyword is not None:
            kw = self.keyword
            out['keyword'] = {
                'identifier': kw.identifier,
                'version': kw.version,
                'engine': kw.engine,
                'language': kw.language,
            }
        if self.fusion is not None:
            f = make_fuse(**self.fusion)
            out['fusion'] = {'method': f.method, 'k': f.k, 'weights': dict(f.weights), 'n': f.n}
        if self.rerank is not None:
            name = Rerank(self.rerank, self.rerank_top).name
            out['rerank'] = {'model': [name, self.rerank_version], 'top': self.rerank_top}
        return out


def _plan(
    db: Datalayer,
    index: str | None,
    keyword: str | None,
    fuse: str | Mapping[str, Any] | None,
    rerank: Any,
    rerank_top: int,
    version: int | None,
) -> _Plan:
    """What to search with, checked before the first query runs."""
    if index is None and keyword is None:
        raise QueryError(
            'evaluate() measures a search: name a vector index (evaluate("vec", "set")), a keyword '
            'index (evaluate(None, "set", keyword="kw")) or both (a hybrid search).'
        )
    if fuse is not None and (index is None or keyword is None):
        raise QueryError(
            'evaluate(..., fuse=) fuses the results of a vector index and a keyword index: name both '
            f'(evaluate("vec", "set", keyword="kw", fuse={fuse!r})), or leave fuse= out.'
        )
    if version is not None and keyword is not None:
        raise QueryError('evaluate(..., version=) measures a staged vector index alone; leave keyword= out.')
    vector: Any = db.vectors.get(index, version) if index is not None else None
    kw: Any = db.keywords.get(keyword) if keyword is not None else None
    table = _searched_table(db, vector) if vector is not None else _searched_table(db, kw)
    if vector is not None and kw is not None and _searched_table(db, kw) != table:
        raise QueryError(
            f'Vector index {index!r} searches table {table!r} but keyword index {keyword!r} searches '
            f'{_searched_table(db, kw)!r}: a hybrid search needs both over the same table.'
        )
    fusion = _fusion(fuse) if vector is not None and kw is not None else None
    plan = _Plan(table, db.databackend.primary_key(table), vector, kw, fusion)
    if rerank is not None:
        Rerank(rerank, rerank_top)  # its arguments checked now
        plan.rerank, plan.rerank_top = rerank, rerank_top
        if isinstance(rerank, str):
            plan.rerank_version = db.load('model', rerank).version
        else:
            plan.rerank_version = getattr(rerank, 'version', None)
    return plan


def _fusion(fuse: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """``fuse=`` as :meth:`Find.fuse`'s arguments (checked)."""
    if fuse is None:
        fuse = 'rrf'
    if not isinstance(fuse, str | Mapping):
        raise QueryError(
            f"evaluate(..., fuse=) takes 'rrf', 'weighted' or a dict of fuse()'s arguments, got {fuse!r}."
        )
    kwargs = {'method': fuse} if isinstance(fuse, str) else dict(fuse)
    try:
        make_fuse(**kwargs)
    except TypeError as e:
        raise QueryError(f'evaluate(..., fuse=) takes method, k, weights and n, got {dict(kwargs)!r}.') from e
    return kwargs


def _searched_table(db: Datalayer, index: Any) -> str:
    """The table a user searches with ``index``: the rows of its chunks, for an index of chunks."""
    from superduperdb.store.chunks import chunker_of

    found = chunker_of(db, index.table, db.metadata.latest('watcher'))
    return index.table if found is None else found['table']


def _measured(found: list[str], relevant: dict[str, float], k: int) -> dict[str, float]:
    top = found[:k]
    hits = [key for key in top if key in relevant]
    first = next((rank for rank, key in enumerate(top, 1) if key in relevant), None)
    dcg = sum(relevant.get(key, 0.0) / math.log2(rank + 1) for rank, key in enumerate(top, 1))
    ideal = sorted(relevant.values(), reverse=True)[:k]
    idcg = sum(gain / math.log2(rank + 1) for rank, gain in enumerate(ideal, 1))
    return {
        'recall': len(hits) / len(relevant),
        'precision': len(hits) / k,
        'rr': 1.0 / first if first else 0.0,
        'ndcg': dcg / idcg if idcg else 0.0,
    }


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def _engine_settings(engine: str) -> dict[str, Any]:
    """The settings that change what an engine returns (LanceDB's ANN index), as configured now."""
    if engine != 'lancedb':
        return {}
    vs = CFG.vector_search
    return {
        'ann_threshold': vs.ann_threshold,
        'index_type': vs.index_type,
        'probe_fraction': vs.probe_fraction,
        'refine_factor': vs.refine_factor,
    }
