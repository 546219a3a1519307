"""Jobs: long work (backfills, predicts, fits, downloads) recorded in the metadata store.

A job record holds its method and JSON arguments, status (``pending``,
``running``, ``success``, ``failed``), progress (done/total), start and end
times, the log captured while it ran, and the error with its traceback. Any
process that can open the database sees the same records: the caller, a Dask
worker, ``superduperdb jobs``.

A running job sends a heartbeat every ``CFG.cluster.heartbeat`` seconds. One
that has been silent for three heartbeats is reported as failed: the process
running it died, and it will never finish (a Dask cluster retries it on another
worker, which marks it running again). A process on the reading machine that is still
alive is never reported dead. A job that ends while its database is away records its end
(the real error) once the database is back: :func:`_record_end`.

>>> from superduperdb import superduper
>>> db = superduper('sqlite:///:memory:')
>>> job = db.submit_job('noop')
>>> job.wait().status
'success'
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from superduperdb.base import forks
from superduperdb.base.config import CFG
from superduperdb.base.exceptions import JobFailed, QueryError

if TYPE_CHECKING:
    from superduperdb.datalayer.datalayer import Datalayer

logger = logging.getLogger(__name__)

STATUSES = ('pending', 'running', 'success', 'failed')
_LOG_LIMIT = 100_000  # characters of captured log kept per job


@dataclass
class Job:
    """A handle on one job record; :meth:`refresh` reads the record again."""

    id: str
    method: str
    args: dict[str, Any] = field(default_factory=dict)
    component: str | None = None
    dependencies: list[str] = field(default_factory=list)
    status: str = 'pending'
    done: int = 0
    total: int | None = None
    created_at: float = 0.0
    started_at: float | None = None
    ended_at: float | None = None
    worker: str | None = None
    attempts: int = 0
    log: str = ''
    error: str | None = None
    result: Any = None
    #: pending, but the process that submitted it is gone (see :mod:`superduperdb.jobs.orphans`)
    orphaned: bool = False
    db: Datalayer | None = field(default=None, repr=False, compare=False)

    # ----- record <-> object --------------------------------------------------
    def to_record(self) -> dict[str, Any]:
        return {
            '_id': self.id,
            'method': self.method,
            'component': self.component or '',
            'args': json.dumps(self.args, default=str),
            'dependencies': json.dumps(self.dependencies),
            'status': self.status,
            'done': self.done,
            'total': self.total,
            'created_at': self.created_at,
            'started_at': self.started_at,
            'ended_at': self.ended_at,
            # a pending job is held by the process that submitted it (``worker``), which beats for it
            'heartbeat': self.started_at
            if self.status == 'running'
            else self.created_at
            if self.status == 'pending' and self.worker
            else None,
            'worker': self.worker or '',
            'attempts': self.attempts,
            'log': self.log,
            'error': self.error,
            'result': json.dumps(self.result, default=str),
        }

    @classmethod
    def from_record(cls, record: dict[str, Any], db: Datalayer | None = None) -> Job:
        status = record['status']
        error = record.get('error')
        heartbeat = _float(record.get('heartbeat'))
        now = database_time(db)  # heartbeats are written on the database's clock, as is this
        if (
            status == 'running'
            and heartbeat is not None
            and now - heartbeat > 3 * CFG.cluster.heartbeat
            and not _still_running(record['_id'], record.get('worker'))
        ):
            status = 'failed'
            silent = now - heartbeat
            error = (
                f'The process running this job ({record.get("worker") or "unknown"}) stopped: no heartbeat '
                f'for {silent:.0f} s. It will not finish; run it again (outputs already written are kept).'
            )
        orphaned = (
            status == 'pending'
            and heartbeat is not None
            and now - heartbeat > 3 * CFG.cluster.heartbeat
            and not _still_running(record['_id'], record.get('worker'))
        )
        return cls(
            id=record['_id'],
            method=record['method'],
            args=json.loads(record.get('args') or '{}'),
            component=record.get('component') or None,
            dependencies=json.loads(record.get('dependencies') or '[]'),
            status=status,
            done=int(record.get('done') or 0),
            total=None if record.get('total') is None else int(record['total']),
            created_at=float(record.get('created_at') or 0.0),
            started_at=_float(record.get('started_at')),
            ended_at=_float(record.get('ended_at')),
            worker=record.get('worker') or None,
            attempts=int(record.get('attempts') or 0),
            log=record.get('log') or '',
            error=error,
            result=json.loads(record['result']) if record.get('result') else None,
            orphaned=orphaned,
            db=db,
        )

    # ----- following a job ----------------------------------------------------
    @property
    def finished(self) -> bool:
        return self.status in ('success', 'failed')

    def refresh(self) -> Job:
        """Read the record again (status, progress, log)."""
        record = self._db().metadata.get_job(self.id)
        if record is None:
            raise QueryError(f'Job {self.id!r} is not in the metadata store (was it removed?).')
        fresh = Job.from_record(record, self.db)
        for name in self.__dataclass_fields__:
            if name != 'db':
                setattr(self, name, getattr(fresh, name))
        return self

    def wait(self, timeout: float | None = None, *, poll: float = 0.05) -> Job:
        """Block until the job finishes; raise :class:`JobFailed` if it failed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        self._wait_for_executor(timeout)
        while not self.refresh().finished:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f'Job {self.id} still {self.status} after {timeout} s ({self.progress}).')
            time.sleep(poll)
            poll = min(poll * 1.5, 1.0)
        if self.status == 'failed':
            first_line = (self.error or 'unknown error').strip().splitlines()[-1]
            raise JobFailed(
                f'Job {self.id} ({self.method} {self.component or ""}) failed: {first_line}',
                job_id=self.id,
                remote_traceback=self.error,
            )
        return self

    def _wait_for_executor(self, timeout: float | None) -> None:
        """Let the executor block until the job is done where it can tell sooner than the record."""
        self._db().executor.wait(self, timeout)

    @property
    def progress(self) -> str:
        return f'{self.done}/{self.total if self.total is not None else "?"}'

    @property
    def failed_rows(self) -> int:
        """Rows this job could not process (each in the failure ledger), from its result."""
        failed = self.result.get('failed') if isinstance(self.result, dict) else None
        return failed if isinstance(failed, int) and not isinstance(failed, bool) else 0

    @property
    def outcome(self) -> str:
        """The status, with the rows that failed: ``'success, 3 rows failed'``."""
        n = self.failed_rows
        if self.status == 'success' and n:
            return f'success, {n} row{"" if n == 1 else "s"} failed'
        return self.status

    def __repr__(self) -> str:  # short: never the log or the arguments (they may be large)
        return (
            f'Job({self.id!r}, {self.method!r}, component={self.component!r}, '
            f'status={self.outcome!r}, progress={self.progress!r})'
        )

    def _db(self) -> Datalayer:
        if self.db is None:
            raise QueryError('This Job is not bound to a database; get it with db.job(id).')
        return self.db


