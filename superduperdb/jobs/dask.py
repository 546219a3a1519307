"""The Dask executor: jobs run on a Dask distributed cluster.

Each job is one Dask task. The worker opens the same database (from
:attr:`Datalayer.spec`), loads the components it needs from the metadata and
artifact stores, and runs :func:`~superduperdb.jobs.job.run_job`, which keeps
the job record up to date. A job's dependencies are Dask dependencies, so a
watcher that reads another's outputs runs after it. When a worker dies, the
scheduler runs its task again elsewhere; tasks are resumable (predict skips
rows already done), so nothing is lost and nothing is written twice.

Submission is durable: ``submit`` returns only once the scheduler holds the tasks, which are
``fire_and_forget`` (they run even after the submitting script has ended without
``db.close()``). Until the scheduler has them, the submitting process holds the jobs; if it
dies first, another process picks them up (:mod:`superduperdb.jobs.orphans`). ``job.wait()``
uses the executor's own client, however the cluster was configured.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from superduperdb.base._deps import require
from superduperdb.base.exceptions import ConfigError
from superduperdb.jobs.job import Job, run_job, this_process
from superduperdb.jobs.local import Executor

if TYPE_CHECKING:
    from superduperdb.datalayer.datalayer import Datalayer

logger = logging.getLogger(__name__)


class DaskExecutor(Executor):
    """Submit jobs to the Dask scheduler at ``address`` (or to a ``distributed.Client``)."""

    name = 'dask'

    def __init__(self, address: Any) -> None:
        distributed = require('distributed', extra='dask', what='The dask executor')
        if address is None:
            raise ConfigError(
                'cluster.executor is "dask" but no scheduler is set: set cluster.dask_scheduler '
                '(SUPERDUPERDB_CLUSTER__DASK_SCHEDULER=tcp://host:8786).'
            )
        if isinstance(address, distributed.Client):
            self.client, self._owns_client = address, False
        else:
            try:
                self.client = distributed.Client(address, timeout='10s', set_as_default=False)
            except OSError as exc:
                raise ConfigError(f'Could not reach the Dask scheduler at {address!r}: {exc}') from exc
            self._owns_client = True
        self._futures: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._picked_up = False

    def submit(self, db: Datalayer, jobs: list[Job]) -> list[Job]:
        spec = _spec_for_workers(db)
        me = this_process()
        for job in jobs:
            job.db, job.worker = db, me  # held here until the scheduler has it
            db.metadata.create_job(job.to_record())
        self._hand_over(db, spec, jobs)
        if not self._picked_up:  # the first submit of a process: jobs others left behind, too
            self._picked_up = True
            from superduperdb.jobs.orphans import pick_up

            try:
                pick_up(db)
            except Exception:
                logger.warning('picking up orphaned jobs failed', exc_info=True)
        return jobs

    def resume(self, db: Datalayer, jobs: list[Job]) -> list[Job]:
        for job in jobs:
            job.db = db
        self._hand_over(db, _spec_for_workers(db), jobs)
        return jobs

    def _hand_over(self, db: Datalayer, spec: dict[str, Any], jobs: list[Job]) -> None:
        """Submit recorded jobs; return once the scheduler holds them (then it owns them)."""
        from distributed import fire_and_forget

        futures = []
        for job in jobs:
            with self._lock:
                upstream = [self._futures[d] for d in job.dependencies if d in self._futures]
            future = self.client.submit(
                _run_on_worker, spec, job.id, upstream, key=f'superduperdb-job-{job.id}', pure=False
            )
            futures.append(future)
            with self._lock:
                self._futures[job.id] = future
        fire_and_forget(futures)  # they run even if this process ends without db.close()
        if self._confirm([f.key for f in futures]):
            # the scheduler owns them now: no submitter heartbeat to miss (workers mark them running)
            db.metadata.release_jobs([job.id for job in jobs], this_process())

    def _confirm(self, keys: list[Any], timeout: float = 10.0) -> bool:
        """Wait until the scheduler knows ``keys`` (the submission is sent in the background)."""
        deadline = time.monotonic() + timeout
        pause = 0.005
        while True:
            try:
                # a scheduler handler: no code of ours needs to be installed on the scheduler
                states = self.client.sync(self.client.scheduler.get_task_status, keys=list(keys))
                missing = [key for key in keys if states.get(key) is None]
            except Exception:
                logger.debug('asking the scheduler for submitted tasks failed', exc_info=True)
                missing = keys
            if not missing:
                return True
            if time.monotonic() > deadline:
                logger.warning(
                    'the Dask scheduler has not confirmed %d submitted job(s) after %.0f s; if this '
                    'process ends first, another picks them up (superduperdb.jobs.orphans)',
                    len(missing),
                    timeout,
                )
                return False
            time.sleep(pause)
            pause = min(pause * 2, 0.2)

    def wait(self, job: Job, timeout: float | None) -> None:
        with self._lock:
            future = self._futures.get(job.id)
        if future is None:
            return  # submitted by another process: follow the record
        # the future's own client (this executor's), never the default one: with the cluster
        # named in config there is no default client
        try:
            future.result(timeout=timeout)
        except TimeoutError:
            raise
        except Exception:
            logger.debug('dask task of job %s ended in error', job.id, exc_info=True)
        if future.status in ('error', 'cancelled'):  # Dask gave up (workers kept dying): say so
            record = job._db().metadata.get_job(job.id)
            if record is not None and record['status'] in ('pending', 'running'):
                reason = 'cancelled' if future.status == 'cancelled' else repr(future.exception())
                metadata = job._db().metadata
                metadata.update_job(
                    job.id, status='failed', ended_at=metadata.now(), heartbeat=None, error=f'Dask: {reason}'
                )
        with self._lock:
            self._futures.pop(job.id, None)

    def cancel(self, db: Datalayer, job: Job) -> Job:
        """Cancel a pending ``job``'s Dask task (its key is known to every process: submitted
        elsewhere too) and record the job as failed. Dask cannot stop a task that a worker is
        running, so a running job is refused."""
        from distributed import Future

        from superduperdb.base.exceptions import QueryError

        job.refresh()
        if job.finished:
            raise QueryError(f'Job {job.id} has already ended ({job.status}); nothing to cancel.')
        if job.status == 'running':
            raise QueryError(
                f'Job {job.id} is running on {job.worker or "a worker"}: Dask cannot stop a running task. '
                'Pending jobs can be cancelled.'
            )
        with self._lock:
            future = self._futures.pop(job.id, None)
        if future is None:
            future = Future(f'superduperdb-job-{job.id}', client=self.client)
        future.cancel(force=True)  # fire_and_forget holds it too: cancel whoever wants it
        db.metadata.update_job(
            job.id, status='failed', ended_at=db.metadata.now(), heartbeat=None, error='Cancelled.'
        )
        return job.refresh()

    def close(self) -> None:
        if self._owns_client:
            self.client.close()


def _spec_for_workers(db: Datalayer) -> dict[str, Any]:
    if db.spec is None:
        raise ConfigError(
            f'The dask executor needs a database its workers can open too; {db!r} lives only in this '
            'process (an in-memory SQLite or a mongomock database). Use a file or a server URI.'
        )
    uri = db.spec['data_backend']
    if uri.split(':', 1)[0].split('+')[0].lower() == 'duckdb':
        raise ConfigError(
            'A DuckDB file allows one writing process, so Dask workers cannot write outputs into it. '
            'Use cluster.executor = "local" with DuckDB, or keep the data in PostgreSQL, MySQL or SQLite.'
        )
    return db.spec


# ----- on the worker ------------------------------------------------------------
def _run_on_worker(spec: dict[str, Any], job_id: str, upstream: list[str]) -> str:
    """The Dask task: open (once per worker) the database and run the job; return its status.

    ``upstream``: the statuses of the jobs it depends on (Dask runs it after them). A job
    whose dependency failed is marked failed without running. A failure is recorded with
    its traceback, which ``job.wait()`` raises in the caller as :class:`JobFailed`.
    """
    from superduperdb.connect import reopen
    from superduperdb.jobs.local import LocalExecutor

    db = reopen(spec)  # once per worker process
    if not isinstance(db.chosen_executor, LocalExecutor):
        db.executor = LocalExecutor()  # jobs a job starts run right there, on the worker
    record = db.metadata.get_job(job_id)
    if record is not None and record['status'] in ('success', 'failed'):
        return str(record['status'])  # run already (by a process that picked it up): not twice
    if 'failed' in upstream:
        ended = db.metadata.now()
        db.metadata.update_job(job_id, status='failed', ended_at=ended, error='A dependency failed.')
        return 'failed'
    try:
        run_job(db, job_id)
    except Exception:
        logger.warning('job %s failed', job_id, exc_info=True)
        return 'failed'
    return 'success'
