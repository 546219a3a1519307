"""Configuration: one typed settings object, ``CFG``.

Precedence, lowest first: defaults < config file < ``SUPERDUPERDB_*``
environment variables < assignments in code. The config file is
``$SUPERDUPERDB_CONFIG`` if set, else ``./superduperdb.toml`` if present.
Nested groups use ``__`` in environment variables, for example
``SUPERDUPERDB_CLUSTER__DASK_SCHEDULER=tcp://host:8786``; a list is JSON
(``SUPERDUPERDB_DOWNLOADS__SCHEMES='["https"]'``) or comma-separated.

Names are checked: an unknown key in the file or an unknown ``SUPERDUPERDB_*`` variable
(``chunk_sise``, ``[vector_serch]``), a ``$SUPERDUPERDB_CONFIG`` naming a missing file and a
value of the wrong type or outside a setting's choices or bounds
(``vector_search.engine = "faiss"``) are a ConfigError naming where the mistake is, with a
suggestion.

Every value is converted and checked when it is set, whatever its source, by the small
``Settings`` class below: plain Python on purpose, because this module is imported by every
process (``superduper()``, the CLI, each Dask worker) and pydantic-settings alone took longer
to import than the rest of a first ``superduper()`` call.

>>> from superduperdb import CFG
>>> with CFG.override(data_backend='sqlite:///:memory:'):
...     CFG.data_backend
'sqlite:///:memory:'
"""

import contextlib
import difflib
import json
import logging
import os
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from superduperdb.base.exceptions import ConfigError
from superduperdb.base.masking import mask_secrets

_HOME = './.superduperdb'
#: Variables with the prefix that are not settings.
_NOT_SETTINGS = ('SUPERDUPERDB_CONFIG', 'SUPERDUPERDB_TEST_')
LOG_LEVELS = ('DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL')
#: The vector-search engines (``superduperdb.vector_search.ENGINES``).
VECTOR_ENGINES = ('inmemory', 'lancedb')
_TRUE = ('1', 'true', 'yes', 'on')
_FALSE = ('0', 'false', 'no', 'off')


class _Checks:
    """A setting's default and what its values must satisfy (see ``setting``)."""

    def __init__(
        self,
        default: Any,
        *,
        ge: float | None = None,
        le: float | None = None,
        choices: tuple[str, ...] = (),
        upper: bool = False,
        secret: bool = False,
        check: Any = None,
    ) -> None:
        self.default = default
        self.ge, self.le, self.choices, self.upper, self.secret = ge, le, choices, upper, secret
        #: a function that raises ValueError (saying why) on a value it refuses
        self.check = check


def setting(default: Any, **checks: Any) -> Any:
    """A setting's default with checks: ``ge``/``le`` bounds, ``choices`` (``upper``: compared in
    upper case), ``secret`` (masked when printed), ``check`` (a function raising ValueError)."""
    return _Checks(default, **checks)


def _choice(value: Any, choices: tuple[str, ...], name: str, *, upper: bool = False) -> Any:
    if isinstance(value, str) and (value.upper() if upper else value) in choices:
        return value.upper() if upper else value
    hint = difflib.get_close_matches(str(value), choices, n=1)
    did = f' Did you mean {hint[0]!r}?' if hint else ''
    raise ValueError(f'{name} is one of {", ".join(choices)}; got {value!r}.{did}')