def _float(value: Any) -> float | None:
    return None if value is None else float(value)  # MariaDB may hand back a Decimal


def new_job(
    method: str,
    args: dict[str, Any] | None = None,
    *,
    component: str | None = None,
    dependencies: list[str] | None = None,
) -> Job:
    _check_method(method)
    return Job(
        id=uuid.uuid4().hex,
        method=method,
        args=args or {},
        component=component,
        dependencies=list(dependencies or []),
        created_at=time.time(),
    )


# ----- running a job, wherever it runs ----------------------------------------------
Task = Callable[['Datalayer', Job], Any]
TASKS: dict[str, Task] = {}
#: functions run once a job of a method is recorded as successful (to tell other processes)
AFTER_SUCCESS: dict[str, list[Task]] = {}


#: The built-in job methods, by name: the module that defines each (with :func:`task`),
#: imported when a job of that method is first made or run. The services stay above jobs/,
#: which imports none of them.
BUILT_IN = {
    'predict': 'superduperdb.predict.jobs',
    'predict_parts': 'superduperdb.predict.jobs',
    'fit': 'superduperdb.predict.jobs',
    'download': 'superduperdb.freshness.downloads',
    'vector_build': 'superduperdb.vector_search.jobs',
    'vector_update': 'superduperdb.vector_search.jobs',
    'vector_neighbours': 'superduperdb.vector_search.jobs',
    'keyword_build': 'superduperdb.vector_search.jobs',
    'keyword_update': 'superduperdb.vector_search.jobs',
}


