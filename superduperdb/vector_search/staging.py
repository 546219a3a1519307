"""A model change measured before it goes live: stage, evaluate, promote, roll back.

Without staging, a new version of a vector index (a new embedding model, say) serves queries
as soon as its build succeeds. Staged, it is built beside the live one and kept in step with
writes (its watcher follows the table like any other), while the live version goes on serving;
it goes live only when :func:`promote` finds its metrics on an evaluation set pass a rule.

>>> from superduperdb.vector_search.staging import parse_rule
>>> parse_rule('ndcg@10 >= live - 0.01')({'ndcg@10': 0.80}, {'ndcg@10': 0.805})
True
>>> parse_rule('recall@5 > 0.9')({'recall@5': 0.85}, {'recall@5': 0.5})
False

Which version serves is one record in the metadata store (``_superduper_serving:<index>``:
the version and the ones that served before it), written by compare-and-swap, and read by
every process at most a second old: a promotion or a rollback is seen by every process at
once, or not at all. :func:`rollback` puts the previous version back for as long as it is
kept (``db.remove`` of a version ends that).
"""

from __future__ import annotations

import json
import operator
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from superduperdb.base.exceptions import QueryError
from superduperdb.store.metadata import SERVING

if TYPE_CHECKING:
    from superduperdb.components.vector_index import VectorIndex
    from superduperdb.datalayer.datalayer import Datalayer

Rule = Callable[[dict[str, float], dict[str, float]], bool]
_RULE = re.compile(r'^\s*([\w@]+)\s*(>=|<=|>|<)\s*(live\b)?\s*(?:([+-])?\s*([0-9.]+))?\s*$')
_OPS = {'>=': operator.ge, '<=': operator.le, '>': operator.gt, '<': operator.lt}


def serving_record(identifier: str) -> str:
    return f'{SERVING}{identifier}'


def pinned(db: Datalayer, identifier: str) -> tuple[int | None, list[int]]:
    """``(version serving, versions that served before it, oldest first)`` as recorded;
    ``(None, [])`` when nothing was staged: the newest built version serves."""
    raw = db.metadata.position(serving_record(identifier)) if db.metadata.present() else None
    if raw is None:
        return None, []
    record = json.loads(raw)
    return int(record['serving']), [int(v) for v in record.get('before', [])]


def _pin(db: Datalayer, identifier: str, serving: int, before: list[int]) -> None:
    """Record ``serving`` by compare-and-swap (QueryError when another process changed it first)."""
    name = serving_record(identifier)
    old = db.metadata.position(name)
    new = json.dumps({'serving': serving, 'before': before})
    if not db.metadata.swap_position(name, old, new):
        raise QueryError(
            f'Another process changed which version of {identifier!r} serves meanwhile; try again.'
        )


def stage(db: Datalayer, index: VectorIndex) -> VectorIndex:
    """Add ``index`` (a new version of an existing vector index) without letting it serve:
    the version serving now keeps serving until :func:`promote`."""
    identifier = index.identifier
    if not db.metadata.versions('vector_index', identifier):
        raise QueryError(
            f'Nothing to stage against: {identifier!r} has no version yet. Add the first with db.add(...).'
        )
    live = db.vectors.get(identifier).version
    if pinned(db, identifier)[0] is None:
        assert live is not None
        _pin(db, identifier, live, [])
    db.vectors.forget()
    return db.add(index)


@dataclass
class Promotion:
    """What :func:`promote` found and did."""

    index: str
    live: int
    staged: int
    promoted: bool
    rule: str
    live_metrics: dict[str, float]
    staged_metrics: dict[str, float]
    #: the staged version's build: rows embedded, seconds its jobs ran
    cost: dict[str, Any] = field(default_factory=dict)
    reason: str = ''

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def promote(
    db: Datalayer, identifier: str, evaluation_set: str, *, rule: str | None = None, k: int = 10
) -> Promotion:
    """Evaluate the staged version of index ``identifier`` and the live one on
    ``evaluation_set``; make the staged one serve if its metrics pass ``rule`` (default
    ``'ndcg@<k> >= live'``: not worse than the live version). Both evaluations are kept."""
    from superduperdb.vector_search.evaluate import evaluate

    rule = rule or f'ndcg@{k} >= live'
    check = parse_rule(rule)
    serving, before = pinned(db, identifier)
    live = serving if serving is not None else db.vectors.get(identifier).version
    assert live is not None
    staged = _built_after(db, identifier, live)
    live_result = evaluate(db, identifier, evaluation_set, k=k, version=live)
    staged_result = evaluate(db, identifier, evaluation_set, k=k, version=staged)
    passed = check(staged_result.metrics, live_result.metrics)
    result = Promotion(
        index=identifier,
        live=live,
        staged=staged,
        promoted=passed,
        rule=rule,
        live_metrics=live_result.metrics,
        staged_metrics=staged_result.metrics,
        cost=build_cost(db, identifier, staged),
        reason='' if passed else f'version {staged} does not pass {rule!r}; version {live} keeps serving',
    )
    if passed:
        _pin(db, identifier, staged, [*before, live])
        db.vectors.forget()
    return result


