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

from superduperdb.base.exceptions import QueryError
from superduperdb.components.metric import named_metrics
from superduperdb.components.model import Model


@dataclass(kw_only=True)
class SklearnModel(Model):
    """Wraps an estimator: ``predict`` (or ``transform``) on a batch, ``fit`` with its own fit."""

    predict_method: str = 'predict'
    batch_size: int = 1024

    def predict(self, X: Any, db: Any = None, select: Any = None, **kwargs: Any) -> Any:
        """As :meth:`Model.predict`, refused before anything runs when the estimator is not fitted:
        otherwise every row of a query would fail one by one, each with scikit-learn's error."""
        self.check_fitted()
        return super().predict(X, db, select, **kwargs)

    def check_fitted(self) -> None:
        """Raise :class:`QueryError` naming the model when its estimator has not been fitted.

        Estimators that need no fitting (``FunctionTransformer``, stateless ones) pass.
        """
        from sklearn.exceptions import NotFittedError
        from sklearn.utils.validation import check_is_fitted

        try:
            check_is_fitted(self.object)
        except NotFittedError:
            raise QueryError(
                f'Model {self.identifier!r} ({type(self.object).__name__}) is not fitted, so it cannot '
                'predict. Fit it first (model.fit(X=..., y=..., db=db, select=...), or the '
                "estimator's own fit), or pass a fitted estimator: superduper(fitted_estimator)."
            ) from None
        except TypeError:
            pass  # not a scikit-learn estimator (a plain object with predict): nothing to check

    def predict_batch(self, inputs: Sequence[Any]) -> list[Any]:
        self.check_fitted()  # a watcher's job or a stored copy: the same message, once per batch
        method = getattr(self.object, self.predict_method)
        outputs = method(_as_matrix(inputs))
        if isinstance(outputs, np.ndarray) and outputs.ndim == 1:
            return outputs.tolist()  # plain Python scalars: every database stores them
        return list(outputs)

    def fit_arrays(
        self,
        X: Sequence[Any],
        y: Sequence[Any] | None,
        *,
        validation: tuple[Sequence[Any], Sequence[Any]] | None = None,
        metrics: Sequence[Any] | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Fit the estimator (``kwargs`` go to its ``fit``: ``sample_weight=``, ...).

        Returns ``train_score`` (the estimator's ``score``) and, with ``validation=(X, y)``
        (``validation_select=`` over a query), ``valid_score`` and one ``valid_<name>`` per
        metric (a :class:`~superduperdb.components.metric.Metric` or a named function
        ``(predictions, targets) -> float``, given postprocessed predictions), as torch does.
        """
        named = named_metrics(metrics or ())
        if named and validation is None:
            raise QueryError(
                f'SklearnModel {self.identifier!r}: metrics= are computed on validation rows: pass '
                'validation_select= (a query) or validation=(X, y).'
            )
        self.object.fit(_as_matrix(X), None if y is None else np.asarray(y), **kwargs)
        if y is None:
            return {}
        scores: dict[str, Any] = {'train_score': float(self.object.score(_as_matrix(X), np.asarray(y)))}
        if validation is not None:
            X_valid, y_valid = validation
            if len(X_valid) != len(y_valid) or not len(X_valid):
                raise QueryError(
                    f'fit: validation has {len(X_valid)} inputs and {len(y_valid)} targets; '
                    'they must pair up, and be at least one.'
                )
            scores['valid_score'] = float(self.object.score(_as_matrix(X_valid), np.asarray(y_valid)))
            if named:
                predictions = self.predict_batch(list(X_valid))
                if self.postprocess is not None:
                    predictions = [self.postprocess(p) for p in predictions]
                for name, metric in named.items():
                    scores[f'valid_{name}'] = float(metric(predictions, list(y_valid)))
        return scores


def _as_matrix(inputs: Sequence[Any]) -> Any:
    """What scikit-learn takes: a 2-D feature matrix, one flattened row per input.

    Arrays, tensors and images (anything numpy can read) are flattened; scalars become a
    one-feature column; strings and dicts stay a list (for text and dict vectorizers).

    >>> _as_matrix([np.zeros((2, 2)), np.ones((2, 2))]).shape
    (2, 4)
    >>> _as_matrix([1.0, 2.0]).shape
    (2, 1)
    """
    stacked = getattr(inputs, 'stacked', None)
    if stacked is not None:  # rows of one array (a column read at once): copy it, as stacking would
        return np.array(stacked.reshape(len(stacked), -1))
    first = inputs[0] if len(inputs) else None
    if isinstance(first, (str, dict)):
        return list(inputs)  # text vectorizers and dict vectorizers take lists
    if first is not None and not isinstance(first, (int, float, list, tuple, np.generic)):
        rows = [np.asarray(x) for x in inputs]  # arrays, tensors, PIL images
        shapes = {r.shape for r in rows}
        if len(shapes) > 1:
            raise QueryError(
                f'scikit-learn takes inputs of one shape; got {len(shapes)} shapes '
                f'({", ".join(str(s) for s in sorted(shapes)[:3])}, ...). Make them one size in '
                'preprocess= (resize images, pad arrays).'
            )
        return np.stack([r.reshape(-1) for r in rows])
    matrix = np.asarray(inputs)
    if matrix.ndim == 1:
        return matrix.reshape(-1, 1)  # one scalar feature per row
    if matrix.ndim > 2:
        return matrix.reshape(len(matrix), -1)  # nested lists: flattened as arrays are
    return matrix
