"""scikit-learn estimators and pipelines as models (needs the ``sklearn`` extra).

>>> from sklearn.svm import SVC
>>> from superduperdb import superduper
>>> m = superduper(SVC())
>>> type(m).__name__, m.identifier
('SklearnModel', 'SVC')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from superduperdb.components.model import Model


@dataclass(kw_only=True)
class SklearnModel(Model):
    """Wraps an estimator: ``predict`` (or ``transform``) on a batch, ``fit`` with its own fit."""

    predict_method: str = 'predict'
    batch_size: int = 1024

    def predict_batch(self, inputs: Sequence[Any]) -> list[Any]:
        method = getattr(self.object, self.predict_method)
        outputs = method(_as_matrix(inputs))
        if isinstance(outputs, np.ndarray) and outputs.ndim == 1:
            return outputs.tolist()  # plain Python scalars: every database stores them
        return list(outputs)

    def fit_arrays(self, X: Sequence[Any], y: Sequence[Any] | None, **kwargs: Any) -> dict[str, Any]:
        self.object.fit(_as_matrix(X), None if y is None else np.asarray(y), **kwargs)
        if y is None:
            return {}
        return {'train_score': float(self.object.score(_as_matrix(X), np.asarray(y)))}


def _as_matrix(inputs: Sequence[Any]) -> Any:
    stacked = getattr(inputs, 'stacked', None)
    if stacked is not None:  # rows of one array (a column read at once): copy it, as stacking would
        return np.array(stacked.reshape(len(stacked), -1))
    first = inputs[0] if len(inputs) else None
    if isinstance(first, np.ndarray):
        return np.stack([np.asarray(x).reshape(-1) for x in inputs])
    if isinstance(first, (str, dict)):
        return list(inputs)  # text vectorizers and dict vectorizers take lists
    return np.asarray(inputs)
