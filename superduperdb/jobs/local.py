"""The local executor: jobs run in the foreground, in the calling process, in order."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from superduperdb.jobs.job import Job, mark_started, run_job

if TYPE_CHECKING:
    from superduperdb.datalayer.datalayer import Datalayer

logger = logging.getLogger(__name__)


class Executor:
    """Runs recorded jobs somewhere. ``submit`` records them first, so they are visible at once."""

    name = 'executor'

    def submit(self, db: Datalayer, jobs: list[Job]) -> list[Job]:
        raise NotImplementedError

    def wait(self, job: Job, timeout: float | None) -> None:
        """Block until ``job`` is done, where the executor can tell faster than the record."""

    def close(self) -> None:
        """Release what the executor holds (a cluster client)."""


class LocalExecutor(Executor):
    """Run each job now, here. A failed job is recorded and logged; the caller goes on.

    A job whose dependency failed is marked failed without running.
    """

    name = 'local'

    def submit(self, db: Datalayer, jobs: list[Job]) -> list[Job]:
        for i, job in enumerate(jobs):
            job.db = db
            if i == 0:
                mark_started(job)  # the first runs at once: record it as running already
            db.metadata.create_job(job.to_record())
        failed: set[str] = set()
        for i, job in enumerate(jobs):
            broken = [d for d in job.dependencies if d in failed]
            if broken:
                db.metadata.update_job(
                    job.id, status='failed', ended_at=time.time(), error=f'Dependency {broken[0]} failed.'
                )
                job.refresh()
                failed.add(job.id)
                continue
            try:
                run_job(db, job.id, job=job, started=i == 0)
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