def _convert(kind: Any, value: Any) -> Any:
    """``value`` as a ``kind`` (``str``, ``int``, ``float``, ``bool``, ``list[str]``, each
    optionally ``| None``); text is parsed as the environment gives it. A ValueError says why not."""
    if isinstance(kind, types.UnionType):  # X | None
        (kind,) = (k for k in kind.__args__ if k is not type(None))
        if value is None or value == '':  # an empty variable unsets an optional setting
            return None
    if value is None:
        raise ValueError('may not be None')
    if kind is str:
        if isinstance(value, str):
            return value
        raise ValueError(f'expected text, got {value!r}')
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError(f'expected true or false, got {value!r}')
    if kind in (int, float):
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = float(value) if kind is float or '.' in value or 'e' in value.lower() else int(value)
        if isinstance(value, int | float) and not isinstance(value, bool):
            if kind is float:
                return float(value)
            if float(value).is_integer():
                return int(value)
        noun = 'a number' if kind is float else 'a whole number'
        raise ValueError(f'expected {noun}, got {value!r}')
    if getattr(kind, '__origin__', None) is list:  # list[str]
        if isinstance(value, str):
            text = value.strip()
            if text.startswith('['):
                try:
                    value = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise ValueError(f'{value!r} is not a JSON list: {exc}') from None
            else:
                value = [part.strip() for part in text.split(',') if part.strip()]
        if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
            return list(value)
        raise ValueError(f'expected a list of text, got {value!r}')
    raise TypeError(f'settings of type {kind!r} are not supported')  # a mistake in this module


class Settings:
    """A group of typed settings, declared as annotated class attributes:

    ``name: type = default`` or ``name: type = setting(default, ge=..., choices=...)``, or
    ``name: Group`` for a nested group. Values are converted and checked when they are set, from
    the config file, the environment or code; an unknown name or a bad value is a ConfigError
    saying which setting, where it was set and why.
    """

    _declared: ClassVar[dict[str, tuple[Any, _Checks]]] = {}
    #: This group's dotted prefix in ``CFG`` (``'cluster.'``), for error messages.
    _path: str

    def __init_subclass__(cls) -> None:
        cls._declared = {}
        for name, kind in cls.__dict__.get('__annotations__', {}).items():
            if name.startswith('_'):
                continue
            declared = cls.__dict__.get(name)
            checks = declared if isinstance(declared, _Checks) else _Checks(declared)
            cls._declared[name] = (kind, checks)
            if not _is_group(kind):
                setattr(cls, name, checks.default)  # ``Config.chunk_size``: the default

    def __init__(self, _path: str = '', **values: Any) -> None:
        object.__setattr__(self, '_path', _path)
        for name, (kind, checks) in self._declared.items():
            default = kind(_path=f'{_path}{name}.') if _is_group(kind) else checks.default
            object.__setattr__(self, name, list(default) if isinstance(default, list) else default)
        for name, value in values.items():
            self.set(name, value, 'code')

    def set(self, name: str, value: Any, where: str) -> None:
        """Set ``name`` to ``value``, converted and checked; ``where`` names the source in errors."""
        if name not in self._declared:
            raise ConfigError(
                f'Unknown setting {self._path + name!r} ({where}).{_suggest(name, self._declared)} '
                'See `superduperdb config` for every setting.'
            )
        kind, checks = self._declared[name]
        if _is_group(kind):
            self._set_group(name, kind, value, where)
            return
        try:
            value = _convert(kind, value)
            if checks.choices and value is not None:
                value = _choice(value, checks.choices, self._path + name, upper=checks.upper)
            if checks.ge is not None and value is not None and value < checks.ge:
                raise ValueError(f'must be at least {checks.ge}; got {value}')
            if checks.le is not None and value is not None and value > checks.le:
                raise ValueError(f'must be at most {checks.le}; got {value}')
            if checks.check is not None and value is not None:
                checks.check(value)
        except ValueError as exc:
            raise ConfigError(f'Bad setting {self._path + name} ({where}): {exc}') from None
        object.__setattr__(self, name, value)

    def _set_group(self, name: str, kind: type['Settings'], value: Any, where: str) -> None:
        """A group instance replaces the group; a dict (a TOML table, a JSON object) is merged
        into it. Either is checked whole before the group changes: nothing is half set."""
        fresh = kind(_path=f'{self._path}{name}.')
        if isinstance(value, kind):
            changes = value.to_dict()
        else:
            if isinstance(value, str) and where.startswith('environment'):
                with contextlib.suppress(json.JSONDecodeError):
                    value = json.loads(value)
            if not isinstance(value, dict):
                raise ConfigError(
                    f'Bad setting {self._path + name} ({where}): a group of settings takes a table '
                    f'(a dict, a JSON object) of {", ".join(kind._declared)}; got {value!r}.'
                )
            current = getattr(self, name)
            for sub in kind._declared:  # what is set already, then the changes over it
                object.__setattr__(fresh, sub, getattr(current, sub))
            changes = value
        for sub, sub_value in changes.items():
            fresh.set(sub, sub_value, where)
        object.__setattr__(self, name, fresh)

    def __setattr__(self, name: str, value: Any) -> None:
        self.set(name, value, 'code')

    def to_dict(self, *, hide_secrets: bool = False) -> dict[str, Any]:
        """Every setting's value, groups as nested dicts; ``hide_secrets``: tokens, keys and the
        passwords in URIs as ``***``."""
        out: dict[str, Any] = {}
        for name, (kind, checks) in self._declared.items():
            value = getattr(self, name)
            if _is_group(kind):
                value = value.to_dict(hide_secrets=hide_secrets)
            elif isinstance(value, list):
                value = [mask_secrets(v) if hide_secrets and isinstance(v, str) else v for v in value]
            elif hide_secrets and checks.secret and value:
                value = '***'
            elif hide_secrets and isinstance(value, str):
                value = mask_secrets(value)  # postgresql://user:***@host/db, ?password=***
            out[name] = value
        return out

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.to_dict() == other.to_dict()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        shown = ', '.join(f'{k}={v!r}' for k, v in self.to_dict(hide_secrets=True).items())
        return f'{type(self).__name__}({shown})'


