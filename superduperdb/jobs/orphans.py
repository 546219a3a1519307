"""Durable submission: pending jobs whose submitting process is gone are picked up by another.

A job is recorded before it is handed to an executor, so it is never lost; but a process that
dies (or a script that ends) between recording its jobs and handing them over, or while
holding them queued, leaves them ``pending`` with nobody to run them. The submitter beats for
the pending jobs it holds (``worker`` and ``heartbeat`` of the record); once it has been silent
for three heartbeats and is not alive on this host, the job reads as ``orphaned``.
:func:`pick_up` claims such jobs (one process wins each claim) and hands them to this
process's executor. The change-capture process calls it on every reconcile, and a Dask
executor's process the first time it submits.

>>> from superduperdb import superduper
>>> db = superduper('sqlite:///:memory:')
>>> pick_up(db)  # nothing orphaned here
[]
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from superduperdb.jobs.job import Job, database_time, this_process

if TYPE_CHECKING:
    from superduperdb.datalayer.datalayer import Datalayer

logger = logging.getLogger(__name__)


def orphaned(db: Datalayer, *, limit: int = 1000) -> list[Job]:
    """Pending jobs whose submitting process is gone, oldest first."""
    records = db.metadata.jobs({'status': 'pending'}, limit=limit)
    found = [job for job in (Job.from_record(r, db) for r in records) if job.orphaned]
    return sorted(found, key=lambda job: job.created_at)


def pick_up(db: Datalayer) -> list[Job]:
    """Claim the orphaned pending jobs and run them with ``db.executor``; returns those claimed.

    A job whose dependency is still pending or running elsewhere waits for a later call; one
    whose dependency failed is failed by the executor without running.
    """
    me = this_process()
    claimed: list[Job] = []
    ids: set[str] = set()
    for job in orphaned(db):
        waiting = [d for d in job.dependencies if d not in ids and _unfinished(db, d)]
        if waiting:
            continue
        claim = {'worker': me, 'heartbeat': database_time(db)}
        if db.metadata.claim_job(job.id, 'pending', job.worker or '', claim):
            job.worker = me
            claimed.append(job)
            ids.add(job.id)
    if claimed:
        logger.warning(
            'picked up %d pending job(s) whose submitting process is gone: %s',
            len(claimed),
            ', '.join(f'{job.id} ({job.method} {job.component or ""})' for job in claimed),
        )
        db.executor.resume(db, claimed)
    return claimed


def _unfinished(db: Datalayer, job_id: str) -> bool:
    record = db.metadata.get_job(job_id)
    return record is not None and not Job.from_record(record, db).finished
