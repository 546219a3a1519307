"""Jobs: ``/jobs`` (recent jobs, newest first) and ``/jobs/{job_id}`` (one job and its log).
Cancelling a job is an operation (:mod:`superduperdb.server.operations`)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Query

from superduperdb.server import wire
from superduperdb.server.state import ServerState


def add_routes(app: FastAPI, state: ServerState) -> None:
    """Add ``/jobs`` and ``/jobs/{job_id}``."""
    db, reads, guarded = state.db, state.reads, state.guarded

    @app.get('/jobs', tags=['jobs'], dependencies=guarded)
    def jobs(
        status: str | None = None,
        component: str | None = None,
        limit: int = Query(100, ge=1, le=10_000),
        log: bool = True,
    ) -> Any:
        """Recent jobs, newest first (``component``: those whose component starts with it;
        ``log=false``: without their logs, ``log_size`` only)."""
        with reads:
            found = db.jobs(status, limit=limit, component=component)
            return {'jobs': [wire.job_to_json(j, log_offset=0 if log else len(j.log)) for j in found]}

    @app.get('/jobs/{job_id}', tags=['jobs'], dependencies=guarded)
    def job(job_id: str, log_offset: int = Query(0, ge=0)) -> Any:
        """One job, its log from character ``log_offset`` on (follow it by passing ``log_size`` back)."""
        with reads:
            return wire.job_to_json(db.job(job_id), log_offset)
