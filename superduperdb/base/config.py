"""Configuration: one typed settings object, ``CFG``.

Precedence, lowest first: defaults < config file < ``SUPERDUPERDB_*``
environment variables < assignments in code. The config file is
``$SUPERDUPERDB_CONFIG`` if set, else ``./superduperdb.toml`` if present.
Nested groups use ``__`` in environment variables, for example
``SUPERDUPERDB_CLUSTER__DASK_SCHEDULER=tcp://host:8786``.

Names are checked: an unknown key in the file or an unknown ``SUPERDUPERDB_*`` variable
(``chunk_sise``, ``[vector_serch]``), a ``$SUPERDUPERDB_CONFIG`` naming a missing file and a
value outside a setting's choices (``vector_search.engine = "faiss"``) are a ConfigError
naming where the mistake is, with a suggestion.

>>> from superduperdb import CFG
>>> with CFG.override(data_backend='sqlite:///:memory:'):
...     CFG.data_backend
'sqlite:///:memory:'
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from superduperdb.base.exceptions import ConfigError

_HOME = './.superduperdb'
#: Variables with the prefix that are not settings.
_NOT_SETTINGS = ('SUPERDUPERDB_CONFIG', 'SUPERDUPERDB_TEST_')
LOG_LEVELS = ('DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL')
#: The vector-search engines (``superduperdb.vector_search.ENGINES``).
VECTOR_ENGINES = ('inmemory', 'lancedb')


def _choice(value: Any, choices: tuple[str, ...], name: str, *, upper: bool = False) -> Any:
    if isinstance(value, str) and (value.upper() if upper else value) in choices:
        return value.upper() if upper else value
    hint = difflib.get_close_matches(str(value), choices, n=1)
    did = f' Did you mean {hint[0]!r}?' if hint else ''
    raise ValueError(f'{name} is one of {", ".join(choices)}; got {value!r}.{did}')


class _Group(BaseModel):
    model_config = ConfigDict(validate_assignment=True, extra='forbid')


class Cluster(_Group):
    """Where jobs run."""

    #: ``local`` runs jobs in the foreground; ``dask`` sends them to ``dask_scheduler``.
    executor: str = 'local'
    dask_scheduler: str | None = None
    #: Seconds between a running job's heartbeats; a job silent for 3 of them has failed.
    heartbeat: float = 5.0
    #: A watcher's backfill over a large table is split into this many ``predict`` jobs over
    #: ranges of the primary key, which a Dask cluster runs in parallel (a table under
    #: ``backfill_partition_rows`` rows per partition gets fewer). 1: one job.
    backfill_partitions: int = Field(default=1, ge=1, le=1024)
    #: The fewest rows a backfill partition gets.
    backfill_partition_rows: int = Field(default=10_000, ge=1)

    @field_validator('executor')
    @classmethod
    def _executor(cls, value: Any) -> Any:
        return _choice(value, ('local', 'dask'), 'cluster.executor')


class CDC(_Group):
    """Change capture for writes made by other applications (``superduperdb cdc``)."""

    #: Seconds between polls of the high-water mark (and waits for a PostgreSQL notification).
    poll_interval: float = 1.0
    #: Seconds between full reconciles that find updated and deleted rows, and rows without
    #: current outputs and no live job (every backend, PostgreSQL included).
    reconcile_interval: float = 60.0
    #: Seconds before the first retry of a change whose job failed (or of a row in the failure
    #: ledger); doubled at each further failure, up to ``retry_max``.
    retry_backoff: float = 5.0
    retry_max: float = 600.0


class Downloads(_Group):
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


class Server(_Group):
    """The HTTP server started by ``superduperdb serve``."""

    host: str = '127.0.0.1'
    port: int = 3223
    #: Clients send ``Authorization: Bearer <token>``; without one, ``serve`` needs ``--insecure``.
    token: str | None = None
    #: A second token that may only read: queries that find and count, components, jobs,
    #: status and the dashboard's pages; never writes, retries or cancels (403).
    read_token: str | None = None
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


class Components(_Group):
    """Which classes stored component configs may name (see docs/security.md)."""

    #: More allowed component classes, ``"package.module:Class"``, or whole packages,
    #: ``"package"``; besides superduperdb's own, those defined in this process, and those
    #: advertised under the entry-point group ``superduperdb.components``.
    allowed_classes: list[str] = []


class OpenAI(_Group):
    """Settings for OpenAI-compatible API models."""

    api_key: str | None = None
    base_url: str | None = None


class VectorSearch(_Group):
    """Vector-search engines behind ``VectorIndex`` (see ``superduperdb.vector_search``)."""

    #: ``inmemory`` (exact search in numpy) or ``lancedb`` (persistent, ANN index when large).
    engine: str = 'inmemory'
    #: LanceDB: the directory holding one ``<identifier>.lance`` table per index. None:
    #: ``<file>.vectors/`` beside a SQLite/DuckDB file, ``~/.superduperdb/vectors/<database>/``
    #: for a database server (absolute: the same for every working directory).
    path: str | None = None
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

    @field_validator('engine')
    @classmethod
    def _engine(cls, value: Any) -> Any:
        return _choice(value, VECTOR_ENGINES, 'vector_search.engine')

    @field_validator('index_type')
    @classmethod
    def _index_type(cls, value: Any) -> Any:
        return _choice(value, ('IVF_FLAT', 'IVF_SQ', 'IVF_PQ', 'IVF_HNSW_SQ'), 'vector_search.index_type')


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
    #: PostgreSQL: a schema for superduperdb's own tables, change-capture queue and functions,
    #: output tables and their views (made if missing); None: the connection's current schema.
    internal_schema: str | None = None
    #: Seconds to wait for a database server before giving up.
    connect_timeout: float = 5.0
    #: Rows per chunk when reading or writing in bulk.
    chunk_size: int = 1000
    #: Log level of the ``superduperdb`` logger (logs go to stderr): DEBUG, INFO, WARNING, ERROR.
    log_level: str = 'WARNING'

    cluster: Cluster = Cluster()
    cdc: CDC = CDC()
    downloads: Downloads = Downloads()
    server: Server = Server()
    components: Components = Components()
    openai: OpenAI = OpenAI()
    vector_search: VectorSearch = VectorSearch()

    @field_validator('log_level')
    @classmethod
    def _log_level(cls, value: Any) -> Any:
        return _choice(value, LOG_LEVELS, 'log_level', upper=True)

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigError(_explain(exc, values)) from None

    def __setattr__(self, name: str, value: Any) -> None:
        try:
            super().__setattr__(name, value)
        except ValidationError as exc:
            raise ConfigError(_explain(exc, {}, where='code')) from None
        if name == 'log_level' and self is globals().get('CFG'):
            apply_log_level(self.log_level)

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
        _check_environment()
        path = config_file()
        if path is not None:
            _check_file(path)
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
                try:
                    setattr(target, attr, value)
                except ValidationError as exc:
                    raise ConfigError(_explain(exc, {}, where='code', name=name)) from None
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
        if not hasattr(target, attr) or attr.startswith('_') or attr.startswith('model_'):
            names = type(target).model_fields if isinstance(target, BaseModel) else {}
            raise ConfigError(
                f'Unknown setting {dotted!r}.{_suggest(attr, names)} See `superduperdb config`.'
            )
        return target, attr


def config_file() -> Path | None:
    """The config file in effect, if any (a ConfigError if ``$SUPERDUPERDB_CONFIG`` names none)."""
    explicit = os.environ.get('SUPERDUPERDB_CONFIG')
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(
                f'SUPERDUPERDB_CONFIG names {explicit!r}, which is not a file'
                f'{"" if path.is_absolute() else f" (relative to {Path.cwd()})"}. '
                'Fix the path, or unset SUPERDUPERDB_CONFIG to use ./superduperdb.toml.'
            )
        return path
    default = Path('superduperdb.toml')
    return default if default.exists() else None


def _suggest(name: str, choices: Any) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f' Did you mean {close[0]!r}?' if close else ''


def _fields(model: type[BaseModel]) -> dict[str, type[BaseModel] | None]:
    """Setting names of ``model``, each with its group class (None for a plain value)."""
    found: dict[str, type[BaseModel] | None] = {}
    for name, info in model.model_fields.items():
        kind = info.annotation
        found[name] = kind if isinstance(kind, type) and issubclass(kind, BaseModel) else None
    return found


def _check_environment() -> None:
    """Every ``SUPERDUPERDB_*`` variable names a setting."""
    for variable in os.environ:
        upper = variable.upper()
        if not upper.startswith('SUPERDUPERDB_') or upper.startswith(_NOT_SETTINGS):
            continue
        group, *rest = upper.removeprefix('SUPERDUPERDB_').lower().split('__', 1)
        top = _fields(Config)
        if group not in top:
            choices = [f'SUPERDUPERDB_{n.upper()}' for n in top]
            raise ConfigError(
                f'Unknown setting in the environment: {variable}.{_suggest(upper, choices)} '
                'See `superduperdb config` for every setting.'
            )
        model = top[group]
        if rest and (model is None or rest[0] not in model.model_fields):
            choices = [
                f'SUPERDUPERDB_{group.upper()}__{n.upper()}' for n in (model.model_fields if model else ())
            ]
            raise ConfigError(
                f'Unknown setting in the environment: {variable}.{_suggest(upper, choices)} '
                'See `superduperdb config` for every setting.'
            )


def _check_file(path: Path) -> None:
    """Every key of the config file names a setting."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f'Cannot read the config file {path}: {exc}') from None
    top = _fields(Config)
    for key, value in data.items():
        if key not in top:
            raise ConfigError(
                f'Unknown setting {key!r} in {path}.{_suggest(key, top)} '
                'See `superduperdb config` for every setting.'
            )
        model = top[key]
        if model is not None and isinstance(value, dict):
            for sub in value:
                if sub not in model.model_fields:
                    raise ConfigError(
                        f'Unknown setting {sub!r} in [{key}] of {path}.{_suggest(sub, model.model_fields)} '
                        f'[{key}] takes: {", ".join(model.model_fields)}.'
                    )


