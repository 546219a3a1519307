"""Models: run a stored model on values (``predict``), over the rows of a query, its
outputs written back (``predict_query``, optionally kept fresh by a watcher), or train it
(``fit``). Models always run from the server's own copy; a request never sends one."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from fastapi import FastAPI

from superduperdb.base.exceptions import QueryError, SuperDuperError
from superduperdb.server import wire
from superduperdb.server.schemas import FitRequest, PredictQueryRequest, PredictRequest
from superduperdb.server.state import ServerState

logger = logging.getLogger(__name__)


def add_routes(app: FastAPI, state: ServerState) -> None:
    """Add ``/models/{identifier}/predict``, ``/predict_query`` and ``/fit``."""
    db, reads, writes, lookup = state.db, state.reads, state.writes, state.lookup
    guarded, writers = state.guarded, state.writers
    stored_model, find_query = state.stored_model, state.find_query

    @app.post('/models/{identifier}/predict', tags=['models'], dependencies=guarded)
    def predict(identifier: str, request: PredictRequest) -> Any:
        """Outputs of a stored model on the given values."""
        from superduperdb.base.document import Encodable

        with reads:
            model = stored_model(identifier, request.version)  # before any value is decoded
        values = wire.from_json(request.values, lookup, strict=True)
        values = [v.x if isinstance(v, Encodable) else v for v in values]
        with reads:
            try:
                outputs = model.predict_values(values)
            except SuperDuperError:
                raise
            except Exception as exc:  # the model's own code refused these inputs
                logger.info('model %s failed on request values', identifier, exc_info=True)
                raise QueryError(
                    f'Model {identifier!r} failed on these values: {type(exc).__name__}: {exc}'
                ) from exc
        if model.encoder is not None and model.encoder.version is not None:
            outputs = [model.encoder(y) for y in outputs]
        return {'outputs': wire.to_json(outputs)}

    @app.post('/models/{identifier}/predict_query', tags=['models'], dependencies=writers)
    def predict_query(identifier: str, request: PredictQueryRequest) -> Any:
        """A stored model over the rows of a query, outputs written back (``watch``: kept fresh)."""
        from superduperdb.components.watcher import Watcher
        from superduperdb.predict.over_query import predict_over_query

        key = _key(request.key)
        with writes:
            select = find_query(request.select)
            model = stored_model(identifier, request.version)
            if request.watch:
                watcher = db.add(Watcher(model=model, key=key, select=select, features=request.features))
                backfill = watcher.backfill_  # with partitions, the job that waits for all of them
                return {'job': wire.job_to_json(backfill) if backfill is not None else None}
            report = predict_over_query(
                db,
                model,
                key=key,
                select=select,
                overwrite=request.overwrite,
                features=request.features,
                chunk_size=request.chunk_size,
            )
            return {'report': wire.to_json(dataclasses.asdict(report))}

    @app.post('/models/{identifier}/fit', tags=['models'], dependencies=writers)
    def fit(identifier: str, request: FitRequest) -> Any:
        """Train a stored model on the rows of a query; the trained model is stored as a new version."""
        from superduperdb.predict.over_query import fit_over_query

        key = _key(request.X)
        with writes:
            select = find_query(request.select)
            validation = None if request.validation_select is None else find_query(request.validation_select)
            model = stored_model(identifier, request.version, cached=False)  # trained in place: a copy
            kwargs = wire.from_json(request.kwargs, strict=True)
            try:
                trained = fit_over_query(
                    db,
                    model,
                    X=key,
                    y=request.y,
                    select=select,
                    validation_select=validation,
                    features=request.features,
                    **kwargs,
                )
            except SuperDuperError:
                raise
            except Exception as exc:  # the model's own training code refused these rows or options
                logger.info('fitting model %s failed', identifier, exc_info=True)
                raise QueryError(f'Fitting model {identifier!r} failed: {type(exc).__name__}: {exc}') from exc
            return {
                'identifier': trained.identifier,
                'version': trained.version,
                'metrics': wire.to_json(trained.metrics),
            }


def _key(key: str | list[str]) -> str | tuple[str, ...]:
    """A request's key as the Datalayer takes it: several keys as a tuple."""
    return tuple(key) if isinstance(key, list) else key