def _is_group(kind: Any) -> bool:
    return isinstance(kind, type) and issubclass(kind, Settings)


class Cluster(Settings):
    """Where jobs run."""

    #: ``local`` runs jobs in the foreground; ``dask`` sends them to ``dask_scheduler``.
    executor: str = setting('local', choices=('local', 'dask'))
    dask_scheduler: str | None = None
    #: Seconds between a running job's heartbeats; a job silent for 3 of them has failed.
    heartbeat: float = setting(5.0, ge=0.01)
    #: A watcher's backfill over a large table is split into this many ``predict`` jobs over
    #: ranges of the primary key, which a Dask cluster runs in parallel (a table under
    #: ``backfill_partition_rows`` rows per partition gets fewer). 1: one job.
    backfill_partitions: int = setting(1, ge=1, le=1024)
    #: The fewest rows a backfill partition gets.
    backfill_partition_rows: int = setting(10_000, ge=1)


class CDC(Settings):
    """Change capture for writes made by other applications (``superduperdb cdc``)."""

    #: Seconds between polls of the high-water mark (and waits for a PostgreSQL notification).
    poll_interval: float = setting(1.0, ge=0.001)
    #: Seconds between full reconciles that find updated and deleted rows, and rows without
    #: current outputs and no live job (every backend, PostgreSQL included).
    reconcile_interval: float = setting(60.0, ge=0.001)
    #: Seconds before the first retry of a change whose job failed (or of a row in the failure
    #: ledger); doubled at each further failure, up to ``retry_max``.
    retry_backoff: float = setting(5.0, ge=0)
    retry_max: float = setting(600.0, ge=0)


class Downloads(Settings):
    """Fetching external data references (``file://``, ``https://``, ``s3://``); see docs/security.md."""

    workers: int = setting(8, ge=1)
    retries: int = setting(3, ge=0)
    #: Seconds one attempt at a URI may take in all (connecting, redirects and reading the body).
    timeout: float = setting(30.0, ge=0.001)
    #: URI schemes a reference may use; others are refused.
    schemes: list[str] = ['file', 'http', 'https', 's3', 'gs']
    #: Directories ``file://`` references may read under; None: any path (local programs).
    #: Jobs started by a server use ``server.file_roots`` instead.
    file_roots: list[str] | None = None
    #: Fetch ``http(s)://`` from loopback, link-local, private and reserved addresses.
    allow_private_addresses: bool = False
    #: Largest body fetched for one reference, in bytes.
    max_bytes: int = setting(100 * 1024 * 1024, ge=1)


