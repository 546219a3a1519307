"""The small contract every database backend implements.

A backend only reads and writes; policy (encoding, versions, metadata,
jobs) lives above it in :class:`~superduperdb.datalayer.datalayer.Datalayer`.
Filters and updates reach a backend already validated
(:mod:`superduperdb.query.filters`), and documents reach it already
encoded: plain JSON-like values and ``bytes``.
"""

from __future__ import annotations

import abc
import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from superduperdb.base.exceptions import ConfigError, QueryError

if TYPE_CHECKING:
    from superduperdb.backends.changes import ChangeSource, Handler
    from superduperdb.datalayer.datalayer import Datalayer

#: Column types a backend must be able to create, by name.
COLUMN_TYPES = ('str', 'int', 'float', 'bool', 'bytes', 'json')


@dataclass(frozen=True)
class Capabilities:
    """What a backend does beyond the contract's required members, declared by the backend
    (``DataBackend.capabilities``) instead of found by probing for methods. Each flag names
    the optional members it stands for; a backend without it leaves them to their defaults."""

    #: ``find_columns`` (a find read as one array per column) and ``column_kind``
    column_reads: bool = False
    #: ``insert_rows``: rows written as tuples of known columns, no documents built
    bulk_rows: bool = False
    #: readable views of outputs beside their inputs (``<table>__<key>__<model>``), SQL's
    views: bool = False
    #: ``search_vectors``: exact vector search over stored vectors, run by the database itself
    vector_search: bool = False
    #: ``find_arrow``: a find read as one Arrow table by the database (DataFrames)
    arrow_reads: bool = False


