"""Change capture: keep watcher outputs fresh when other applications write to the database.

Writes made through ``db.execute`` start the watchers' jobs directly. Writes made by anything
else (another service, a SQL console, a bulk load) are found here and handled the same way:
rows inserted or updated get their outputs computed (``predict`` jobs restricted to those
rows; a row seen twice costs little, since predict skips inputs it has already seen), rows
deleted lose their outputs.

How changes are found depends on the database:

- PostgreSQL: triggers on each watched table append to a durable queue table,
  ``_superduper_cdc_queue``, and ``NOTIFY`` a listener. The triggers stay when change capture
  stops, so writes made meanwhile wait in the queue for the next start.
- MongoDB replica sets and sharded clusters: change streams, resumed from a persisted token.
- Lakes (folders of Parquet files, local or in object storage): the listing of each table's
  files, persisted; new files' rows are inserted rows (``superduperdb.backends.lake.cdc``).
- SQLite, DuckDB, MySQL/MariaDB (and standalone MongoDB, mongomock): a persisted high-water
  mark over the primary key, polled every ``CFG.cdc.poll_interval`` seconds. Keys must grow
  with insertion (autoincrement integers, superduperdb's ids); rows whose key lands below the
  mark are found by the next reconcile.

On every database a reconcile runs on start and every ``CFG.cdc.reconcile_interval`` seconds
(and in each ``poll_once``): it finds deleted rows (outputs whose row is gone) and rows without
a current output and no live job (updated rows, changes whose jobs failed, rows whose writer
was killed before its jobs ran), and runs the watchers' incremental predict over them. Rows in
the failure ledger are retried there once their backoff has passed (``cdc.retry_backoff``
seconds, doubling per failure up to ``cdc.retry_max``).

A change is done only when its outputs are committed or its rows' failures are in the ledger.
Positions are persisted, and queued changes deleted, only after their changes are handled, so
a crash loses nothing: the changes in hand are handled again after the restart. A change whose
job failed (the model could not load, a set-up error such as a missing API key, a dead
worker) stays queued on PostgreSQL and is retried with backoff; elsewhere the reconcile finds
its rows.

>>> import sqlite3, tempfile, os
>>> from superduperdb import superduper, Collection, Watcher
>>> path = os.path.join(tempfile.mkdtemp(), 'shop.db')
>>> with sqlite3.connect(path) as other_app:  # a table another application owns and writes
...     _ = other_app.execute('CREATE TABLE orders (id INTEGER PRIMARY KEY, qty INTEGER)')
...     _ = other_app.execute('INSERT INTO orders (qty) VALUES (1)')
>>> db = superduper(f'sqlite:///{path}')
>>> _ = db.add(Watcher(model=superduper(lambda x: 2 * x, identifier='double'), key='qty',
...                    select=Collection('orders').find()))
>>> db.cdc.poll_once()  # start following the table
{'inserted': 0, 'updated': 0, 'deleted': 0}
>>> with sqlite3.connect(path) as other_app:  # writes that db.execute never sees
...     _ = other_app.execute('INSERT INTO orders (qty) VALUES (21)')
>>> db.cdc.poll_once()
{'inserted': 1, 'updated': 0, 'deleted': 0}
>>> db.execute(Collection('orders').find_one({'qty': 21}))['_outputs']['qty']['double']
42
>>> db.close()
"""

from __future__ import annotations

import abc
import json
import logging
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from superduperdb.base.config import CFG
from superduperdb.base.exceptions import ChangesNotHandled, ConfigError

if TYPE_CHECKING:
    from superduperdb.datalayer.datalayer import Datalayer
    from superduperdb.jobs.job import Job

logger = logging.getLogger(__name__)

#: Ids handled per batch (one query and one set of jobs per batch, never one per row).
BATCH_SIZE = 1000
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


def source_for(db: Datalayer, handle: Handler, stop: threading.Event) -> ChangeSource:
    """The change source that suits ``db``'s backend."""
    name = db.databackend.name
    if name == 'postgresql':
        from superduperdb.backends.sql.cdc import PostgresTriggers

        return PostgresTriggers(db, handle, stop)
    if name == 'mongodb':
        from superduperdb.backends.mongodb.cdc import mongo_source

        return mongo_source(db, handle, stop)
    if name == 'lake':
        from superduperdb.backends.lake.cdc import LakeFiles

        return LakeFiles(db, handle, stop)
    if hasattr(db.databackend, 'engine'):
        from superduperdb.backends.sql.cdc import SQLHighWaterMark

        return SQLHighWaterMark(db, handle, stop)
    raise ConfigError(f'Change capture does not support the {name} backend.')


