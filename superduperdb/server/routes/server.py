"""The server's own routes: the OpenAPI spec and its page, ``/health`` (open to all) and
``/status`` (how fresh the outputs are)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.responses import HTMLResponse

from superduperdb.server import wire
from superduperdb.server.state import ServerState


def add_routes(app: FastAPI, state: ServerState) -> None:
    """Add ``/openapi.json``, ``/docs`` (guarded unless ``CFG.server.public_docs``) and ``/health``."""
    from superduperdb.base.version import __version__

    @app.get('/openapi.json', include_in_schema=False, dependencies=state.docs_guard)
    def openapi() -> Any:
        return app.openapi()

    @app.get('/docs', include_in_schema=False, dependencies=state.docs_guard, response_class=HTMLResponse)
    def docs_page() -> HTMLResponse:
        from superduperdb.server.docs_page import render

        return HTMLResponse(render(app.openapi()))

    @app.get('/health', tags=['server'])
    def health() -> dict[str, Any]:
        """Open to all: whether the server is up."""
        return {'status': 'ok', 'version': __version__}


def add_status_route(app: FastAPI, state: ServerState) -> None:
    """Add ``/status``."""
    db, reads, guarded = state.db, state.reads, state.guarded

    @app.get('/status', tags=['server'], dependencies=guarded)
    def status() -> Any:
        """How fresh each watcher's outputs are (see db.status()), each vector and keyword
        index's engine in this server checked against its outputs, and where change capture stands."""
        from superduperdb.freshness.report import capture_status

        with reads:
            report = db.status()
            return {
                'watchers': wire.to_json(report),
                'vector_indexes': wire.to_json(report.vector_indexes),
                'keyword_indexes': wire.to_json(report.keyword_indexes),
                'change_capture': capture_status(db),
            }
