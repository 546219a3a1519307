"""Measure a vector index against an evaluation set: recall, precision, MRR, nDCG, latency.

``db.evaluate('index', 'set', k=10)`` runs each query of the
:class:`~superduperdb.components.evaluation.EvaluationSet` through the index, the way a user's
search runs (``coll.like({key: query}, index, n=k)``, on the rows' table: for an index of
chunks, its rows), and compares the keys that came back with the keys the set names as
relevant:

- ``recall@k``: the share of a query's relevant rows found in its top k;
- ``precision@k``: the share of the top k that is relevant;
- ``mrr``: 1 / the rank of the first relevant row (0 when none is found);
- ``ndcg@k``: discounted cumulative gain (gain = the grade, discount ``log2(rank + 1)``) over
  that of the ideal order;
- ``latency_p50_ms``, ``latency_p95_ms``: of each search, as the user would wait for it.

Each metric is the mean over the set's queries. The result is stored (``db.evaluations()``
lists them, newest last) with what it measured: the index's model and version, the engine and
its settings, the set's version, ``k`` and a filter when given, so results can be compared
over time and across model versions and engine settings (LanceDB's ``probe_fraction`` trades
recall for speed: measure both).
"""

from __future__ import annotations

import math
import statistics
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from superduperdb.base.config import CFG
from superduperdb.base.exceptions import QueryError
from superduperdb.query.objects import Collection

if TYPE_CHECKING:
    from superduperdb.datalayer.datalayer import Datalayer


@dataclass
class Evaluation:
    """What one evaluation of an index measured, and of what."""

    index: str
    evaluation_set: str
    k: int
    metrics: dict[str, float]
    #: the index's model: ``[identifier, version]``, its engine and the engine's settings
    model: list[Any]
    engine: str
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        shown = ', '.join(f'{name} {value:.3f}' for name, value in self.metrics.items())
        return f'{self.index} on {self.evaluation_set} (k={self.k}, {self.queries} queries): {shown}'


def evaluate(
    db: Datalayer,
    index: str,
    evaluation_set: str,
    *,
    k: int = 10,
    filter: dict[str, Any] | None = None,
    store: bool = True,
    version: int | None = None,
) -> Evaluation:
    """Run ``evaluation_set``'s queries through vector index ``index``; see the module docstring.

    ``filter``: search among the rows it matches (``find(filter).like(...)``). ``store``: keep
    the result in the database (``db.evaluations()``). ``version``: that version of the index
    (a staged one) rather than the one serving.
    """
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 1000:
        raise QueryError(f'evaluate(..., k=) takes a number of results from 1 to 1000, got {k!r}.')
    vector_index: Any = db.vectors.get(index, version)
    the_set: Any = db.load('evaluation_set', evaluation_set)
    table = _searched_table(db, vector_index)
    pk = db.databackend.primary_key(table)
    coll = Collection(table)
    per_query, latencies = [], []
    key = the_set.key or vector_index.indexing_watcher.key
    for entry in the_set.queries:
        like = {key: the_set.query_value(entry)}
        query = coll.find(filter).like(like, index, n=k) if filter else coll.like(like, index, n=k).find()
        started = time.perf_counter()
        docs = db.execute(query) if version is None else db.vectors.search(query, version=version)
        found = [str(doc[pk]) for doc in docs]
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
    model = vector_index.indexing_watcher.model
    engine = vector_index.engine or CFG.vector_search.engine
    result = Evaluation(
        index=index,
        evaluation_set=evaluation_set,
        k=k,
        metrics=metrics,
        model=[model.identifier, model.version],
        version=vector_index.version,
        engine=engine,
        settings=_engine_settings(engine),
        set_version=the_set.version,
        queries=n,
        filter=filter,
        per_query=per_query,
        created_at=db.metadata.now(),
        id=uuid.uuid4().hex,
    )
    if store:
        db.metadata.record_evaluation(result.to_dict())
    return result


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