def _explain(
    exc: ValidationError, values: dict[str, Any], *, where: str | None = None, name: str | None = None
) -> str:
    """One line per bad value, each saying where the value came from."""
    lines = []
    for error in exc.errors():
        loc = [str(part) for part in error['loc']]
        name = name or '.'.join(loc)
        message = str(error.get('ctx', {}).get('error') or error['msg'])
        lines.append(f'Bad setting {name} ({where or _source(loc, values)}): {message}')
    return ' '.join(lines)


def _source(loc: list[str], values: dict[str, Any]) -> str:
    if loc and loc[0] in values:
        return 'code'
    variable = 'SUPERDUPERDB_' + '__'.join(loc).upper()
    if any(v.upper() == variable for v in os.environ):
        return f'environment variable {variable}'
    path = config_file()
    return f'config file {path}' if path is not None else 'code'


class _StderrUnlessConfigured(logging.StreamHandler):  # type: ignore[type-arg]
    """superduperdb's log lines on stderr, unless the application configured logging (then
    its own handlers show them, once)."""

    def emit(self, record: logging.LogRecord) -> None:
        if not logging.getLogger().handlers:
            self.stream = sys.stderr  # the stderr of the moment (redirected, captured)
            super().emit(record)


_HANDLER = _StderrUnlessConfigured()
_HANDLER.setFormatter(logging.Formatter('%(asctime)s %(levelname)s %(name)s: %(message)s'))


def apply_log_level(level: str) -> None:
    """Set the level of the ``superduperdb`` logger (``CFG.log_level`` does this itself)."""
    logger = logging.getLogger('superduperdb')
    logger.setLevel(level)
    if _HANDLER not in logger.handlers:
        logger.addHandler(_HANDLER)


CFG = Config()
apply_log_level(CFG.log_level)