def task(name: str) -> Callable[[Task], Task]:
    """Register a function as the body of jobs of method ``name`` (a plugin's, or a built-in's
    in the module :data:`BUILT_IN` names for it)."""

    def register(fn: Task) -> Task:
        TASKS[name] = fn
        return fn

    return register


def _check_method(method: str) -> None:
    if method not in TASKS and method in BUILT_IN:
        importlib.import_module(BUILT_IN[method])  # registers it
    if method not in TASKS:
        known = sorted(set(TASKS) | set(BUILT_IN))
        raise QueryError(f'Unknown job method {method!r}; known: {", ".join(known)}.')


@task('noop')
def _noop(db: Datalayer, job: Job) -> None:
    """Does nothing: for checking that executors work."""


def record_failed_start(
    db: Datalayer,
    table: str,
    ids: list[Any],
    downloads: list[str] | None,
    exc: BaseException,
    *,
    deleted: bool = False,
    policy: dict[str, Any] | None = None,
) -> list[Job]:
    """Record, as a failed ``trigger`` job, that the jobs for rows ``ids`` of ``table`` (already
    written) could not start; returns ``[that job]`` ([] if even the record cannot be written).
    Running the job again starts them. ``policy``: the fetch policy of the process that took
    the write, kept for the download job a re-run starts (wherever it runs)."""
    args = {'table': table, 'ids': list(ids), 'downloads': downloads or [], 'deleted': deleted}
    args['policy'] = policy
    job = new_job('trigger', args, component=f'table/{table}')
    job.db = db
    job.status, job.ended_at = 'failed', database_time(db)
    job.error = (
        f'{type(exc).__name__}: {exc}\nThe {len(ids)} row(s) {"deleted from" if deleted else "written to"} '
        f'{table!r} are {"gone" if deleted else "stored"}, but '
        'their jobs (watchers, vector indexes) could not start. Fix the cause above, then run '
        f'this job again: superduperdb.jobs.job.run_job(db, {job.id!r}).\n\n' + traceback.format_exc()
    )
    logger.warning(
        'the write to %r is stored, but its jobs could not start: %s: %s; see db.job(%r).error',
        table,
        type(exc).__name__,
        exc,
        job.id,
    )
    try:
        db.metadata.create_job(job.to_record())
    except Exception:
        logger.exception('could not record the failed start of the jobs for %r', table)
        return []
    return [job]


@task('trigger')
def _trigger(db: Datalayer, job: Job) -> dict[str, Any]:
    """Start the jobs for rows written earlier (see :func:`record_failed_start`)."""
    args = job.args
    if args.get('deleted'):
        started = db.rows_deleted(args['table'], args['ids'])
    else:
        # the policy stored with the write, not this process's: a re-run never widens it
        # (none stored: the download job runs under the narrowest)
        downloads = args.get('downloads') or None
        started = db.trigger_jobs(args['table'], args['ids'], downloads=downloads, policy=args.get('policy'))
    return {'jobs': [j.id for j in started]}


def run_job(db: Datalayer, job_id: str, *, job: Job | None = None, started: bool = False) -> Any:
    """Run the recorded job ``job_id`` here: mark it running, heartbeat, capture its log, record the end.

    ``job``: the Job object when the caller has it (saves reading the record back); it is
    kept up to date. ``started``: the record already says running (see :func:`mark_started`).
    Raises what the task raised (after recording it), so that executors see the failure.
    """
    if job is None:
        record = db.metadata.get_job(job_id)
        if record is None:
            raise QueryError(f'Job {job_id!r} is not in the metadata store.')
        job = Job.from_record(record, db)
    _check_method(job.method)
    if not started:
        db.metadata.update_job(job_id, **mark_started(job))
    logger.debug('job %s started: %s of %s', job_id, job.method, job.component or '-')
    with _capture_log() as captured, _heartbeat(db, job_id, captured):
        try:
            result = TASKS[job.method](db, job)
        except BaseException:
            end = {'status': 'failed', 'ended_at': database_time(db), 'heartbeat': None, 'done': job.done}
            end.update(log=captured.text(), error=traceback.format_exc())
            _apply(job, end)
            _record_end(db, job_id, end)  # the task's error is what the caller sees, not this write's
            logger.debug('job %s ended: failed (%s)', job_id, job.progress)
            raise
        stored = json.dumps(result, default=str)
        end = {'status': 'success', 'ended_at': database_time(db), 'heartbeat': None, 'log': captured.text()}
        end.update(done=job.done, total=job.total, result=stored)
        _apply(job, {**end, 'result': json.loads(stored)})
        _record_end(db, job_id, end)
    logger.debug('job %s ended: %s (%s)', job_id, job.outcome, job.progress)
    for hook in AFTER_SUCCESS.get(job.method, ()):
        hook(db, job)
    return result