class Limits(Settings):
    """Bounds on values and queries, checked before anything is allocated or sent to a
    database (decoders read sizes from headers first); see docs/security.md."""

    #: The most pixels an image may have (width x height); larger ones are refused when
    #: decoded. Pillow's own guard (``PIL.Image.MAX_IMAGE_PIXELS``) still applies above it.
    max_pixels: int = setting(50_000_000, ge=1)
    #: The most bytes one decoded array, tensor or audio clip may take.
    max_value_bytes: int = setting(256 * 1024 * 1024, ge=1)
    #: The deepest nesting of a document, filter or update (levels of dicts and lists).
    max_depth: int = setting(64, ge=1, le=200)
    #: The most terms (field conditions and logical operators) in one filter. SQLite refuses
    #: filters of more than about 990 terms.
    max_filter_terms: int = setting(500, ge=1)
    #: The most values in the ``$in``/``$nin`` lists of a filter sent to the server.
    max_filter_values: int = setting(10_000, ge=1)
    #: The most keys a query may sort by.
    max_sort_keys: int = setting(32, ge=1)


class Server(Settings):
    """The HTTP server started by ``superduperdb serve``."""

    host: str = '127.0.0.1'
    port: int = setting(3223, ge=0, le=65535)
    #: Clients send ``Authorization: Bearer <token>``; without one, ``serve`` needs ``--insecure``.
    token: str | None = setting(None, secret=True)
    #: A second token that may only read: queries that find and count, components, jobs,
    #: status and the dashboard's pages; never writes, retries or cancels (403).
    read_token: str | None = setting(None, secret=True)
    #: Accept components whose config carries pickled artifacts (models, functions) from
    #: authenticated clients, and decode values with encoders that unpickle. Unpickling runs
    #: code: switch it on only when every token holder may run code on the server.
    allow_artifact_upload: bool = False
    #: ``/docs`` and ``/openapi.json`` answer without the token.
    public_docs: bool = False
    #: Directories ``file://`` references may read under, in jobs a server starts (none: no files).
    file_roots: list[str] = []
    #: Largest request body accepted, in MiB (larger ones get 413).
    max_body_mb: float = setting(64.0, ge=0)
    #: Seconds a ``find``'s cursor (the rest of its results, read a page per request) stays
    #: open without being read.
    cursor_ttl: float = setting(300.0, ge=0)
    #: Requests handled at once (each on a thread, using up to two database connections:
    #: the database pool is sized to match, see ``pool_size``). More wait their turn, holding
    #: no thread or connection, for at most ``queue_timeout`` seconds.
    max_concurrency: int = setting(8, ge=1, le=1000)
    #: Seconds a request may wait for its turn (a write: and for the write lock) before it is
    #: answered 503 (``Overloaded``) with ``Retry-After``: the server sheds load, never stalls.
    queue_timeout: float = setting(10.0, ge=0)
    #: Seconds an insert's ``Idempotency-Key`` is remembered (in the metadata store): a retry
    #: with the same key gets the first answer, and nothing is written twice.
    idempotency_ttl: float = setting(86400.0, ge=1)


class Components(Settings):
    """Which classes stored component configs may name, which values may run code when
    decoded (see docs/security.md)."""

    #: More allowed component classes, ``"package.module:Class"``, or whole packages,
    #: ``"package"``; besides superduperdb's own, those defined in this process, and those
    #: advertised under the entry-point group ``superduperdb.components``.
    allowed_classes: list[str] = []
    #: Decode values of encoders that run code (pickle) although superduperdb did not seal
    #: them: only to read values stored before seals existed, once, and write them back.
    decode_unsealed_values: bool = False


def _check_budget(value: str) -> None:
    if value != 'database' and not (value.startswith('redis://') and len(value) > len('redis://')):
        raise ValueError(f"is 'database' or a Redis URL such as redis://localhost:6379/0; got {value!r}")


