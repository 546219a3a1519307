"""The small contract every database backend implements.

A backend only reads and writes; policy (encoding, versions, metadata,
jobs) lives above it in :class:`~superduperdb.datalayer.datalayer.Datalayer`.
Filters and updates reach a backend already validated
(:mod:`superduperdb.query.filters`), and documents reach it already
encoded: plain JSON-like values and ``bytes``.
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from superduperdb.base.exceptions import ConfigError

if TYPE_CHECKING:
    from superduperdb.backends.changes import ChangeSource, Handler
    from superduperdb.datalayer.datalayer import Datalayer

#: Column types a backend must be able to create, by name.
COLUMN_TYPES = ('str', 'int', 'float', 'bool', 'bytes', 'json')


class DataBackend(abc.ABC):
    """Reads and writes documents in one database."""

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

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release connections."""
