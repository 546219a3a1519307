"""Adding up what API models used (see ``Model.take_usage``): per chunk, per job, per backfill."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from superduperdb.components.model import Model
    from superduperdb.datalayer.datalayer import Datalayer


def share_budget(db: Datalayer, model: Model) -> None:
    """Keep ``model``'s rate-limit budget where every process of ``db`` finds it; count its
    usage from now."""
    if not model.shares_budget:
        return
    from superduperdb.store.budget import budget_records  # only API models have budgets

    model.use_budget_records(budget_records(db.metadata))
    model.take_usage()


def took(
    model: Model, so_far: dict[str, Any] | None, on_usage: Callable[[dict[str, Any]], None] | None
) -> dict[str, Any] | None:
    """``so_far`` plus what ``model``'s requests used since the last call (told to ``on_usage``);
    None for a model that calls no API."""
    if not model.shares_budget:
        return None
    usage = model.take_usage()
    if usage and on_usage is not None:
        on_usage(usage)
    return add_usage(so_far, usage) or {}


def add_usage(a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, Any] | None:
    """The sum of two usage records; a cost unknown (None) in either is unknown in the sum.

    >>> add_usage({'requests': 1, 'cost': 0.5}, {'requests': 2, 'cost': 0.25})
    {'requests': 3, 'cost': 0.75}
    """
    if not a or not b:
        return dict(a or b or {}) or None
    out = {k: a.get(k, 0) + b.get(k, 0) for k in sorted({*a, *b}) if k != 'cost'}
    costs = a.get('cost'), b.get('cost')
    out['cost'] = None if costs[0] is None or costs[1] is None else float(costs[0]) + float(costs[1])
    return out