def parse_prices(entries: list[str]) -> dict[str, tuple[float, float]]:
    """``openai.prices`` as {API model: (USD per million input tokens, per million output)}."""
    prices = {}
    for entry in entries:
        name, eq, price = entry.partition('=')
        parts = price.split('/')
        try:
            values = [float(p) for p in parts]
        except ValueError:
            values = []
        if not eq or not name.strip() or len(values) not in (1, 2) or min(values) < 0:
            raise ValueError(
                f'each price is "model=USD per million input tokens[/per million output tokens]", '
                f'e.g. "text-embedding-3-small=0.02" or "gpt-4o-mini=0.15/0.60"; got {entry!r}'
            )
        prices[name.strip()] = (values[0], values[-1] if len(values) == 2 else 0.0)
    return prices


class OpenAI(Settings):
    """Settings for OpenAI-compatible API models (see docs/api_models.md)."""

    api_key: str | None = setting(None, secret=True)
    base_url: str | None = None
    #: More base URLs (OpenAI-compatible servers: vLLM, Ollama, llama.cpp) that models added
    #: through the server may name, besides base_url; the server's API key is sent to them.
    allowed_base_urls: list[str] = []
    #: Where the rate-limit budgets shared by every process live: 'database' (the metadata
    #: store, on the database server's clock) or a Redis URL (redis://host:6379/0).
    budget: str = setting('database', check=_check_budget)
    #: Prices, "model=USD per million input tokens[/per million output tokens]", for estimates
    #: and usage: ["text-embedding-3-small=0.02", "gpt-4o-mini=0.15/0.60"].
    prices: list[str] = setting([], check=parse_prices)
    #: A backfill whose estimated cost (USD) is above this asks for confirmation:
    #: watch=True / db.add(watcher) raise until confirm_cost=True is passed (None: never ask).
    confirm_cost_above: float | None = setting(None, ge=0)


class VectorSearch(Settings):
    """Vector-search engines behind ``VectorIndex`` (see ``superduperdb.vector_search``)."""

    #: ``inmemory`` (exact search in numpy) or ``lancedb`` (persistent, ANN index when large).
    engine: str = setting('inmemory', choices=VECTOR_ENGINES)
    #: Exact searches (of ``inmemory`` indexes) run by the database itself where it can
    #: (ClickHouse: its distance functions over the stored vectors): no copy of the vectors in
    #: this process, but slower per search (measured in docs/warehouses.md), so off by default.
    in_database: bool = False
    #: Seconds between checks of each process's engine against the stored outputs (every
    #: vector, by input fingerprint: missing, stale and extra ones repaired); 0: before every search.
    verify_interval: float = setting(30.0, ge=0)
    #: LanceDB: the directory holding one ``<identifier>.lance`` table per index. None:
    #: ``<file>.vectors/`` beside a SQLite/DuckDB file, ``~/.superduperdb/vectors/<database>/``
    #: for a database server (absolute: the same for every working directory).
    path: str | None = None
    #: LanceDB: a table with at least this many rows gets an ANN index; smaller ones are searched exactly.
    ann_threshold: int = setting(50_000, ge=0)
    #: LanceDB: the ANN index type: ``IVF_FLAT`` (exact distances inside the probed partitions),
    #: ``IVF_SQ``, ``IVF_PQ`` or ``IVF_HNSW_SQ`` (quantized: pair them with ``refine_factor``).
    index_type: str = setting('IVF_FLAT', choices=('IVF_FLAT', 'IVF_SQ', 'IVF_PQ', 'IVF_HNSW_SQ'))
    #: LanceDB: rows per IVF partition when the index is trained.
    partition_rows: int = setting(4096, ge=1)
    #: LanceDB: fraction of the IVF partitions searched per query; lower is faster, recall drops.
    probe_fraction: float = setting(1.0, ge=0, le=1)
    #: LanceDB: re-rank ``refine_factor * n`` candidates by exact distance (quantized index types).
    refine_factor: int | None = setting(None, ge=1)
    #: LanceDB: retrain the index once the table has grown by this fraction since it was trained.
    retrain_growth: float = setting(1.0, ge=0)


