"""The contract of a change source: how a backend reports writes made by other programs.

Each backend returns its own source (``DataBackend.change_source``): PostgreSQL's triggers and
queue, MongoDB's change streams, a lake's file listings, and the :class:`HighWaterMark` over
the primary key elsewhere. :mod:`superduperdb.freshness.cdc` runs them (``ChangeCapture``).
"""

from __future__ import annotations

import abc
import json
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from superduperdb.base.exceptions import ChangesNotHandled

if TYPE_CHECKING:
    from superduperdb.datalayer.datalayer import Datalayer

logger = logging.getLogger(__name__)

COUNTS = ('inserted', 'updated', 'deleted')


class Handler(Protocol):
    """What a change source hands its changes to (``ChangeCapture._handle``)."""

    def __call__(
        self,
        table: str,
        *,
        inserted: Sequence[Any] = (),
        updated: Sequence[Any] = (),
        deleted: Sequence[Any] = (),
        truncated: bool = False,
    ) -> None: ...


class ChangeSource(abc.ABC):
    """Where one kind of database reports its changes.

    A source hands each batch of changes to ``handle`` and persists its position only
    after ``handle`` returns. Subclasses also read keys (for the reconcile).
    """

    #: True where updates and deletes are found only by a reconcile (high-water marks).
    reconciles: ClassVar[bool] = False
    #: False after a :meth:`drain` that left the changes to another process (which reconciles too)
    drained: bool = True

    def __init__(self, db: Datalayer, handle: Handler, stop: threading.Event) -> None:
        self.db = db
        self.handle = handle
        self.stop = stop

    def check(self, table: str) -> None:  # noqa: B027 - most sources follow any table
        """Raise :class:`ConfigError` if ``table`` cannot be followed (no primary key)."""

    def exists(self, table: str) -> bool:
        """Whether ``table`` exists now (a watcher may name a table not created yet, or one that
        another program dropped): asked of the database, not of a cached schema."""
        return self.db.databackend.has_table(table)

    def forget(self, table: str) -> None:  # noqa: B027 - most sources keep nothing per table
        """``table`` is gone: drop what is kept about it, so a table made anew under its name is
        followed from its start."""

    @abc.abstractmethod
    def follow(self, tables: Sequence[str]) -> list[str]:
        """Follow ``tables`` from now on (idempotent); return the ones newly followed.

        Rows written before a table was followed are found by a catch-up reconcile.
        """

    @abc.abstractmethod
    def drain(self, tables: Sequence[str], batch_size: int) -> None:
        """Hand every pending change to ``handle``, a batch at a time, persisting the position after each."""

    def wait(self, timeout: float) -> None:
        """Block until changes may be pending, ``timeout`` passes, or :meth:`wake` is called."""
        self.stop.wait(timeout)

    def wake(self) -> None:  # noqa: B027 - the stop event wakes the default wait
        """Interrupt :meth:`wait` (from another thread or a signal handler)."""

    @abc.abstractmethod
    def backlog(self, tables: Sequence[str]) -> dict[str, int]:
        """Changes pending per table (queued, or rows past the high-water mark)."""

    def lag(self, tables: Sequence[str]) -> float | None:
        """Seconds since the oldest pending change, where that can be known."""
        return None

    def lags(self, tables: Sequence[str]) -> dict[str, float]:
        """Per table, seconds since its oldest pending change, where the database recorded when
        that change was made (PostgreSQL's queue); tables with none, or unknown, are left out."""
        return {}

    # ----- keys, for the reconcile --------------------------------------------
    @abc.abstractmethod
    def all_keys(self, table: str, chunk_size: int) -> Iterator[list[Any]]:
        """Every primary key of ``table``, a chunk at a time (reading nothing else)."""

    @abc.abstractmethod
    def existing(self, table: str, keys: Sequence[Any]) -> set[Any]:
        """Those of ``keys`` that are rows of ``table`` now (one query)."""

    def key_from_text(self, table: str, text: str) -> Any:
        """A key of ``table`` from its text (as the failure ledger keeps it); None where this
        source cannot tell the key's type (then the ledger is not checked against the rows)."""
        return None

    def close(self) -> None:  # noqa: B027 - nothing to release by default
        """Release connections; the persisted position stays."""


