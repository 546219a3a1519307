"""Models: wrapped estimators, networks and functions that fit and predict over the database.

A :class:`Model` stores the wrapped object in the artifact store and its
settings as JSON, like every component. Framework adapters live in
:mod:`superduperdb.models` (one module each, imported when used); they only
say how to turn a batch of inputs into a batch of outputs, and how to fit.

>>> from superduperdb import superduper
>>> double = superduper(lambda x: 2 * x, identifier='double')
>>> double.predict([1, 2, 3])
[2, 4, 6]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from superduperdb.base.exceptions import QueryError
from superduperdb.components.component import Component, artifact
from superduperdb.components.encoder import BaseEncoder

if TYPE_CHECKING:
    from superduperdb.datalayer.datalayer import Datalayer
    from superduperdb.query.objects import Find


@dataclass(kw_only=True)
class Model(Component):
    """Base of every model: ``predict`` on values or over a query, ``fit`` on a query.

    ``object`` is the wrapped thing (estimator, module, callable). ``encoder``
    stores outputs the database cannot hold natively (arrays, tensors); when
    None it is chosen from the first outputs computed. ``preprocess`` and
    ``postprocess`` run on each input and output around ``object``.
    """

    type_id: ClassVar[str] = 'model'
    #: False for a model that computes nothing (its outputs are a column the table holds:
    #: :class:`~superduperdb.models.precomputed.Precomputed`): a watcher of it runs no jobs
    computes: ClassVar[bool] = True
    #: True for a chunker (:mod:`superduperdb.models.chunkers`): its output for one value is
    #: a list of chunks, which a watcher stores as rows of a chunk table (see store/chunks.py)
    chunks: ClassVar[bool] = False
    #: True for a model that calls a rate-limited API: predict over a query hands it the
    #: database's shared budget records (``use_budget_records``) and reads its usage after
    #: (``take_usage``): see :mod:`superduperdb.models.openai`
    shares_budget: ClassVar[bool] = False

    object: Any = artifact()
    encoder: BaseEncoder | None = None
    preprocess: Callable[[Any], Any] | None = artifact()
    postprocess: Callable[[Any], Any] | None = artifact()
    batch_size: int = 64
    metrics: dict[str, Any] = field(default_factory=dict)

    # ----- what a framework adapter provides ------------------------------
    def prepare(self) -> None:
        """Start, in the background, what the first ``predict_batch`` needs (a runner to build):
        a watcher's backfill is about to run in this process, and the model is being stored
        meanwhile. The first batch waits for it. Does nothing by default."""

    def predict_batch(self, inputs: Sequence[Any]) -> list[Any]:
        """Outputs for a batch of (preprocessed) inputs. Adapters override this."""
        return [self.object(x) for x in inputs]

    def fit_arrays(self, X: Sequence[Any], y: Sequence[Any] | None, **kwargs: Any) -> dict[str, Any]:
        """Train on in-memory inputs; return metrics. Adapters that can train override this."""
        raise QueryError(f'{type(self).__name__} {self.identifier!r} cannot be trained with fit().')

    def use_budget_records(self, records: Callable[[str], Any] | None) -> None:
        """Keep rate-limit budgets in the records ``records`` makes (where ``shares_budget``)."""

    def take_usage(self) -> dict[str, Any] | None:
        """Requests, tokens, errors and cost since the last call (where ``shares_budget``)."""
        return None

    def tokens_and_requests(self, inputs: Sequence[Any]) -> tuple[int, int]:
        """Tokens and API requests ``predict_batch(inputs)`` would send (where ``shares_budget``)."""
        return 0, 0

    def cost_of(self, input_tokens: int, output_tokens: int = 0) -> float | None:
        """USD for the tokens at the configured price (where ``shares_budget``), else None."""
        return None

    def rate_limits(self) -> dict[str, Any] | None:
        """The API's limits: ``{'requests', 'tokens', 'window'}`` (where ``shares_budget``)."""
        return None

    def seconds_at_limit(self, requests: int, tokens: int) -> float | None:
        """Seconds the requests take at the model's rate limits (None: no limit)."""
        return None

    # ----- the public API ----------------------------------------------------
    def predict(
        self,
        X: Any,
        db: Datalayer | None = None,
        select: Find | None = None,
        *,
        overwrite: bool = False,
        features: dict[str, str] | None = None,
        watch: bool = False,
        chunk_size: int | None = None,
    ) -> Any:
        """Predict on values (``X`` a list/array) or over ``select`` in ``db`` (``X`` a key).

        Over a database, outputs are written back next to their inputs and a
        :class:`~superduperdb.predict.over_query.PredictReport` is returned;
        read them with ``doc['_outputs'][X][model.identifier]``. With
        ``watch=True`` a :class:`~superduperdb.components.watcher.Watcher` keeps
        them fresh as rows are written, and its backfill job is returned.
        """
        if db is None:
            if select is not None or isinstance(X, str):
                raise QueryError(
                    f'{self.identifier}.predict(X={X!r}) reads a key from the database: pass db= and '
                    'select=, e.g. model.predict(X="text", db=db, select=coll.find()). '
                    'To predict on values, pass them as X (a list or array).'
                )
            return self.predict_values(X)
        if select is None:
            raise QueryError(
                f'{self.identifier}.predict(X={X!r}, db=...) needs select=, the query whose rows to '
                'predict on, e.g. select=Collection("docs").find().'
            )
        return db.predict_over_query(  # the Datalayer's, or a remote Client's (the server runs it)
            self,
            key=X,
            select=select,
            overwrite=overwrite,
            features=features,
            watch=watch,
            chunk_size=chunk_size,
        )

    def predict_values(self, X: Any) -> list[Any]:
        """Outputs for in-memory inputs, batched, with pre/postprocessing."""
        items = list(X)
        outputs: list[Any] = []
        for lo in range(0, len(items), max(1, self.batch_size)):
            outputs.extend(self._run(items[lo : lo + self.batch_size]))
        return outputs

    def _run(self, batch: Sequence[Any]) -> list[Any]:
        if self.preprocess is not None:
            batch = [self.preprocess(x) for x in batch]
        outputs = self.predict_batch(batch)
        if len(outputs) != len(batch):
            raise QueryError(
                f'Model {self.identifier!r} returned {len(outputs)} outputs for {len(batch)} inputs.'
            )
        if self.postprocess is not None:
            outputs = [self.postprocess(y) for y in outputs]
        return list(outputs)

    def fit(
        self,
        X: Any,
        y: Any = None,
        db: Datalayer | None = None,
        select: Find | None = None,
        **kwargs: Any,
    ) -> Model:
        """Train on ``select`` in ``db`` (``X``/``y`` keys) or on values; store the new version.

        >>> from sklearn.linear_model import LogisticRegression
        >>> from superduperdb import superduper
        >>> clf = superduper(LogisticRegression()).fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
        >>> clf.predict([[0.2], [2.8]])
        [0, 1]
        """
        if db is None:
            inputs = list(X)
            if self.preprocess is not None:
                inputs = [self.preprocess(x) for x in inputs]
            self.metrics = {
                **self.metrics,
                **self.fit_arrays(inputs, None if y is None else list(y), **kwargs),
            }
            return self
        if select is None:
            raise QueryError('fit(X=..., db=...) needs select=, the query of training rows.')
        trained: Model = db.fit_over_query(self, X=X, y=y, select=select, **kwargs)  # or a Client's
        return trained