#: Seconds a job's end is retried in the foreground while its database is away; after that the
#: heartbeat thread keeps retrying it, and keeps the job alive, until the database is back.
END_RETRY_S = 30.0


def _record_end(db: Datalayer, job_id: str, end: dict[str, Any]) -> None:
    """Write a job's end record, waiting for the database to come back if it is away.

    A database restart mid-job must not leave the record ``running`` (to be called dead
    later) with its real error lost: the write is retried with backoff for
    :data:`END_RETRY_S`, then handed to the heartbeat thread, which retries it every beat.
    """
    deadline = time.monotonic() + END_RETRY_S
    pause = 0.1
    while True:
        try:
            db.metadata.update_job(job_id, **end)
            return
        except Exception as exc:
            if time.monotonic() + pause > deadline:
                logger.warning(
                    'could not record the end of job %s (%s: %s); retrying every %s s in the background',
                    job_id,
                    type(exc).__name__,
                    exc,
                    CFG.cluster.heartbeat,
                )
                with _running_lock:
                    _unwritten[job_id] = (db, end)
                _start_beater()
                return
            logger.info('recording the end of job %s failed (%s); retrying in %.1f s', job_id, exc, pause)
            time.sleep(pause)
            pause = min(pause * 2, 2.0)


def _still_running(job_id: str, worker: str | None) -> bool:
    """Whether the process named ``worker`` (``host:pid``) is known to be alive and holding the job.

    Only a process on this host can be checked; elsewhere the heartbeat alone decides.
    """
    host, _, pid = (worker or '').rpartition(':')
    if host != socket.gethostname() or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        with _running_lock:
            return job_id in _running or job_id in _unwritten or job_id in _held
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    return True


def database_time(db: Datalayer | None) -> float:
    """Now on the clock of ``db``'s database (see ``MetadataStore.now``): job times and heartbeats
    are written and compared on it, never on two processes' clocks. This process's without a db."""
    return time.time() if db is None else db.metadata.now()


def this_process() -> str:
    """How job records name this process: ``host:pid``."""
    return f'{socket.gethostname()}:{os.getpid()}'


def mark_started(job: Job) -> dict[str, Any]:
    """Mark ``job`` as starting here, now; returns the record fields that say so."""
    now = database_time(job.db)
    fields = {
        'status': 'running',
        'started_at': now,
        'heartbeat': now,
        'worker': this_process(),
        'attempts': job.attempts + 1,
        'error': None,
    }
    _apply(job, fields)
    return fields


def _apply(job: Job, fields: dict[str, Any]) -> None:
    for name, value in fields.items():
        if name in job.__dataclass_fields__:
            setattr(job, name, value)


#: Seconds between two writes of a running job's progress to its record: often enough that a
#: watcher of ``superduperdb jobs`` or the dashboard sees it move, rarely enough to cost nothing
#: (each write is a transaction of its own, a disk flush on PostgreSQL: every 0.25 s they took
#: 5-10% of a 10-second chunk-and-embed backfill there, on a loaded machine).
PROGRESS_INTERVAL = 1.0
#: Seconds after its start that a running job's progress is first written: its total shows early.
FIRST_PROGRESS = 0.25


def report_progress(db: Datalayer, job: Job) -> Callable[[int, int | None], None]:
    """A progress callback for tasks: keeps done/total on ``job``, written to its record every
    ``PROGRESS_INTERVAL`` seconds at most while it runs, the first time ``FIRST_PROGRESS``
    after it started (a job done sooner costs no write: the end of the job writes the final figures).
    Tasks call it as they start (with the total they counted) and per batch, not only per
    chunk: a slow model's chunk of 1000 rows shows its progress, and its total, within it."""
    last = [time.monotonic() - PROGRESS_INTERVAL + FIRST_PROGRESS]  # the first write, FIRST_PROGRESS in

    def update(done: int, total: int | None) -> None:
        job.done, job.total = done, total
        now = time.monotonic()
        if now - last[0] >= PROGRESS_INTERVAL:
            last[0] = now
            db.metadata.update_job(job.id, done=done, total=total)

    return update