class HighWaterMark(ChangeSource):
    """New rows are those whose key is past a persisted mark; a reconcile finds the rest.

    Keys fall in *lanes* that are ordered within themselves: one per table on SQL, one per
    key type on MongoDB (strings, ObjectIds and numbers never compare with each other there).
    The marks are persisted as ``db.metadata.position('cdc:<table>')``, JSON ``{lane: key}``;
    a lane marked None had no rows when the table was first followed. While a drain hands
    rows over, the record also holds when it first found them (``~since``, the database's
    clock): no database dated those rows, and a drain stopped mid-way (Ctrl-C, a kill) leaves
    the rows past the mark dated by it (:meth:`lags`).
    """

    reconciles = True

    def __init__(self, db: Datalayer, handle: Handler, stop: threading.Event) -> None:
        super().__init__(db, handle, stop)
        self._marks: dict[str, dict[str, Any]] = {}
        self._since: dict[str, float] = {}  # tables a drain is handing over, since when

    @abc.abstractmethod
    def lanes(self, table: str) -> list[str]:
        """Names of the key lanes of ``table``."""

    @abc.abstractmethod
    def exists(self, table: str) -> bool:
        """Whether ``table`` exists (a watcher may name a table not created yet)."""

    @abc.abstractmethod
    def keys_after(self, table: str, lane: str, after: Any, limit: int) -> list[Any]:
        """Up to ``limit`` keys of ``lane`` greater than ``after`` (all if None), ascending."""

    @abc.abstractmethod
    def count_after(self, table: str, lane: str, after: Any) -> int:
        """How many keys of ``lane`` are greater than ``after`` (all if None)."""

    @abc.abstractmethod
    def newest(self, table: str, lane: str) -> Any:
        """The greatest key of ``lane`` now (None if it has none)."""

    def dump(self, lane: str, key: Any) -> Any:
        """``key`` as a JSON value."""
        return key

    def load(self, lane: str, value: Any) -> Any:
        """A key back from its JSON value."""
        return value

    def follow(self, tables: Sequence[str]) -> list[str]:
        fresh = []
        for table in tables:
            if table in self._marks or not self.exists(table):
                continue
            stored = self.db.metadata.position(_position_name(table))
            if stored is None:
                marks = {lane: self.newest(table, lane) for lane in self.lanes(table)}
                self._save(table, marks)
                fresh.append(table)
            else:
                saved = json.loads(stored)
                marks = {lane: self.load(lane, saved.get(lane)) for lane in self.lanes(table)}
                if saved.get(_SINCE) is not None:  # a drain stopped mid-way: those rows keep their date
                    self._since[table] = float(saved[_SINCE])
            self._marks[table] = marks
        return fresh

    def drain(self, tables: Sequence[str], batch_size: int) -> None:
        for table in tables:
            marks = self._marks.get(table)
            if marks is None:
                continue
            for lane in list(marks):
                while not self.stop.is_set():
                    keys = self.keys_after(table, lane, marks[lane], batch_size)
                    if not keys:
                        break
                    if table not in self._since:  # dated before they are handed over
                        self._since[table] = self.db.metadata.now()
                        self._save(table, marks)
                    try:
                        self.handle(table, inserted=keys)
                    except ChangesNotHandled as exc:  # rows without outputs: the reconcile retries them
                        logger.warning('change capture: %s; the reconcile retries these rows', exc.args[0])
                    marks[lane] = keys[-1]
                    self._save(table, marks)
                    if len(keys) < batch_size:
                        break
            if table in self._since and not self.stop.is_set():  # all handed over
                del self._since[table]
                self._save(table, marks)

    def forget(self, table: str) -> None:
        self._marks.pop(table, None)
        self._since.pop(table, None)
        self.db.metadata.forget_position(_position_name(table))

    def _save(self, table: str, marks: dict[str, Any]) -> None:
        saved = {lane: self.dump(lane, key) for lane, key in marks.items()}
        if table in self._since:
            saved[_SINCE] = self._since[table]
        self.db.metadata.set_position(_position_name(table), json.dumps(saved, sort_keys=True))

    def backlog(self, tables: Sequence[str]) -> dict[str, int]:
        # the persisted marks, not this process's: another process may be the one moving them
        found = {}
        for table in tables:
            marks = self._stored_marks(table)
            found[table] = sum(self.count_after(table, lane, key) for lane, key in marks.items())
        return found

    def lag(self, tables: Sequence[str]) -> float | None:
        oldest: float | None = None
        for table in tables:
            for lane, key in self._stored_marks(table).items():
                pending = self.keys_after(table, lane, key, 1)
                born = key_time(pending[0]) if pending else None
                if born is not None:
                    oldest = born if oldest is None else min(oldest, born)
        return None if oldest is None else max(0.0, time.time() - oldest)

    def lags(self, tables: Sequence[str]) -> dict[str, float]:
        """Per table with rows past its mark that a drain found and did not finish handing over
        (it was stopped): seconds since it found them, on the database's clock."""
        now, found = self.db.metadata.now(), {}
        for table in tables:
            stored = self.db.metadata.position(_position_name(table))
            since = json.loads(stored).get(_SINCE) if stored else None
            if since is not None and self.backlog([table]).get(table):
                found[table] = max(0.0, now - float(since))
        return found

    def _stored_marks(self, table: str) -> dict[str, Any]:
        stored = self.db.metadata.position(_position_name(table))
        if stored is None or not self.exists(table):
            return {}
        saved = json.loads(stored)
        return {lane: self.load(lane, saved.get(lane)) for lane in self.lanes(table)}


def _position_name(table: str) -> str:
    return f'cdc:{table}'


#: in a high-water mark's record: when a drain found the rows past it that it hands over
_SINCE = '~since'


def key_time(key: Any) -> float | None:
    """When a key was made, for time-ordered keys (superduperdb ids, ObjectIds); else None."""
    if isinstance(key, str) and len(key) == 24:
        try:
            return float(int(key[:8], 16))
        except ValueError:
            return None
    generation_time = getattr(key, 'generation_time', None)
    return generation_time.timestamp() if generation_time is not None else None


def fold(changes: Sequence[tuple[str, str, Any]]) -> dict[str, dict[str, list[Any]]]:
    """Ordered ``(table, op, key)`` changes (op ``I``, ``U`` or ``D``) to ids per table and kind.

    A key changed several times counts once: deleted if its last change deletes it, inserted
    if its first or last change inserts it, updated otherwise.
    """
    seen: dict[str, dict[Any, tuple[str, str]]] = {}
    for table, op, key in changes:
        per_table = seen.setdefault(table, {})
        first = per_table[key][0] if key in per_table else op
        per_table[key] = (first, op)
    folded: dict[str, dict[str, list[Any]]] = {}
    for table, per_table in seen.items():
        kinds: dict[str, list[Any]] = {kind: [] for kind in COUNTS}
        for key, (first, last) in per_table.items():
            kind = 'deleted' if last == 'D' else 'inserted' if 'I' in (first, last) else 'updated'
            kinds[kind].append(key)
        folded[table] = kinds
    return folded
