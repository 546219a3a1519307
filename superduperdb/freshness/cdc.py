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

import logging
import signal
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from superduperdb.backends.changes import COUNTS, ChangeSource, Handler, fold, key_time  # noqa: F401 - fold, key_time: used here and by tests
from superduperdb.base.config import CFG
from superduperdb.base.exceptions import ChangesNotHandled, ConfigError
from superduperdb.store.chunks import remove_orphans

if TYPE_CHECKING:
    from superduperdb.datalayer.datalayer import Datalayer
    from superduperdb.jobs.job import Job

logger = logging.getLogger(__name__)

#: Ids handled per batch (one query and one set of jobs per batch, never one per row).
BATCH_SIZE = 1000


def source_for(db: Datalayer, handle: Handler, stop: threading.Event) -> ChangeSource:
    """The change source of ``db``'s backend (each backend returns its own)."""
    return db.databackend.change_source(db, handle, stop)


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
            self.db.outputs.delete_all(record['_id'])
        forget_rows(self.db, table)
        self.source.forget(table)
        from superduperdb.vector_search.journal import VERIFY, append_to_journal

        for ref in self.db.vectors.refs_on(table):
            append_to_journal(self.db, ref.identifier, VERIFY)
        for kw in self.db.keywords.refs_on(table):
            if kw.engine == 'bm25':
                append_to_journal(self.db, kw.identifier, VERIFY, kind='keyword_index')

    def _check_shared_database(self) -> None:
        backend = self.db.databackend
        engine = backend.engine
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
                self.db.rows_deleted(table, list(deleted[lo : lo + self.batch_size]))
            self._counts['deleted'] += len(deleted)
        ids = [*inserted, *updated]
        failed: list[Job] = []
        for lo in range(0, len(ids), self.batch_size):
            jobs = self.db.trigger_jobs(table, ids[lo : lo + self.batch_size])
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
            self.db.outputs.delete_all(record['_id'])
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
        from superduperdb.components.watcher import in_dependency_order

        watchers = self.db.watchers_on(table, broken=[])  # one that cannot load here is skipped
        for watcher in watchers:  # chunks whose row went while nobody removed them
            if watcher.model.chunks and isinstance(watcher.key, str):
                remove_orphans(self.db, table, watcher.key, watcher.model.identifier)
        jobs: dict[str, Job] = {}
        for watcher in in_dependency_order(watchers):
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
