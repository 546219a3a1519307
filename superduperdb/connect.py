"""The composition root: ``superduper(uri)`` assembles a Datalayer from a backend
(:func:`~superduperdb.backends.uri.backend_from`), its metadata and artifact stores and, when
jobs first run, an executor; :func:`reopen` opens the same database in another process."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from superduperdb.backends.deferred import FileOnFirstWrite, missing_file
from superduperdb.backends.uri import backend_from
from superduperdb.base.config import CFG


def connect(target: Any = None) -> Any:
    """A :class:`~superduperdb.datalayer.datalayer.Datalayer` over ``target``.

    The metadata store lives in the same database unless ``CFG.metadata_store``
    names another; the artifact store is ``CFG.artifact_store``, or by default in the
    metadata database (a server) or beside its file (SQLite, DuckDB): never relative to
    the working directory, so every process that opens the database finds the same artifacts.
    """
    from superduperdb.datalayer.datalayer import Datalayer
    from superduperdb.store.artifacts import artifact_store_from_uri, resolve_artifact_uri
    from superduperdb.store.metadata import MetadataStore

    backend = backend_from(target)
    metadata, own = CFG.metadata_store, False
    own_metadata = backend.default_metadata_store()
    if metadata is None and own_metadata is not None:  # a lake: a small database of its own
        metadata, own = own_metadata, True  # superduperdb's file: its folder made as needed
    if metadata is None:
        meta_backend = backend
    elif own and missing_file(metadata):  # a lake's own file: made on the first write, not on a look
        meta_backend = FileOnFirstWrite(metadata, backend_from)  # type: ignore[assignment]  # a DataBackend when opened
    else:
        meta_backend = backend_from(metadata, create=own)
    configured = CFG.artifact_store
    if configured is None:
        configured = backend.default_artifact_store()
    artifacts = resolve_artifact_uri(configured, meta_backend)
    return Datalayer(
        backend,
        MetadataStore(meta_backend),
        artifact_store_from_uri(artifacts, meta_backend),
        chunk_size=max(CFG.chunk_size, backend.min_chunk_size),
        spec=_spec(target if target is not None else CFG.data_backend, artifacts),
    )


def _spec(target: Any, artifacts: str) -> dict[str, Any] | None:
    """How another process opens the same database, stores included; None if it cannot.

    Relative SQLite/DuckDB paths become absolute (``artifacts`` is already), so
    a worker started elsewhere finds the same files.
    """
    if isinstance(target, str):
        uri = target
    elif type(target).__module__.startswith('sqlalchemy') and hasattr(target, 'url'):
        uri = target.url.render_as_string(hide_password=False)
    elif type(target).__module__.startswith('pymongo') and hasattr(target, 'client'):
        host, port = target.client.address or ('localhost', 27017)
        uri = f'mongodb://{host}:{port}/{target.name}'
    else:
        return None  # mongomock and other in-process databases
    absolute = _absolute(uri)
    if absolute is None:
        return None
    uri = absolute
    metadata = None if CFG.metadata_store is None else _absolute(CFG.metadata_store)
    if CFG.metadata_store is not None and metadata is None:
        return None
    return {'data_backend': uri, 'metadata_store': metadata, 'artifact_store': artifacts}


def _absolute(uri: str) -> str | None:
    scheme, sep, rest = uri.partition(':///')
    base = scheme.split('+')[0].lower()
    if base == 'mongomock' or uri.startswith('mongomock:'):
        return None
    if base in ('sqlite', 'duckdb') and sep:
        path = rest.split('?')[0]
        if not path or path == ':memory:' or path.startswith('?'):
            return None
        query = rest[len(path) :]
        return f'{scheme}:///{Path(path).expanduser().resolve()}{query}'
    return uri


def connect_spec(spec: dict[str, Any]) -> Any:
    """Open the database a :attr:`Datalayer.spec` describes (in a cluster worker, say)."""
    with CFG.override(metadata_store=spec['metadata_store'], artifact_store=spec['artifact_store']):
        return connect(spec['data_backend'])


_reopened: dict[str, Any] = {}
_reopening = threading.Lock()


def reopen(spec: dict[str, Any]) -> Any:
    """The Datalayer of ``spec``, opened once per process: what an unpickled Datalayer stands
    for, and what a Dask worker runs its jobs on."""
    key = repr(sorted(spec.items()))
    with _reopening:
        db = _reopened.get(key)
        if db is None:
            db = _reopened[key] = connect_spec(spec)
        return db
