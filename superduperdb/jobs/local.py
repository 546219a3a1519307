"""The local executor: jobs run in the foreground, in the calling process, in order."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from superduperdb.jobs.job import Job, holding, mark_started, run_job, this_process

if TYPE_CHECKING:
    from superduperdb.datalayer.datalayer import Datalayer

logger = logging.getLogger(__name__)


class Executor:
    """Runs recorded jobs somewhere. ``submit`` records them first, so they are visible at once."""

    name = 'executor'

    def submit(self, db: Datalayer, jobs: list[Job]) -> list[Job]:
        raise NotImplementedError

    def resume(self, db: Datalayer, jobs: list[Job]) -> list[Job]:
        """Run recorded pending ``jobs`` (orphans this process has claimed), dependencies first."""
        raise NotImplementedError

    @contextlib.contextmanager
    def deferring(self, db: Datalayer) -> Iterator[list[Job]]:
        """Jobs submitted inside run after the block (see :meth:`LocalExecutor.deferring`);
        executors that run jobs elsewhere start them at once, as always."""
        yield []

    def wait(self, job: Job, timeout: float | None) -> None:
        """Block until ``job`` is done, where the executor can tell faster than the record."""

    def cancel(self, db: Datalayer, job: Job) -> Job:
        """Stop ``job`` (pending or running) and record it as failed with the error
        ``Cancelled.``; raises :class:`QueryError` where this executor cannot."""
        from superduperdb.base.exceptions import QueryError

        raise QueryError(
            f'Job {job.id} cannot be cancelled: the {self.name} executor runs jobs in the foreground of '
            'the process that started them. Jobs on a Dask cluster (cluster.executor = "dask") can be.'
        )

    def close(self) -> None:
        """Release what the executor holds (a cluster client)."""


class LocalExecutor(Executor):
    """Run each job now, here. A failed job is recorded and logged; the caller goes on.

    A job whose dependency failed is marked failed without running.
    """

    name = 'local'

    def __init__(self) -> None:
        self._later = threading.local()  # per thread: jobs recorded, to run when deferring() ends

    @contextlib.contextmanager
    def deferring(self, db: Datalayer) -> Iterator[list[Job]]:
        """Jobs submitted inside are recorded (held by this process, pending) and run when the
        block ends, in order, instead of at once: a server runs a write's jobs after letting
        its write lock go. Yields the list of jobs held so far."""
        if getattr(self._later, 'jobs', None) is not None:  # nested: the outer block runs them
            yield self._later.jobs
            return
        held: list[Job] = []
        self._later.jobs = held
        try:
            yield held
        finally:
            self._later.jobs = None
        if held:
            self.resume(db, held)

    def submit(self, db: Datalayer, jobs: list[Job]) -> list[Job]:
        me = this_process()
        later = getattr(self._later, 'jobs', None)
        for i, job in enumerate(jobs):
            job.db = db
            if i == 0 and later is None:
                mark_started(job)  # the first runs at once: record it as running already
            else:
                job.worker = me  # held here until it runs; orphaned if this process dies first
            db.metadata.create_job(job.to_record())
        if later is not None:
            later.extend(jobs)
            return jobs
        with holding(db, [job.id for job in jobs[1:]]):
            return self._run(db, jobs, first_started=True)

    def resume(self, db: Datalayer, jobs: list[Job]) -> list[Job]:
        with holding(db, [job.id for job in jobs]):
            return self._run(db, jobs, first_started=False)

    def _run(self, db: Datalayer, jobs: list[Job], *, first_started: bool) -> list[Job]:
        failed: set[str] = set()
        for i, job in enumerate(jobs):
            job.db = db
            broken = [d for d in job.dependencies if d in failed]
            if broken:
                db.metadata.update_job(
                    job.id,
                    status='failed',
                    ended_at=db.metadata.now(),
                    error=f'Dependency {broken[0]} failed.',
                )
                job.refresh()
                failed.add(job.id)
                continue
            try:
                run_job(db, job.id, job=job, started=first_started and i == 0)
            except Exception as exc:
                failed.add(job.id)
                logger.warning(
                    'job %s (%s %s) failed: %s: %s; see db.job(%r).error',
                    job.id,
                    job.method,
                    job.component or '',
                    type(exc).__name__,
                    exc,
                    job.id,
                )
        return jobs