class DataBackend(abc.ABC):
    """Reads and writes documents in one database.

    The abstract members are the contract; the others are optional, with defaults that say
    "not here" (None, nothing done). What a backend adds is declared in :attr:`capabilities`
    or answered by its override of a member returning None here: callers never probe with
    ``hasattr``.
    """

    #: what this backend does beyond the contract
    capabilities: ClassVar[Capabilities] = Capabilities()
    #: the SQLAlchemy engine of a SQL database; None elsewhere
    engine: Any = None
    #: rows per chunk this backend wants at least (a lake: whole files' worth)
    min_chunk_size: ClassVar[int] = 0

    #: 'sqlite', 'postgresql', 'mysql', 'duckdb' or 'mongodb'.
    name: ClassVar[str]
    #: True when encoded values carry their encoder's name inline (MongoDB);
    #: False when a column's encoder is kept in the metadata store (SQL).
    self_describing: ClassVar[bool]
    #: True when only one process at a time may write (a DuckDB file).
    single_writer: ClassVar[bool] = False
    #: True when tables have fixed columns, so the names a query uses can be checked (SQL).
    has_schema: ClassVar[bool] = False
    #: True when rows are only ever appended (a lake): ``update`` and ``delete`` raise NotSupported.
    append_only: ClassVar[bool] = False

    @abc.abstractmethod
    def insert(self, table: str, documents: Sequence[dict[str, Any]], *, new_columns: bool) -> list[Any]:
        """Insert all documents in one transaction; return their primary keys.

        Creates the table from the documents if it does not exist. With
        ``new_columns`` a key the table lacks becomes a new column; without it,
        such a key is an error naming the table's columns.
        """

    @abc.abstractmethod
    def find(
        self,
        table: str,
        filter: dict[str, Any],
        *,
        projection: dict[str, int] | None = None,
        sort: Sequence[tuple[str, int]] = (),
        limit: int | None = None,
        skip: int = 0,
        chunk_size: int = 1000,
    ) -> Iterator[list[dict[str, Any]]]:
        """Matching rows, as chunks of at most ``chunk_size`` rows."""

    @abc.abstractmethod
    def count(self, table: str, filter: dict[str, Any]) -> int:
        """Number of matching rows (0 for a table that does not exist)."""

    @abc.abstractmethod
    def update(
        self,
        table: str,
        filter: dict[str, Any],
        update: dict[str, Any],
        *,
        many: bool,
        new_columns: bool = False,
    ) -> list[Any]:
        """Apply ``update`` to the first or all matches; return the updated primary keys.

        ``new_columns`` as for :meth:`insert`, for fields that ``$set`` introduces.
        """

    def get(self, table: str, key: Any) -> dict[str, Any] | None:
        """The row whose primary key is ``key``, or None (a lookup a hot path may repeat often)."""
        for chunk in self.find(table, {self.primary_key(table): key}, limit=1):
            return chunk[0]
        return None

    def keys(self, table: str, filter: dict[str, Any]) -> list[Any]:
        """The primary keys of every matching row, in no particular order (one query where possible)."""
        pk = self.primary_key(table)
        return [
            row[pk]
            for chunk in self.find(table, filter, projection={pk: 1}, chunk_size=50_000)
            for row in chunk
        ]

    def create_index(self, table: str, columns: Sequence[str]) -> None:
        """Index ``columns`` of ``table`` if not indexed yet (a speed-up only: may do nothing)."""
        return None

    @abc.abstractmethod
    def set_fields(self, table: str, updates: Sequence[tuple[Any, dict[str, Any]]]) -> None:
        """Set different fields on different rows (``[(primary key, {field: value})]``) in bulk."""

    @abc.abstractmethod
    def delete(self, table: str, filter: dict[str, Any], *, many: bool) -> list[Any]:
        """Delete the first or all matches; return the deleted primary keys."""

    @abc.abstractmethod
    def create_table(self, table: str, schema: dict[str, str], *, primary_key: str = '_id') -> None:
        """Create ``table`` with ``schema`` (column name -> one of COLUMN_TYPES) if missing."""

    def record_creations_in(self, registry: str, *, before: Callable[[], None] | None = None) -> bool:
        """Record each table created from now on as a row of ``registry`` (a table of this
        database), in the same step that creates the table, calling ``before`` first (it makes
        ``registry``). False: this backend does not, and whoever creates a table records it
        (first, as an intent) itself."""
        return False

    @abc.abstractmethod
    def drop_table(self, table: str) -> None:
        """Drop ``table`` if it exists."""

    @abc.abstractmethod
    def list_tables(self) -> list[str]:
        """Names of the tables/collections in the database."""

    def change_source(self, db: Datalayer, handle: Handler, stop: threading.Event) -> ChangeSource:
        """How this backend reports writes made by other programs (see
        :mod:`superduperdb.backends.changes`); ConfigError where it cannot."""
        raise ConfigError(f'Change capture does not support the {self.name} backend.')

    def drop_own_objects(self, prefix: str) -> list[str]:
        """Drop every table superduperdb made here (named with ``prefix``); what was dropped,
        described (``table _superduper_jobs``). Backends with views, triggers or functions
        of superduperdb's drop those too."""
        dropped = []
        for table in self.list_tables():
            if table.startswith(prefix):
                self.drop_table(table)
                dropped.append(f'table {table}')
        return dropped

    def columns(self, table: str, *, refresh: bool = False) -> list[str] | None:
        """The columns of ``table`` (cached; ``refresh`` reads them again), None if there is no
        such table. Only where :attr:`has_schema`."""
        raise NotImplementedError(f'{self.name} tables have no fixed columns')

    def has_table(self, table: str) -> bool:
        """Whether ``table`` exists."""
        return table in self.list_tables()

    def clock(self) -> float | None:
        """The database server's time (seconds since the epoch), for leases and heartbeats that
        processes on several hosts compare; None where the database is this machine's (an
        embedded one), whose clock is this process's."""
        return None

    def is_internal(self, name: str) -> bool:
        """Whether ``name`` is an object superduperdb made besides its ``_superduper*`` tables
        (SQL: the readable views of outputs), which the query API must not read or write."""
        return False

    @abc.abstractmethod
    def primary_key(self, table: str) -> str:
        """The primary key column of ``table`` (``_id`` for new tables and on MongoDB)."""

    def describe(self) -> str:
        """A one-line description for ``superduperdb info``, without secrets."""
        return self.name

    def one_thread_at_a_time(self) -> bool:
        """Whether this database serves one thread at a time (a server's requests take turns):
        a single-writer file, and in-process stand-ins that are not thread-safe."""
        return self.single_writer

    # ----- optional, declared here: "not here" unless a backend overrides them -----------------
    def find_columns(
        self,
        table: str,
        filter: dict[str, Any],
        columns: Sequence[str],
        *,
        sort: Sequence[tuple[str, int]] = (),
        limit: int | None = None,
        skip: int = 0,
        chunk_size: int = 1000,
        ordered: bool = True,
    ) -> Iterator[dict[str, list[Any]]]:
        """:meth:`find`, one list per column per chunk (where ``capabilities.column_reads``)."""
        raise NotImplementedError(f'{self.name} does not read columns (capabilities.column_reads)')

    def column_kind(self, table: str, column: str) -> str | None:
        """The kind (``str int float bool bytes json``) a column holds; None if unknown."""
        return None

    def insert_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> bool:
        """Insert tuples of ``columns`` (where ``capabilities.bulk_rows``); False: not written
        (a column missing), write them as documents instead."""
        return False

    def get_many(
        self, table: str, keys: Sequence[Any], columns: Sequence[str]
    ) -> list[dict[str, Any]] | None:
        """The rows of ``keys`` by a prebuilt lookup; None: none here, use :meth:`find`."""
        return None

    def get_many_joined(
        self, table: str, keys: Sequence[Any], outputs: Sequence[str]
    ) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]] | None:
        """The rows of ``keys`` and their outputs in one query; None: none here."""
        return None

    def table(self, name: str, *, refresh: bool = False) -> Any:
        """``name``'s columns as an SQLAlchemy ``Table`` (SQL, lakes); None if unknown."""
        return None

    def vector_width(self, table: str, column: str) -> int | None:
        """The size of every vector in ``column`` when its type says it (a lake's fixed-size
        list); None if that cannot be told without reading the rows."""
        return None

    def keys_of_other_width(
        self, table: str, column: str, width: int, filter: dict[str, Any], *, limit: int
    ) -> list[Any] | None:
        """Keys of rows whose ``column`` is not ``width`` bytes (at most ``limit``), measured by
        the database; None if it cannot measure."""
        return None

    def key_type(self, table: str) -> type | None:
        """The Python type of ``table``'s keys when the backend knows it without a query (a
        lake); None otherwise."""
        return None

    def size_limit(self) -> Any:
        """The most bytes one statement may carry (MariaDB's ``max_allowed_packet``); None."""
        return None

    def execute_raw(self, statement: Any) -> list[dict[str, Any]]:
        """Run an SQLAlchemy statement (SQL databases only)."""
        raise QueryError(f'SQLAlchemy statements run on SQL databases only, not on {self.name}.')

    def search_vectors(
        self,
        table: str,
        out: str,
        filter: dict[str, Any],
        query: Any,
        n: int,
        *,
        measure: str,
        version: int,
        dtype: str,
    ) -> list[tuple[Any, float]] | None:
        """The ``n`` rows of output table ``out`` (model ``version``'s vectors, stored as raw
        ``dtype`` bytes) nearest ``query`` by ``measure`` (``cosine``: cosine similarity, ``dot``,
        ``l2``: euclidean distance), best first, as ``(key, score)``; only rows of ``table``
        that ``filter`` selects. Where ``capabilities.vector_search``; None: not here."""
        return None

    def find_arrow(
        self,
        table: str,
        filter: dict[str, Any],
        *,
        sort: Sequence[tuple[str, int]] = (),
        limit: int | None = None,
        skip: int = 0,
        outputs: Sequence[tuple[str, str]] = (),
    ) -> Any:
        """The rows ``find`` reads, as one ``pyarrow.Table`` made by the database (text as
        strings, bytes and encoded values as binary), in the same order; each ``(output table,
        name)`` of ``outputs`` joined by key as column ``name``. Where ``capabilities.arrow_reads``;
        None: read the documents instead (here, or for a table this cannot read so)."""
        return None

    def fulltext(self, language: str) -> Any:
        """The database's own full-text engine over keyword indexes' output tables (a
        ``superduperdb.backends.sql.fulltext.FullText``); None where it has none superduperdb
        uses (keyword indexes then use the ``bm25`` engine)."""
        return None

    def label_output(self, out: str, table: str, key: str, model: str) -> None:  # noqa: B027
        """Name what output table ``out`` holds where a reader of the database sees it (a lake)."""

    def default_metadata_store(self) -> str | None:
        """Where superduperdb's records go when ``metadata_store`` is not set; None: here."""
        return None

    def default_artifact_store(self) -> str | None:
        """Where artifacts go when ``artifact_store`` is not set; None: the usual default."""
        return None

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """Several reads on one connection (where that saves round trips); nothing here."""
        yield

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release connections."""
