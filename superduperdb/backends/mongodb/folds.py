"""``_fold`` on MongoDB: decided here from each document's ``_id`` (MongoDB has no hash to
compute it with), or read from the document's own ``_fold`` field where it has one.

A filter's ``_fold`` condition is taken out of the filter MongoDB runs and checked on the
documents it returns (their ``_id`` and ``_fold`` only, where the caller needs no more):
the same rows as ``_fold`` selects on SQL databases (:mod:`superduperdb.base.folds`).

>>> rest, keep = split_fold({'_fold': 'valid', 'n': {'$gt': 1}})
>>> rest
{'n': {'$gt': 1}}
>>> keep({'_id': 1, '_fold': 'valid'}), keep({'_id': 1, '_fold': 'train'})
(True, False)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from superduperdb.base.exceptions import NotSupported
from superduperdb.base.folds import FOLD, fold_of

Predicate = Callable[[dict[str, Any]], bool]


def split_fold(filter: dict[str, Any]) -> tuple[dict[str, Any], Predicate | None]:
    """``filter`` without its ``_fold`` condition, and a check of that condition (or None).

    ``_fold`` is taken at the top level of the filter (and in a top-level ``$and``), where
    it restricts the rows the rest selects; inside ``$or``/``$nor`` it is refused.
    """
    conditions: list[Any] = []
    rest: dict[str, Any] = {}
    for key, cond in filter.items():
        if key == FOLD:
            conditions.append(cond)
        elif key == '$and':
            kept = []
            for sub in cond:
                sub_rest, sub_keep = split_fold(sub)
                if sub_keep is not None:
                    conditions.append(sub_keep)
                if sub_rest:
                    kept.append(sub_rest)
            if kept:
                rest['$and'] = kept
        else:
            if key in ('$or', '$nor') and _mentions_fold(cond):
                raise NotSupported(
                    f'On MongoDB, _fold can be filtered on at the top level of a filter (or in $and), '
                    f'not inside {key}. Filter on _fold alone ({{"_fold": "train"}}) beside {key}.'
                )
            rest[key] = cond
    if not conditions:
        return filter, None

    def keep(doc: dict[str, Any]) -> bool:
        fold = doc[FOLD] if doc.get(FOLD) is not None else fold_of(doc['_id'])
        return all(c(doc) if callable(c) else _matches(fold, c) for c in conditions)

    return rest, keep


def _mentions_fold(value: Any) -> bool:
    if isinstance(value, dict):
        return FOLD in value or any(_mentions_fold(v) for v in value.values())
    if isinstance(value, list):
        return any(_mentions_fold(v) for v in value)
    return False


def _matches(fold: str, cond: Any) -> bool:
    """Whether a fold meets a condition (``'train'``, ``{'$in': [...]}``, ...), as MongoDB would."""
    if not isinstance(cond, dict) or not any(str(k).startswith('$') for k in cond):
        return fold == cond
    return all(_operator(fold, op, arg) for op, arg in cond.items())


def _operator(fold: str, op: str, arg: Any) -> bool:
    if op == '$eq':
        return fold == arg
    if op == '$ne':
        return fold != arg
    if op == '$in':
        return fold in arg
    if op == '$nin':
        return fold not in arg
    if op == '$exists':
        return bool(arg)  # every document has a fold
    if op == '$not':
        return not _matches(fold, arg)
    comparisons = {'$gt': str.__gt__, '$gte': str.__ge__, '$lt': str.__lt__, '$lte': str.__le__}
    if op in comparisons:
        return isinstance(arg, str) and comparisons[op](fold, arg)
    raise NotSupported(f'{op} is not supported on _fold; use a fold name, $in, $nin or $ne.')
