"""Queries: ``POST /execute`` (find, findone, count, insert, update, delete; a find with
``like`` is a vector search, with ``match`` a keyword search, with both a hybrid search, see
:mod:`superduperdb.query.search`) and the cursors that page through a find's results."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

from fastapi import Depends, FastAPI, Header

from superduperdb.base.exceptions import ConfigError, QueryError
from superduperdb.server import wire
from superduperdb.server.auth import Role, require_write
from superduperdb.server.idempotency import HEADER, check_key, request_digest
from superduperdb.server.schemas import ExecuteRequest
from superduperdb.server.state import ServerState, check_raw_bytes


def add_routes(app: FastAPI, state: ServerState) -> None:
    """Add ``/execute`` and ``/cursors/{cursor_id}`` (GET: the next page; DELETE: close it)."""
    db, reads, writes, keys, cursors = state.db, state.reads, state.writes, state.keys, state.cursors
    guarded, safe, decoded_query = state.guarded, state.safe, state.decoded_query

    @app.post('/execute', tags=['queries'])
    def execute(
        request: ExecuteRequest,
        role: Role = Depends(state.authenticated),  # noqa: B008
        idempotency_key: str | None = Header(  # noqa: B008
            None, alias=HEADER, description='Inserts: a retry with the same key gets the first answer.'
        ),
    ) -> Any:
        """Run a query: find, findone, count, insert, update or delete (find with "like": vector
        search; "match": keyword search; both: hybrid, "fuse" saying how; "rerank": a model
        scores the first results again).

        A search's documents carry ``_score`` (and, fused or reranked, ``_scores`` and
        ``_ranks``); ``timings``: milliseconds per step (like_ms, match_ms, fuse_ms, rows_ms,
        rerank_ms). ``preview``: values as a browser shows them (thumbnails, array summaries; see
        ``superduperdb.base.preview``), for reading only; ``seconds``: how long the query took.
        An insert sent with an ``Idempotency-Key`` header is stored once however often it is
        sent (see :mod:`superduperdb.server.idempotency`).
        """
        from superduperdb.datalayer.datalayer import WriteResult

        kind = request.query.kind
        if kind in ('insert', 'update', 'delete'):
            require_write(role, f'{kind} queries')
        if request.preview and kind not in ('find', 'findone'):
            raise QueryError('"preview" is for find and findone queries.')
        if idempotency_key is not None and kind != 'insert':
            raise QueryError(f'{HEADER} is taken with inserts only; send this {kind} without it.')
        key = None if idempotency_key is None else check_key(idempotency_key)
        digest = None if key is None else request_digest(request.query.model_dump(mode='json'))
        show = _previewer(request.preview)
        q = decoded_query(request.query)
        writing = kind in ('insert', 'update', 'delete')
        # a write's jobs (watchers decoding stored values, models running) run after the write
        # lock is let go, where the database can be shared between threads
        later = _deferring(db) if writing and reads is not writes else contextlib.nullcontext()
        with later, writes if writing else reads:
            started = time.perf_counter()
            check_raw_bytes(db, q, safe)  # under the lock: the table's encoders as the write finds them
            result: Any
            if key is not None and digest is not None:  # stored once, however often it is sent
                result, _ = keys.insert(key, digest, q, db.execute)
            else:
                result = db.execute(q)
            timings = getattr(result, 'timings', None) or {}  # a search's, per step
            if kind == 'find':  # the first page, and a cursor for the rest
                result, cursor = cursors.first(result.chunks())
            seconds = round(time.perf_counter() - started, 4)
        # the answer's values are encoded (or previewed) after the lock is let go
        if kind == 'find':
            body: dict[str, Any] = {'documents': [show(doc) for doc in result], 'cursor': cursor}
            if q.searches:
                body['timings'] = timings
            if request.preview:
                body['seconds'] = seconds
            return body
        if kind == 'findone':
            return {'document': None if result is None else show(result)}
        if isinstance(result, WriteResult):
            return {'ids': wire.to_json(result.ids), 'jobs': [wire.job_to_json(j) for j in result.jobs]}
        return {'count': result}

    @app.get('/cursors/{cursor_id}', tags=['queries'], dependencies=guarded)
    def next_page(cursor_id: str) -> Any:
        """The next page of a find's results; "cursor" is null after the last page."""
        with reads:
            page, cursor = cursors.next(cursor_id)
        return {'documents': [wire.to_json(doc) for doc in page], 'cursor': cursor}

    @app.delete('/cursors/{cursor_id}', tags=['queries'], dependencies=guarded)
    def close_cursor(cursor_id: str) -> Any:
        """Drop a find's cursor before its last page (idle ones expire on their own)."""
        return {'closed': cursors.close(cursor_id)}


def _deferring(db: Any) -> Any:
    """The executor's ``deferring`` block (a write's jobs run after the write lock is let go),
    or none where the executor cannot be made (a Dask executor with no scheduler): the write
    then stands, its jobs recorded as a failed start, as without a server."""
    try:
        executor = db.executor
    except ConfigError:
        return contextlib.nullcontext()
    return executor.deferring(db)


def _previewer(preview: bool) -> Callable[[Any], Any]:
    """How an answer shows a row: its JSON form, or (``preview``) as a browser shows it."""
    if not preview:
        return wire.to_json
    from superduperdb.base.preview import preview_document

    return preview_document  # row data never passes for a preview (see base/preview.py)