class ChangeCapture:
    """Follows writes made by other applications to the tables that watchers watch.

    Use ``db.cdc`` (one per Datalayer): ``db.cdc.start()`` runs it in a background thread
    of this process, ``db.cdc.poll_once()`` handles what is pending now, and the
    ``superduperdb cdc`` command runs it in the foreground (:meth:`run_forever`).
    """

    def __init__(self, db: Datalayer, *, batch_size: int = BATCH_SIZE) -> None:
        self.db = db
        self.batch_size = batch_size
        #: the last error of the background loop (it keeps going), or None
        self.error: str | None = None
        self._source: ChangeSource | None = None
        self._stop = threading.Event()
        self._lock = threading.RLock()  # one pass at a time
        self._making = threading.Lock()
        self._thread: threading.Thread | None = None
        self._counts = dict.fromkeys(COUNTS, 0)
        self._catch_up: set[str] = set()
        self._reconciled_at: float | None = None
        self._refused: set[str] = set()
        self._missing: set[str] = set()  # watched tables that do not exist (logged once each)

    def __repr__(self) -> str:
        return f'ChangeCapture({self.db!r}, running={self.running})'

    @property
    def source(self) -> ChangeSource:
        with self._making:
            if self._source is None:
                self._source = source_for(self.db, self._handle, self._stop)
            return self._source

    @property
    def running(self) -> bool:
        """Whether the background thread is running."""
        return self._thread is not None and self._thread.is_alive()

    def tables(self) -> list[str]:
        """The tables that active watchers watch (read again on every pass, from the stored
        configs: a watcher whose model cannot load here still has its changes followed)."""
        found = set()
        for record in self.db.metadata.latest('watcher'):
            params = record['config']['params']
            table = params['select']['_query']['table']
            if params.get('active', True) and not table.startswith('_superduper'):
                found.add(table)
        return sorted(found)

    # ----- running ---------------------------------------------------------------
    def poll_once(self, *, reconcile: bool | None = None) -> dict[str, int]:
        """Handle every change pending now, here; return how many ids were handled, by kind.

        ``reconcile``: also reconcile whole tables (default: yes): find deleted rows, and
        rows without current outputs and no live job (updated rows, changes whose jobs failed,
        rows written by a process killed before its jobs ran) and schedule them.
        """
        if not self.running:
            self._stop.clear()  # left set by an earlier stop()
        if reconcile is None:
            reconcile = True
        return self._pass(reconcile=reconcile, strict=True)

    def start(self) -> ChangeCapture:
        """Follow changes in a daemon thread of this process until :meth:`stop`.

        The watched tables are followed before this returns (on PostgreSQL: the triggers are
        installed), so writes made after it are captured. Raises :class:`ConfigError` for a
        watched table that cannot be followed.
        """
        with self._lock:
            if self.running:
                return self
            self._check_shared_database()
            self._stop.clear()
            self._reconciled_at = None  # the first pass reconciles
            self._follow(strict=True)
            self._thread = threading.Thread(target=self._loop, name='superduperdb-cdc', daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stop the background thread (after the batch in hand) and release its connections."""
        self._stop.set()
        if self._source is not None:
            self._source.wake()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                logger.warning('change capture is still finishing a batch; it stops after it')
                return
        self._thread = None
        with self._lock:
            if self._source is not None:
                self._source.close()
                self._source = None

    def run_forever(self) -> None:
        """Follow changes in the foreground until Ctrl-C or SIGTERM (for ``superduperdb cdc``)."""
        if self.running:
            raise ConfigError('Change capture is already running in a background thread; call stop() first.')
        self._stop.clear()
        self._reconciled_at = None
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        try:
            self._follow(strict=True)
            self._loop()
        except KeyboardInterrupt:
            logger.info('change capture interrupted')
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            self.stop()

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self._stop.set()
        if self._source is not None:
            self._source.wake()

    def _loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            interval = CFG.cdc.reconcile_interval
            due = self._reconciled_at is None or time.monotonic() - self._reconciled_at >= interval
            try:
                self._pass(reconcile=due, strict=False)
                failures, self.error = 0, None
                if not self._stop.is_set():
                    self.source.wait(CFG.cdc.poll_interval)
            except Exception as exc:
                failures += 1
                self.error = f'{type(exc).__name__}: {exc}'
                logger.exception('change capture pass failed (retrying)')
                self._stop.wait(min(60.0, CFG.cdc.poll_interval * 2**failures))

    def _pass(self, *, reconcile: bool, strict: bool) -> dict[str, int]:
        with self._lock:
            self._counts = counts = dict.fromkeys(COUNTS, 0)
            tables = self._follow(strict=strict)
            self.source.drain(tables, self.batch_size)
            reconcile = reconcile and self.source.drained  # else the process draining reconciles
            if reconcile:  # jobs left pending by a process that died before running them
                from superduperdb.jobs.orphans import pick_up

                pick_up(self.db)
            todo = tables if reconcile else [t for t in tables if t in self._catch_up]
            for table in todo:
                if self._stop.is_set() and not strict:
                    break
                self._reconcile(table)
                self._catch_up.discard(table)
            if reconcile:
                self._reconciled_at = time.monotonic()
            self._counts = dict.fromkeys(COUNTS, 0)
            return counts

    def _follow(self, *, strict: bool) -> list[str]:
        """The watched tables that can be followed, now followed; raises (strict) or logs the others.

        A watched table that does not exist (not created yet, or dropped by another program) is
        left out, logged once, and never fails the pass: the other tables are handled.
        """
        source = self.source
        tables, refused = [], []
        for table in self.tables():
            if not self._present(table):
                continue
            try:
                source.check(table)
            except ConfigError as exc:
                refused.append(table)
                if not strict and table not in self._refused:
                    logger.error('not following %r: %s', table, exc)
                if strict:
                    raise
                continue
            tables.append(table)
        self._refused = set(refused)
        self._catch_up.update(source.follow(tables))
        return tables

    def _present(self, table: str) -> bool:
        """Whether ``table`` exists; a table gone since the last pass is forgotten (see :meth:`_gone`)."""
        if self.source.exists(table):
            if table in self._missing:
                self._missing.discard(table)
                logger.info('change capture: table %r exists again; following it', table)
            return True
        if table not in self._missing:
            self._missing.add(table)
            dropped = bool(self.db.metadata.outputs_of(table))  # else not created yet, most likely
            logger.log(
                logging.WARNING if dropped else logging.INFO,
                'change capture: watched table %r does not exist (%s); skipping it until it does',
                table,
                'dropped' if dropped else 'not created yet, or dropped',
            )
            self._gone(table)
        return False

    def _gone(self, table: str) -> None:
        """``table`` does not exist: its rows are gone, so are their outputs and ledger entries
        (as after a TRUNCATE), and the source's position on it; the vector indexes over it
        check their engines against the (now empty) outputs."""
        from superduperdb.freshness.ledger import forget_rows

        for record in self.db.metadata.outputs_of(table):
            self.db.databackend.delete(record['_id'], {}, many=True)
        forget_rows(self.db, table)
        self.source.forget(table)
        refs = self.db.vectors.refs_on(table)
        if refs:
            from superduperdb.vector_search.indexes import VERIFY, append_to_journal

            for ref in refs:
                append_to_journal(self.db, ref.identifier, VERIFY)

    def _check_shared_database(self) -> None:
        backend = self.db.databackend
        engine = getattr(backend, 'engine', None)
        if engine is not None and backend.name in ('sqlite', 'duckdb'):
            database = engine.url.database
            if not database or database == ':memory:':
                raise ConfigError(
                    f'An in-memory {backend.name} database is private to one connection: no other '
                    'application can write to it, and a background thread would see another, empty '
                    'one. Use a database file, or db.cdc.poll_once() in this thread.'
                )

    # ----- status ------------------------------------------------------------------
    def backlog(self) -> dict[str, int]:
        """Changes queued or not yet seen, per watched table (does not wait for a pass in progress)."""
        return self.source.backlog(self.tables())

    def lag(self) -> float | None:
        """Seconds since the oldest change not handled yet, if known (None when none or unknown)."""
        return self.source.lag(self.tables())

    def pending(self) -> dict[str, dict[str, Any]]:
        """Per watched table, from the database (any process, whether or not change capture
        runs in it): ``queued``, the changes captured and not handled yet (PostgreSQL's queue,
        rows past a high-water mark), ``lag_s``, seconds since the oldest of them was made on
        the database's clock (None where no database recorded it), and ``missing`` (the table
        does not exist: its watchers report it instead of failing)."""
        source = self.source
        tables = self.tables()
        present = [t for t in tables if source.exists(t)]
        queued = source.backlog(present) if present else {}
        lags = source.lags(present) if present else {}
        return {
            t: {'queued': int(queued.get(t, 0)), 'lag_s': lags.get(t), 'missing': t not in present}
            for t in tables
        }

    # ----- handling changes ------------------------------------------------------
    def _handle(
        self,
        table: str,
        *,
        inserted: Sequence[Any] = (),
        updated: Sequence[Any] = (),
        deleted: Sequence[Any] = (),
        truncated: bool = False,
    ) -> None:
        if truncated:
            self._counts['deleted'] += self._forget_all(table)
            for index in self.db.vectors.refs_on(table):  # start its engine again from nothing
                args = {'index': [index.identifier, index.version]}
                self.db.submit_jobs([self.db.new_job('vector_build', args, component=index.unique_id)])
        if deleted:
            for lo in range(0, len(deleted), self.batch_size):
                self.db._deleted(table, list(deleted[lo : lo + self.batch_size]))
            self._counts['deleted'] += len(deleted)
        ids = [*inserted, *updated]
        failed: list[Job] = []
        for lo in range(0, len(ids), self.batch_size):
            jobs = self.db._trigger(table, ids[lo : lo + self.batch_size])
            failed += [job for job in jobs if job.status == 'failed']
        if failed:  # not done: the source keeps these changes and hands them over again later
            first = failed[0]
            reason = (first.error or 'unknown error').strip().splitlines()[-1]
            raise ChangesNotHandled(
                f'{len(ids)} change(s) to {table!r} not handled: job {first.id} ({first.method} '
                f'{first.component or ""}) failed: {reason}. They are retried; see '
                f'db.job({first.id!r}).error.',
                table=table,
                job_id=first.id,
                remote_traceback=first.error,
            )
        self._counts['inserted'] += len(inserted)
        self._counts['updated'] += len(updated)

    def _forget_all(self, table: str) -> int:
        """A truncated table loses all its outputs and ledger entries; returns how many rows had outputs."""
        from superduperdb.freshness.ledger import forget_rows

        gone: set[Any] = set()
        for record in self.db.metadata.outputs_of(table):
            for keys in self.source.all_keys(record['_id'], self.batch_size):
                gone.update(keys)
            self.db.databackend.delete(record['_id'], {}, many=True)
        forget_rows(self.db, table)
        return len(gone)

    def _reconcile(self, table: str) -> None:
        """Find rows deleted (outputs or ledger entries without a row) and changed (the
        watchers' predict over all rows)."""
        if not self.db.databackend.has_table(table):
            return
        for record in self.db.metadata.outputs_of(table):
            for keys in self.source.all_keys(record['_id'], self.batch_size):
                present = self.source.existing(table, keys)
                gone = [key for key in keys if key not in present]
                if gone:
                    self._handle(table, deleted=gone)
        self._forget_failures_of_gone_rows(table)
        from superduperdb.datalayer.datalayer import _in_dependency_order

        watchers = self.db.watchers_on(table, broken=[])  # one that cannot load here is skipped
        jobs: dict[str, Job] = {}
        for watcher in _in_dependency_order(watchers):
            if watcher.precomputed or self.db.unfinished_jobs(watcher.unique_id):
                continue  # nothing to compute, or a live job will compute it
            depends = [jobs[w.identifier].id for w in watcher.upstream(watchers) if w.identifier in jobs]
            args = watcher.predict_args(watcher.select)
            args['backoff'] = True  # rows in the failure ledger wait for their next retry time
            args['verify_indexes'] = True  # what it repairs reaches every process's vector engines
            jobs[watcher.identifier] = self.db.new_job(
                'predict', args, component=watcher.unique_id, dependencies=depends
            )
        for job in self.db.submit_jobs(list(jobs.values())):
            if job.finished and isinstance(job.result, dict):  # the local executor ran it here
                self._counts['updated'] += int(job.result.get('computed') or 0)

    def _forget_failures_of_gone_rows(self, table: str) -> None:
        """Ledger entries of rows that no longer exist (a failed row deleted while no change
        capture ran, a table dropped and made anew) go: one query for the rows the ledger names."""
        from superduperdb.freshness.ledger import forget_rows, ledger_rows

        texts = ledger_rows(self.db, table)
        keys = {text: self.source.key_from_text(table, text) for text in texts}
        known = {text: key for text, key in keys.items() if key is not None}
        for lo in range(0, len(known), self.batch_size):
            part = dict(list(known.items())[lo : lo + self.batch_size])
            present = self.source.existing(table, list(part.values()))
            gone = [text for text, key in part.items() if key not in present]
            if gone:
                forget_rows(self.db, table, gone)
