"""Configuration: one typed settings object, ``CFG``.

Precedence, lowest first: defaults < config file < ``SUPERDUPERDB_*``
environment variables < assignments in code. The config file is
``$SUPERDUPERDB_CONFIG`` if set, else ``./superduperdb.toml`` if present.
Nested groups use ``__`` in environment variables, for example
``SUPERDUPERDB_CLUSTER__DASK_SCHEDULER=tcp://host:8786``.

>>> from superduperdb import CFG
>>> with CFG.override(data_backend='sqlite:///:memory:'):
...     CFG.data_backend
'sqlite:///:memory:'
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

_HOME = './.superduperdb'


class Cluster(BaseModel):
    """Where jobs run."""

    #: ``local`` runs jobs in the foreground; ``dask`` sends them to ``dask_scheduler``.
    executor: str = 'local'
    dask_scheduler: str | None = None
    #: Seconds between a running job's heartbeats; a job silent for 3 of them has failed.
    heartbeat: float = 5.0


class CDC(BaseModel):
    """Change capture for writes made by other applications (``superduperdb cdc``)."""

    #: Seconds between polls of the high-water mark (and waits for a PostgreSQL notification).
    poll_interval: float = 1.0
    #: Seconds between full reconciles that find updated and deleted rows.
    reconcile_interval: float = 60.0


class Downloads(BaseModel):
    """Fetching external data references (``file://``, ``https://``, ``s3://``); see docs/security.md."""

    workers: int = 8
    retries: int = 3
    #: Seconds one attempt at a URI may take in all (connecting, redirects and reading the body).
    timeout: float = 30.0
    #: URI schemes a reference may use; others are refused.
    schemes: list[str] = ['file', 'http', 'https', 's3', 'gs']
    #: Directories ``file://`` references may read under; None: any path (local programs).
    #: Jobs started by a server use ``server.file_roots`` instead.
    file_roots: list[str] | None = None
    #: Fetch ``http(s)://`` from loopback, link-local, private and reserved addresses.
    allow_private_addresses: bool = False
    #: Largest body fetched for one reference, in bytes.
    max_bytes: int = 100 * 1024 * 1024


class Server(BaseModel):
    """The HTTP server started by ``superduperdb serve``."""

    host: str = '127.0.0.1'
    port: int = 3223
    #: Clients send ``Authorization: Bearer <token>``; without one, ``serve`` needs ``--insecure``.
    token: str | None = None
    #: Accept components whose config carries pickled artifacts (models, functions) from
    #: authenticated clients, and decode values with encoders that unpickle. Unpickling runs
    #: code: switch it on only when every token holder may run code on the server.
    allow_artifact_upload: bool = False
    #: ``/docs`` and ``/openapi.json`` answer without the token.
    public_docs: bool = False
    #: Directories ``file://`` references may read under, in jobs a server starts (none: no files).
    file_roots: list[str] = []
    #: Largest request body accepted, in MiB (larger ones get 413).
    max_body_mb: float = 64.0
    #: Seconds a ``find``'s cursor (the rest of its results, read a page per request) stays
    #: open without being read.
    cursor_ttl: float = 300.0


class Components(BaseModel):
    """Which classes stored component configs may name (see docs/security.md)."""

    #: More allowed component classes, ``"package.module:Class"``, or whole packages,
    #: ``"package"``; besides superduperdb's own, those defined in this process, and those
    #: advertised under the entry-point group ``superduperdb.components``.
    allowed_classes: list[str] = []


class OpenAI(BaseModel):
    """Settings for OpenAI-compatible API models."""

    api_key: str | None = None
    base_url: str | None = None


class VectorSearch(BaseModel):
    """Vector-search engines behind ``VectorIndex`` (see ``superduperdb.vector_search``)."""

    #: ``inmemory`` (exact search in numpy) or ``lancedb`` (persistent, ANN index when large).
    engine: str = 'inmemory'
    #: LanceDB: the directory holding one ``<identifier>.lance`` table per index.
    path: str = f'{_HOME}/vectors'
    #: LanceDB: a table with at least this many rows gets an ANN index; smaller ones are searched exactly.
    ann_threshold: int = 50_000
    #: LanceDB: the ANN index type: ``IVF_FLAT`` (exact distances inside the probed partitions),
    #: ``IVF_SQ``, ``IVF_PQ`` or ``IVF_HNSW_SQ`` (quantized: pair them with ``refine_factor``).
    index_type: str = 'IVF_FLAT'
    #: LanceDB: rows per IVF partition when the index is trained.
    partition_rows: int = 4096
    #: LanceDB: fraction of the IVF partitions searched per query; lower is faster, recall drops.
    probe_fraction: float = 1.0
    #: LanceDB: re-rank ``refine_factor * n`` candidates by exact distance (quantized index types).
    refine_factor: int | None = None
    #: LanceDB: retrain the index once the table has grown by this fraction since it was trained.
    retrain_growth: float = 1.0


class Config(BaseSettings):
    """All settings of superduperdb; see the module docstring for precedence."""

    model_config = SettingsConfigDict(
        env_prefix='SUPERDUPERDB_',
        env_nested_delimiter='__',
        validate_assignment=True,
        extra='ignore',
    )

    #: Where data lives when ``superduper()`` is called without arguments.
    data_backend: str = f'sqlite:///{_HOME}/db.sqlite'
    #: Where component and job records live; None means the data backend itself.
    metadata_store: str | None = None
    #: Where heavy component parts live: ``database``, a directory (``/srv/artifacts`` or
    #: ``filesystem://<dir>``) or an fsspec URL (``s3://bucket/prefix``). None: in the database
    #: for PostgreSQL, MySQL/MariaDB and MongoDB; ``<file>.artifacts/`` beside a SQLite/DuckDB file.
    artifact_store: str | None = None
    #: Seconds to wait for a database server before giving up.
    connect_timeout: float = 5.0
    #: Rows per chunk when reading or writing in bulk.
    chunk_size: int = 1000
    #: Log level of the ``superduperdb`` logger (logs go to stderr).
    log_level: str = 'WARNING'

    cluster: Cluster = Cluster()
    cdc: CDC = CDC()
    downloads: Downloads = Downloads()
    server: Server = Server()
    components: Components = Components()
    openai: OpenAI = OpenAI()
    vector_search: VectorSearch = VectorSearch()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = config_file()
        if path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    @contextlib.contextmanager
    def override(self, **changes: Any) -> Iterator[Config]:
        """Temporarily change settings (dotted names reach into groups: ``cluster.executor``)."""
        saved: dict[str, Any] = {}
        try:
            for name, value in changes.items():
                target, attr = self._resolve(name)
                saved[name] = getattr(target, attr)
                setattr(target, attr, value)
            yield self
        finally:
            for name, value in saved.items():
                target, attr = self._resolve(name)
                setattr(target, attr, value)

    def _resolve(self, dotted: str) -> tuple[Any, str]:
        *groups, attr = dotted.split('.')
        target: Any = self
        for group in groups:
            target = getattr(target, group)
        if not hasattr(target, attr):
            from superduperdb.base.exceptions import ConfigError

            raise ConfigError(f'Unknown setting {dotted!r}. See `superduperdb config`.')
        return target, attr


def config_file() -> Path | None:
    """The config file in effect, if any."""
    explicit = os.environ.get('SUPERDUPERDB_CONFIG')
    if explicit:
        return Path(explicit)
    default = Path('superduperdb.toml')
    return default if default.exists() else None


CFG = Config()
