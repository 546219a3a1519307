"""The jobs a Datalayer lists and finds, and the lists a notebook shows as tables.

``db.job(id)``, ``db.jobs(...)``, ``db.unfinished_jobs(...)`` and ``db.watch_job(...)`` are the
functions here; ``db.status()``, ``db.failures(...)`` and ``db.jobs()`` return their lists as
:class:`Rows` and :class:`JobList`, which Jupyter renders as tables.

>>> from superduperdb import superduper
>>> db = superduper('sqlite:///:memory:')
>>> db.jobs('failed')
[]
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

from superduperdb.base.exceptions import JobNotFound, QueryError

if TYPE_CHECKING:
    from superduperdb.datalayer.datalayer import Datalayer
    from superduperdb.jobs.job import Job


def find_job(db: Datalayer, job_id: str) -> Job:
    """A job by id (or a unique prefix of one), as recorded now."""
    from superduperdb.jobs.job import Job

    if not isinstance(job_id, str) or not job_id.isascii() or not job_id.isprintable() or len(job_id) > 64:
        raise JobNotFound(f'No job {job_id!r}: job ids are short hex strings.', job_id=str(job_id))
    record = db.metadata.get_job(job_id)
    if record is None:  # a unique prefix of an id will do, as with git commits
        found = db.metadata.job_ids_starting(job_id)
        if len(found) > 1:
            raise QueryError(
                f'Job id prefix {job_id!r} matches several jobs ({", ".join(found[:2])}, ...): '
                'give more of the id.'
            )
        record = db.metadata.get_job(found[0]) if found else None
    if record is None:
        raise JobNotFound(f'No job {job_id!r}. See db.show("job") for recent jobs.', job_id=job_id)
    return Job.from_record(record, db)


def recent_jobs(
    db: Datalayer, status: str | None = None, *, limit: int | None = 100, component: str | None = None
) -> JobList:
    """Recent jobs, newest first (``status``: pending, running, success or failed;
    ``component``: only jobs whose component starts with this, e.g. ``'watcher/'`` or
    ``'watcher/words@reviews.text/'``)."""
    from superduperdb.jobs.job import STATUSES, Job

    if status is not None and status not in STATUSES:
        raise QueryError(f'Job status is one of {", ".join(STATUSES)}, got {status!r}.')
    stored = 'running' if status == 'failed' else status  # dead workers leave "running" behind
    filter: dict[str, Any] = {} if stored is None else {'status': {'$in': [stored, status]}}
    if component:
        filter['component'] = {'$gte': component, '$lt': component + '\uffff'}
    found = [Job.from_record(r, db) for r in db.metadata.jobs(filter, limit=limit)]
    return JobList(j for j in found if status is None or j.status == status)


def unfinished_jobs(db: Datalayer, component: str) -> list[Job]:
    """Jobs of ``component`` (a unique id) still pending or running (orphans excluded: see
    :mod:`superduperdb.jobs.orphans`)."""
    from superduperdb.jobs.job import Job

    records = db.metadata.jobs({'component': component, 'status': {'$in': ['pending', 'running']}})
    return [j for j in (Job.from_record(r, db) for r in records) if not j.finished and not j.orphaned]


def watch_job(db: Datalayer, job_id: str, *, out: Any = None, poll: float = 0.5) -> Job:
    """Print a job's log and progress as they grow, until it finishes; returns the job."""
    out = out or sys.stdout
    printed = 0
    job = db.job(job_id)
    while True:
        job.refresh()
        if len(job.log) > printed:
            out.write(job.log[printed:] + '\n')
            printed = len(job.log)
        if job.finished:
            out.write(f'{job.id} {job.outcome} ({job.progress})\n')
            if job.error:
                out.write(job.error + '\n')
            return job
        time.sleep(poll)


class Rows(list):  # type: ignore[type-arg]
    """A list of dicts (``db.status()``) that a notebook shows as a table."""

    #: ``db.status().vector_indexes``: each vector index's engine checked against its outputs
    vector_indexes: list[dict[str, Any]]
    #: ``db.status().keyword_indexes``: each keyword index's engine checked against its texts
    keyword_indexes: list[dict[str, Any]]

    def _repr_html_(self) -> str:
        from superduperdb.base.html import table_html

        return table_html(self)


class JobList(list):  # type: ignore[type-arg]
    """A list of jobs (``db.jobs()``) that a notebook shows as a table, ids whole."""

    def _repr_html_(self) -> str:
        from superduperdb.base.html import table_html

        rows = [
            {
                'id': j.id,
                'method': j.method,
                'component': j.component or '',
                'status': j.status,
                'progress': j.progress,
                'error': (j.error or '').strip().splitlines()[-1] if j.error else '',
            }
            for j in self
        ]
        return table_html(rows)
