"""Metrics: named functions ``(predictions, targets) -> float`` that score a model.

A :class:`Metric` is a component like any other: ``db.add(metric)`` stores its
function in the artifact store, and ``db.load('metric', name)`` brings it back.
Training loops (``TorchModel.fit(..., metrics=[...])``) record one value per
epoch under ``valid_<identifier>``.

>>> from superduperdb.components.metric import Metric, accuracy
>>> acc = Metric('accuracy', object=accuracy)
>>> acc([1, 2, 3, 4], [1, 2, 0, 4])
0.75
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from superduperdb.base.exceptions import ConfigError, QueryError
from superduperdb.components.component import Component, artifact


@dataclass(kw_only=True)
class Metric(Component):
    """A named score: ``object(predictions, targets)`` returns a float (higher is better
    unless the name says otherwise, e.g. a loss)."""

    type_id: ClassVar[str] = 'metric'

    object: Callable[[Sequence[Any], Sequence[Any]], float] = artifact()

    def __call__(self, predictions: Sequence[Any], targets: Sequence[Any]) -> float:
        if len(predictions) != len(targets):
            raise QueryError(
                f'Metric {self.identifier!r}: {len(predictions)} predictions but {len(targets)} '
                'targets; they must pair up.'
            )
        if self.object is None:
            raise QueryError(f'Metric {self.identifier!r} has no function: pass object=<callable>.')
        return float(self.object(predictions, targets))


def accuracy(predictions: Sequence[Any], targets: Sequence[Any]) -> float:
    """The fraction of predictions equal to their targets.

    A prediction that is a vector of scores (an array or tensor with more than
    one element) counts as its ``argmax``, so raw classifier outputs work too.

    >>> import numpy as np
    >>> accuracy([np.array([0.1, 0.9]), np.array([0.8, 0.2])], [1, 1])
    0.5
    """
    if not len(targets):
        return 0.0
    hits = sum(_label(p) == _label(t) for p, t in zip(predictions, targets))
    return hits / len(targets)


def _label(value: Any) -> Any:
    """A comparable label: score vectors become their argmax, 0-d arrays and tensors numbers."""
    if hasattr(value, 'argmax') and getattr(value, 'ndim', 0) >= 1:
        count = int(value.numel()) if hasattr(value, 'numel') else int(value.size)
        return int(value.argmax()) if count > 1 else value.reshape(-1)[0].item()
    if hasattr(value, 'item') and getattr(value, 'ndim', None) == 0:
        return value.item()
    return value


def named_metrics(metrics: Sequence[Any]) -> dict[str, Callable[[list[Any], list[Any]], float]]:
    """``metrics=`` of a fit as ``{name: function}`` (a Metric's identifier, a function's name)."""
    named: dict[str, Callable[[list[Any], list[Any]], float]] = {}
    for metric in metrics:
        name = getattr(metric, 'identifier', None) or getattr(metric, '__name__', None)
        if not callable(metric) or not name:
            raise ConfigError(
                f'metrics= takes Metric components or named functions (predictions, targets) -> float, '
                f'got {metric!r}.'
            )
        named[name] = metric
    return named
