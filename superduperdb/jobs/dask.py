"""The Dask executor: jobs run on a Dask distributed cluster.

Each job is one Dask task. The worker opens the same database (from
:attr:`Datalayer.spec`), loads the components it needs from the metadata and
artifact stores, and runs :func:`~superduperdb.jobs.job.run_job`, which keeps
the job record up to date. A job's dependencies are Dask dependencies, so a
watcher that reads another's outputs runs after it. When a worker dies, the
scheduler runs its task again elsewhere; tasks are resumable (predict skips
rows already done), so nothing is lost and nothing is written twice.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any

from superduperdb.base._deps import require
from superduperdb.base.exceptions import ConfigError
from superduperdb.jobs.job import Job, run_job
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

    def submit(self, db: Datalayer, jobs: list[Job]) -> list[Job]:
        spec = _spec_for_workers(db)
        for job in jobs:
            job.db = db
            db.metadata.create_job(job.to_record())
        for job in jobs:
            with self._lock:
                upstream = [self._futures[d] for d in job.dependencies if d in self._futures]
            future = self.client.submit(
                _run_on_worker, spec, job.id, upstream, key=f'superduperdb-job-{job.id}', pure=False
            )
            with self._lock:
                self._futures[job.id] = future
        return jobs

    def wait(self, job: Job, timeout: float | None) -> None:
        with self._lock:
            future = self._futures.get(job.id)
        if future is None:
            return  # submitted by another process: follow the record
        from distributed import wait

        wait([future], timeout=timeout)
        if future.status in ('error', 'cancelled'):  # Dask gave up (workers kept dying): say so
            record = job._db().metadata.get_job(job.id)
            if record is not None and record['status'] in ('pending', 'running'):
                reason = 'cancelled' if future.status == 'cancelled' else repr(future.exception())
                job._db().metadata.update_job(
                    job.id, status='failed', ended_at=time.time(), heartbeat=None, error=f'Dask: {reason}'
                )
        with self._lock:
            self._futures.pop(job.id, None)

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
_databases: dict[str, Datalayer] = {}
_databases_lock = threading.Lock()


def _run_on_worker(spec: dict[str, Any], job_id: str, upstream: list[str]) -> str:
    """The Dask task: open (once per worker) the database and run the job; return its status.

    ``upstream``: the statuses of the jobs it depends on (Dask runs it after them). A job
    whose dependency failed is marked failed without running. A failure is recorded with
    its traceback, which ``job.wait()`` raises in the caller as :class:`JobFailed`.
    """
    from superduperdb.datalayer.connect import connect_spec
    from superduperdb.jobs.local import LocalExecutor

    key = repr(sorted(spec.items()))
    with _databases_lock:
        db = _databases.get(key)
        if db is None:
            db = connect_spec(spec)
            db.executor = LocalExecutor()  # jobs a job starts run right there, on the worker
            _databases[key] = db
    if 'failed' in upstream:
        db.metadata.update_job(job_id, status='failed', ended_at=time.time(), error='A dependency failed.')
        return 'failed'
    try:
        run_job(db, job_id)
    except Exception:
        logger.warning('job %s failed', job_id, exc_info=True)
        return 'failed'
    return 'success'