class Fold(Settings):
    """The ``_fold`` every row has (``'train'`` or ``'valid'``), derived from its key: see
    :mod:`superduperdb.base.folds`."""

    #: The share of rows whose ``_fold`` is ``'valid'``. Raising it only moves rows from
    #: ``'train'`` to ``'valid'``; a table's own ``_fold`` column takes precedence.
    valid_fraction: float = setting(0.1, ge=0, le=1)


class Config(Settings):
    """All settings of superduperdb; see the module docstring for precedence.

    ``Config()`` reads the config file and the environment, then applies ``values`` (code).
    """

    #: Where data lives when ``superduper()`` is called without arguments.
    data_backend: str = f'sqlite:///{_HOME}/db.sqlite'
    #: Where component and job records live; None means the data backend itself.
    metadata_store: str | None = None
    #: Where heavy component parts live: ``database``, a directory (``/srv/artifacts`` or
    #: ``filesystem://<dir>``) or an fsspec URL (``s3://bucket/prefix``). None: in the database
    #: for PostgreSQL, MySQL/MariaDB and MongoDB; ``<file>.artifacts/`` beside a SQLite/DuckDB file.
    artifact_store: str | None = None
    #: PostgreSQL: the schema for superduperdb's own tables, change-capture queue and functions,
    #: output tables and their views (made before the first of them). Unset: ``superduperdb``
    #: for a new installation; an installation in the connection's own schema stays there.
    #: The connection's own schema (``public``): beside your tables. Other databases
    #: have no schemas: there superduperdb's tables are beside yours (or in ``metadata_store``).
    internal_schema: str | None = None
    #: Seconds to wait for a database server before giving up.
    connect_timeout: float = setting(5.0, ge=0.001)
    #: Most connections one process keeps to a database server (PostgreSQL, MySQL/MariaDB)
    #: or SQLite file; opened as needed. ``superduperdb serve`` raises it to what
    #: ``server.max_concurrency`` needs (two per request, and four for background work).
    pool_size: int = setting(20, ge=1, le=10_000)
    #: Seconds a statement waits for a free pooled connection before failing (a server then
    #: answers 503 with ``Retry-After``).
    pool_timeout: float = setting(10.0, ge=0.001)
    #: Rows per chunk when reading or writing in bulk.
    chunk_size: int = setting(1000, ge=1)
    #: Log level of the ``superduperdb`` logger (logs go to stderr): DEBUG, INFO, WARNING, ERROR.
    log_level: str = setting('WARNING', choices=LOG_LEVELS, upper=True)

    cluster: Cluster
    cdc: CDC
    downloads: Downloads
    server: Server
    limits: Limits
    components: Components
    openai: OpenAI
    vector_search: VectorSearch
    fold: Fold

    def __init__(self, **values: Any) -> None:
        super().__init__()
        path = config_file()
        if path is not None:
            self._read_file(path)
        self._read_environment()
        for name, value in values.items():
            self.set(name, value, 'code')

    def set(self, name: str, value: Any, where: str) -> None:
        super().set(name, value, where)
        if name == 'log_level' and self is globals().get('CFG'):
            apply_log_level(self.log_level)

    def _read_file(self, path: Path) -> None:
        """The config file's values; every key must name a setting."""
        import tomllib  # only when there is a file

        try:
            data = tomllib.loads(path.read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f'Cannot read the config file {path}: {exc}') from None
        where = f'config file {path}'
        for key, value in data.items():
            if key not in self._declared:
                raise ConfigError(
                    f'Unknown setting {key!r} in {path}.{_suggest(key, self._declared)} '
                    'See `superduperdb config` for every setting.'
                )
            kind = self._declared[key][0]
            if _is_group(kind) and isinstance(value, dict):
                for sub in value:
                    if sub not in kind._declared:
                        raise ConfigError(
                            f'Unknown setting {sub!r} in [{key}] of {path}.{_suggest(sub, kind._declared)} '
                            f'[{key}] takes: {", ".join(kind._declared)}.'
                        )
            self.set(key, value, where)

    def _read_environment(self) -> None:
        """``SUPERDUPERDB_*`` variables (any case); every one must name a setting. Whole groups
        (``SUPERDUPERDB_CLUSTER='{...}'``) come before single settings of a group."""
        found = []
        for variable, value in os.environ.items():
            upper = variable.upper()
            if not upper.startswith('SUPERDUPERDB_') or upper.startswith(_NOT_SETTINGS):
                continue
            name, *rest = upper.removeprefix('SUPERDUPERDB_').lower().split('__', 1)
            kind: Any = self._declared[name][0] if name in self._declared else None
            known = name in self._declared and (not rest or (_is_group(kind) and rest[0] in kind._declared))
            if not known:
                names = [f'SUPERDUPERDB_{n.upper()}' for n in self._declared]
                if rest and _is_group(kind):
                    names = [f'SUPERDUPERDB_{name.upper()}__{n.upper()}' for n in kind._declared]
                raise ConfigError(
                    f'Unknown setting in the environment: {variable}.{_suggest(upper, names)} '
                    'See `superduperdb config` for every setting.'
                )
            found.append((len(rest), name, rest, f'environment variable {upper}', value))
        for _, name, rest, where, value in sorted(found, key=lambda item: item[0]):
            if rest:
                getattr(self, name).set(rest[0], value, where)
            else:
                self.set(name, value, where)

    @contextlib.contextmanager
    def override(self, **changes: Any) -> Iterator['Config']:
        """Temporarily change settings (dotted names reach into groups: ``cluster.executor``)."""
        saved: dict[str, Any] = {}
        try:
            for name, value in changes.items():
                target, attr = self._resolve(name)
                before = getattr(target, attr)
                saved[name] = before.to_dict() if isinstance(before, Settings) else before
                target.set(attr, value, 'code')
            yield self
        finally:
            for name, value in saved.items():
                target, attr = self._resolve(name)
                target.set(attr, value, 'code')

    def _resolve(self, dotted: str) -> tuple[Settings, str]:
        *groups, attr = dotted.split('.')
        target: Settings = self
        for group in groups:
            if group not in target._declared or not _is_group(target._declared[group][0]):
                raise ConfigError(
                    f'Unknown setting {dotted!r}: there is no group {group!r}. See `superduperdb config`.'
                )
            target = getattr(target, group)
        if attr not in target._declared:
            raise ConfigError(
                f'Unknown setting {dotted!r}.{_suggest(attr, target._declared)} See `superduperdb config`.'
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


class _StderrUnlessConfigured(logging.StreamHandler):  # type: ignore[type-arg]
    """superduperdb's log lines on stderr, unless the application configured logging (then
    its own handlers show them, once)."""

    def emit(self, record: logging.LogRecord) -> None:
        if not logging.getLogger().handlers:
            self.stream = sys.stderr  # the stderr of the moment (redirected, captured)
            super().emit(record)


_HANDLER = _StderrUnlessConfigured()


class _MaskingFormatter(logging.Formatter):
    """Log lines with secrets masked (a URI's password, ``?password=``: see base/masking.py),
    tracebacks included: messages and errors often quote the URI they failed on."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_secrets(super().format(record))


_HANDLER.setFormatter(_MaskingFormatter('%(asctime)s %(levelname)s %(name)s: %(message)s'))


def apply_log_level(level: str) -> None:
    """Set the level of the ``superduperdb`` logger (``CFG.log_level`` does this itself)."""
    logger = logging.getLogger('superduperdb')
    logger.setLevel(level)
    if _HANDLER not in logger.handlers:
        logger.addHandler(_HANDLER)


CFG = Config()
apply_log_level(CFG.log_level)
