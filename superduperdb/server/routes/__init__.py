"""The server's routes, one module per concern, each with an ``add_routes(app, state)``:

- :mod:`.server`: ``/openapi.json``, ``/docs``, ``/health`` and ``/status``;
- :mod:`.queries`: ``/execute`` and ``/cursors/{cursor_id}``;
- :mod:`.components`: ``/components`` (show, add, load, remove);
- :mod:`.jobs`: ``/jobs`` and ``/jobs/{job_id}``;
- :mod:`.models`: ``/models/{identifier}/predict``, ``predict_query`` and ``fit``;
- :mod:`superduperdb.server.operations`: ``/overview``, ``/watchers/...`` and
  ``/jobs/{job_id}/cancel``.

What they share (the database, its locks, the guards) is a
:class:`~superduperdb.server.state.ServerState`, passed to each.
"""

from __future__ import annotations

from fastapi import FastAPI

from superduperdb.server import operations
from superduperdb.server.routes import components, jobs, models, queries, server
from superduperdb.server.state import ServerState


def add_routes(app: FastAPI, state: ServerState) -> None:
    """Add every route of the server's API to ``app`` (the dashboard's are added apart)."""
    # in this order: it is the order of the OpenAPI spec's paths, and so of /docs
    server.add_routes(app, state)
    queries.add_routes(app, state)
    components.add_routes(app, state)
    jobs.add_routes(app, state)
    models.add_routes(app, state)
    server.add_status_route(app, state)
    operations.add_routes(
        app, state.db, guarded=state.guarded, writers=state.writers, reads=state.reads, writes=state.writes
    )
