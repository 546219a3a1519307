"""Components: ``/components`` lists what is registered and adds a component from its config;
``/components/{type_id}/{identifier}`` loads one (config and artifacts) or removes it.

A component from a request carries no pickled artifact, and no encoder that runs code,
unless ``CFG.server.allow_artifact_upload`` is on (docs/security.md).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from fastapi import FastAPI

from superduperdb.base.exceptions import ComponentError, QueryError, SuperDuperError
from superduperdb.server import wire
from superduperdb.server.errors import Forbidden
from superduperdb.server.schemas import AddRequest, EvaluateRequest
from superduperdb.server.state import ServerState


def add_routes(app: FastAPI, state: ServerState) -> None:
    """Add ``/components`` (GET, POST), ``/components/{type_id}/{identifier}`` (GET, DELETE) and
    ``/vector_indexes/{identifier}/evaluate`` (POST), ``.../evaluations`` (GET)."""
    db, reads, writes, uploads = state.db, state.reads, state.writes, state.uploads
    guarded, writers = state.guarded, state.writers

    @app.get('/components', tags=['components'], dependencies=guarded)
    def show(type_id: str | None = None, identifier: str | None = None) -> Any:
        """What is registered: {type_id: [identifiers]}, identifiers of a type, or versions of one."""
        if type_id == 'job':
            raise QueryError('Jobs are listed by GET /jobs.')
        if identifier is not None and type_id is None:
            raise QueryError('Pass type_id with identifier.')
        with reads:
            return {'result': db.show(type_id, identifier)}

    @app.post('/components', tags=['components'], dependencies=writers)
    def add(request: AddRequest) -> Any:
        """Add a component from its config (children already added, referenced by version)."""
        with writes:
            component = _component_from_request(db, request, uploads)
            db.add(component)
            jobs = getattr(component, 'jobs_', None) or []
            return {
                'type_id': component.type_id,
                'identifier': component.identifier,
                'version': component.version,
                'jobs': [wire.job_to_json(j) for j in jobs],
            }

    @app.get('/components/{type_id}/{identifier}', tags=['components'], dependencies=guarded)
    def load(type_id: str, identifier: str, version: int | None = None) -> Any:
        """A component's config and its artifacts (pickled, base64), for the client to rebuild it."""
        with reads:
            record = db.metadata.get_component(type_id, identifier, version)
            uid = f'{type_id}/{identifier}/{record["version"]}'
            artifacts = {
                name: base64.b64encode(db.artifact_store.get(key, component=uid)).decode('ascii')
                for name, key in record['artifacts'].items()
            }
            return {'config': record['config'], 'version': record['version'], 'artifacts': artifacts}

    @app.post('/vector_indexes/{identifier}/evaluate', tags=['components'], dependencies=writers)
    def evaluate(identifier: str, request: EvaluateRequest) -> Any:
        """Measure a vector index on an evaluation set: recall@k, precision@k, MRR, nDCG@k,
        latency (see superduperdb.vector_search.evaluate); the result is kept."""
        from superduperdb.vector_search.evaluate import evaluate

        with reads:  # searches only: other requests go on meanwhile
            result = evaluate(
                db,
                identifier,
                request.evaluation_set,
                k=request.k,
                filter=request.filter or None,
                store=False,
            )
        with writes:
            db.metadata.record_evaluation(result.to_dict())
        return result.to_dict()

    @app.get('/vector_indexes/{identifier}/evaluations', tags=['components'], dependencies=guarded)
    def evaluations(identifier: str) -> Any:
        """The evaluations kept of a vector index, oldest first."""
        with reads:
            return {'evaluations': db.evaluations(identifier)}

    @app.delete('/components/{type_id}/{identifier}', tags=['components'], dependencies=writers)
    def remove(type_id: str, identifier: str, version: int | None = None, force: bool = False) -> Any:
        """Remove a component version (all versions without ``version``)."""
        with writes:
            db.remove(type_id, identifier, version, force=force)
            return {'removed': [type_id, identifier, version]}


def _component_from_request(db: Any, request: AddRequest, uploads: bool) -> Any:
    """The component a request's config and artifacts describe, its class on the allow-list,
    its artifacts unpickled only where ``uploads`` allows them."""
    import pickle

    from superduperdb.components.component import Component, resolve_class

    config = request.config
    path = config.get('cls')
    if not isinstance(path, str) or not isinstance(config.get('params'), dict):
        raise ComponentError('A component config is {"cls": "module:Class", "params": {...}}.')
    placeholders = [k for k, v in config['params'].items() if v == {'_artifact': k}]
    if (request.artifacts or placeholders) and not uploads:
        raise Forbidden(
            f'This component ({path}) carries pickled artifacts '
            f'({", ".join(placeholders or request.artifacts)}), '
            'and this server does not accept them: unpickling runs code. Add it from a process with '
            'direct database access, or set CFG.server.allow_artifact_upload on the server.'
        )
    missing = [k for k in placeholders if k not in request.artifacts]
    if missing:
        raise ComponentError(f'The config refers to artifacts that were not sent: {", ".join(missing)}.')
    cls = resolve_class(path)  # the allow-list, checked before anything is imported
    assert issubclass(cls, Component)

    def load_artifact(name: str) -> Any:
        try:
            return pickle.loads(base64.b64decode(request.artifacts[name], validate=True))
        except (binascii.Error, ValueError) as exc:
            raise ComponentError(f'Artifact {name!r} is not base64 text.') from exc
        except Exception as exc:
            raise ComponentError(f'Artifact {name!r} could not be unpickled: {exc}.') from exc

    try:
        component = cls.from_config(config, load_artifact=load_artifact, load_component=db.load)
    except SuperDuperError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise ComponentError(f'Cannot build {path} from this config: {type(exc).__name__}: {exc}.') from exc
    component.check_from_request()
    if not uploads:
        _refuse_code(component, path)
    return component


def _refuse_code(component: Any, path: str) -> None:
    """A token holder may not create an encoder that runs code when it decodes, nor a model
    whose outputs it would decode (docs/security.md, "The invariant"): with one, values
    someone else wrote could run code on every process that reads them."""
    from superduperdb.components.encoder import BaseEncoder

    encoder = component if isinstance(component, BaseEncoder) else getattr(component, 'encoder', None)
    if isinstance(encoder, BaseEncoder) and encoder.runs_code:
        kind = type(encoder).__name__
        raise Forbidden(
            f'This component ({path}) {"is" if encoder is component else "uses"} the encoder '
            f'{encoder.identifier!r} ({kind}), which runs code when it decodes (it may unpickle), and this '
            'server lets only '
            'its operator create those. Use a numpy, pillow, audio or torch encoder, add it from a '
            'process with direct database access, or set CFG.server.allow_artifact_upload on the server.'
        )