def rollback(db: Datalayer, identifier: str) -> int:
    """Make the version that served before the current one serve again; returns it."""
    serving, before = pinned(db, identifier)
    kept = set(db.metadata.versions('vector_index', identifier))
    while before and before[-1] not in kept:  # removed since: not there to go back to
        before.pop()
    if serving is None or not before:
        raise QueryError(f'Vector index {identifier!r} has no earlier version to go back to.')
    previous = before[-1]
    _pin(db, identifier, previous, before[:-1])
    db.vectors.forget()
    return previous


def _built_after(db: Datalayer, identifier: str, live: int) -> int:
    """The newest version after ``live`` whose build succeeded (QueryError: none, or building)."""
    newer = [v for v in db.metadata.versions('vector_index', identifier) if v > live]
    if not newer:
        raise QueryError(f'Vector index {identifier!r} has no staged version after version {live}.')
    for version in reversed(newer):
        if _build_jobs(db, identifier, version, 'success'):
            return version
    raise QueryError(
        f'Version {newer[-1]} of {identifier!r} is still being built (or its build failed): see '
        f"db.jobs() for component 'vector_index/{identifier}/{newer[-1]}'."
    )


def _build_jobs(
    db: Datalayer, identifier: str, version: int, status: str | None = None
) -> list[dict[str, Any]]:
    where: dict[str, Any] = {'component': f'vector_index/{identifier}/{version}', 'method': 'vector_build'}
    if status:
        where['status'] = status
    return db.metadata.jobs(where, limit=1)


def build_cost(db: Datalayer, identifier: str, version: int) -> dict[str, Any]:
    """What building ``version`` cost: rows embedded by its watcher's backfill and seconds its
    jobs ran (the backfill's and the build's), and for an API model the requests, tokens and
    cost its backfill used (see :mod:`superduperdb.predict.usage`), from their records."""
    index: Any = db.load('vector_index', identifier, version)
    watcher = index.indexing_watcher
    jobs = db.metadata.jobs({'component': watcher.unique_id}, limit=1000) + _build_jobs(
        db, identifier, version
    )
    seconds = sum(
        (j.get('ended_at') or 0) - (j.get('started_at') or 0)
        for j in jobs
        if j.get('ended_at') and j.get('started_at')
    )
    predicts = [_result(j) or {} for j in jobs if j.get('method') == 'predict']
    rows = sum(int(r.get('computed') or 0) for r in predicts)
    cost = {'rows': rows, 'seconds': round(seconds, 3), 'jobs': len(jobs), 'at': time.time()}
    used = [r['usage'] for r in predicts if r.get('usage')]  # an API model's (none for others)
    if used:
        for name in ('requests', 'input_tokens', 'output_tokens'):
            cost[name] = sum(int(u.get(name) or 0) for u in used)
        cost['tokens'] = cost['input_tokens'] + cost['output_tokens']
        costs = [u.get('cost') for u in used]
        cost['cost'] = None if None in costs else sum(costs)  # a price unknown: unknown
    return cost


def _result(job: dict[str, Any]) -> dict[str, Any] | None:
    result = job.get('result')
    if isinstance(result, str):
        try:
            result = json.loads(result)
        except ValueError:
            return None
    return result if isinstance(result, dict) else None


def parse_rule(rule: str) -> Rule:
    """``'<metric> <op> live [+|- number]'`` or ``'<metric> <op> number'`` as a check of
    ``(staged metrics, live metrics)``."""
    found = _RULE.match(rule) if isinstance(rule, str) else None
    if found is None or (found.group(3) is None and found.group(5) is None):
        raise QueryError(
            'A promotion rule is like "ndcg@10 >= live", "recall@10 >= live - 0.01" or '
            f'"mrr > 0.5", got {rule!r}.'
        )
    metric, op, live, sign, number = found.groups()
    compare = _OPS[op]
    offset = float(number or 0) * (-1 if sign == '-' else 1)

    def check(staged: dict[str, float], current: dict[str, float]) -> bool:
        if metric not in staged:
            raise QueryError(f'The rule {rule!r} names {metric!r}; the evaluation measured {sorted(staged)}.')
        target = current[metric] + offset if live else offset
        return bool(compare(staged[metric], target))

    return check