class _Captured(logging.Handler):
    """Log records of one thread, kept as text."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.thread = threading.get_ident()
        self.lines: list[str] = []
        self.size = 0
        self.setFormatter(logging.Formatter('%(asctime)s %(levelname)s %(name)s: %(message)s'))

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread != self.thread or self.size > _LOG_LIMIT:
            return
        line = self.format(record)
        self.lines.append(line)
        self.size += len(line)

    def text(self) -> str:
        return '\n'.join(self.lines)[:_LOG_LIMIT]


_current = threading.local()


@contextmanager
def _capture_log() -> Iterator[_Captured]:
    """Keep what the job's thread logs (warnings and up, and :func:`job_log` lines)."""
    handler = _Captured()
    root = logging.getLogger('superduperdb')
    root.addHandler(handler)
    _current.captured = handler
    try:
        yield handler
    finally:
        _current.captured = None
        root.removeHandler(handler)


def job_log(message: str, *args: Any) -> None:
    """Write a line into the log of the job running in this thread (and log it at INFO)."""
    logger.info(message, *args)
    captured: _Captured | None = getattr(_current, 'captured', None)
    if captured is not None and not logger.isEnabledFor(logging.INFO):  # else the handler got it
        captured.emit(logger.makeRecord(logger.name, logging.INFO, __file__, 0, message, args, None))


# One thread per process beats for every job running in it, and writes the ends of jobs that
# finished while their database was away.
_running: dict[str, tuple[Datalayer, _Captured]] = {}
_unwritten: dict[str, tuple[Datalayer, dict[str, Any]]] = {}
_held: dict[str, Datalayer] = {}  # pending jobs this process submitted and will run
_running_lock = threading.Lock()
_beater: threading.Thread | None = None


def _after_fork() -> None:
    """In a forked child: the parent's jobs are the parent's (it beats for them and writes their
    ends), its heartbeat thread does not exist here, and its lock may have been held mid-beat."""
    global _running_lock, _beater
    _running_lock = threading.Lock()
    _beater = None
    _running.clear()
    _unwritten.clear()
    _held.clear()


forks.in_child(_after_fork)


def _start_beater() -> None:
    global _beater
    with _running_lock:
        if _beater is None or not _beater.is_alive():
            _beater = threading.Thread(target=_beat, name='superduperdb-heartbeat', daemon=True)
            _beater.start()


@contextmanager
def _heartbeat(db: Datalayer, job_id: str, captured: _Captured) -> Iterator[None]:
    with _running_lock:
        _running[job_id] = (db, captured)
    _start_beater()
    try:
        yield
    finally:
        with _running_lock:
            _running.pop(job_id, None)


@contextmanager
def holding(db: Datalayer, job_ids: list[str]) -> Iterator[None]:
    """This process holds the pending jobs ``job_ids`` (it will run them): beat for them meanwhile,
    so that no other process takes them for orphans."""
    with _running_lock:
        for job_id in job_ids:
            _held[job_id] = db
    _start_beater()
    try:
        yield
    finally:
        with _running_lock:
            for job_id in job_ids:
                _held.pop(job_id, None)


def _beat() -> None:
    while True:
        time.sleep(CFG.cluster.heartbeat)
        with _running_lock:
            held = [(job_id, db) for job_id, db in _held.items() if job_id not in _running]
            running = list(_running.items())
            unwritten = list(_unwritten.items())
        for job_id, db in held:
            try:
                db.metadata.claim_job(job_id, 'pending', this_process(), {'heartbeat': database_time(db)})
            except Exception:
                logger.debug('heartbeat of pending job %s failed', job_id, exc_info=True)
        for job_id, (db, end) in unwritten:
            try:
                db.metadata.update_job(job_id, **end)
            except Exception:
                logger.debug('recording the end of job %s failed again', job_id, exc_info=True)
                continue
            logger.info('recorded the end of job %s (%s): its database is back', job_id, end['status'])
            with _running_lock:
                _unwritten.pop(job_id, None)
        for job_id, (db, captured) in running:
            try:
                db.metadata.update_job(job_id, heartbeat=database_time(db), log=captured.text())
            except Exception:  # the job's own end will record what happened
                logger.debug('heartbeat of job %s failed', job_id, exc_info=True)
