"""Adding up what API models used (see ``Model.take_usage``): per chunk, per job, per backfill."""

from __future__ import annotations

from typing import Any


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
