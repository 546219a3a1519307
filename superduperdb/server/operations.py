"""Routes for operating a database: what it holds, the failure ledger, retries, cancels.

The same functions serve the CLI (``superduperdb info``, ``failures``, ``retry``) and the
dashboard: one code path for each question. Retrying and cancelling need the server's token
(a read-only token gets 403).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Query

from superduperdb.server import wire


def add_routes(
    app: FastAPI,
    db: Any,
    *,
    guarded: list[Any],
    writers: list[Any],
    reads: Any,
    writes: Any,
) -> None:
    """Add ``/overview``, ``/watchers/...`` and ``/jobs/{job_id}/cancel`` to ``app``."""

    @app.get('/overview', tags=['server'], dependencies=guarded)
    def overview() -> Any:
        """The database at a glance: backend, tables and their sizes, components and their versions,
        which component uses which, the vector indexes (``indexes``) and the keyword indexes
        (``keyword_indexes``) a search may use."""
        from superduperdb.store.overview import overview as describe

        with reads:
            return {**describe(db), 'keyword_indexes': keyword_indexes(db)}

    @app.get('/watchers/{identifier}/failures', tags=['watchers'], dependencies=guarded)
    def failures(identifier: str, limit: int = Query(1000, ge=1, le=100_000)) -> Any:
        """A watcher's failure ledger, newest first: row key, error class, message, attempts, last try."""
        from superduperdb.freshness.ledger import failures as ledger

        with reads:
            return {'failures': ledger(db, identifier, limit=limit)}

    @app.get('/watchers/{identifier}/usage', tags=['watchers'], dependencies=guarded)
    def usage(identifier: str) -> Any:
        """What a watcher's API model used: requests, tokens, errors, 429s, cost, its rate limits
        and 10-second buckets of the last hour (see db.usage); ``usage`` null for other models."""
        with reads:
            db.load('watcher', identifier)  # 404 for a watcher that does not exist
            return {'usage': db.usage(identifier)}

    @app.post('/watchers/{identifier}/retry', tags=['watchers'], dependencies=writers)
    def retry(identifier: str) -> Any:
        """Run a watcher's model again over its failed rows (and any row still without an output)."""
        from superduperdb.freshness.ledger import retry_failed

        with writes:
            return {'job': wire.job_to_json(retry_failed(db, identifier))}

    @app.post('/jobs/{job_id}/cancel', tags=['jobs'], dependencies=writers)
    def cancel(job_id: str) -> Any:
        """Cancel a pending job, where the executor can (Dask); 400 saying why where it cannot."""
        with writes:
            job = db.job(job_id)
            return wire.job_to_json(db.executor.cancel(db, job))


def keyword_indexes(db: Any) -> list[dict[str, Any]]:
    """Each keyword index's ``identifier``, ``version``, ``table``, ``key`` (the field a
    ``match`` takes), ``engine`` and ``language``, read from the records (none is loaded); an
    index of a chunk table also has ``chunks_of`` (see ``superduperdb.store.chunks.chunker_of``)."""
    from superduperdb.store.chunks import chunker_of

    watchers = db.metadata.latest('watcher')
    found = []
    for record in db.metadata.latest('keyword_index'):
        params = record['config']['params']
        _, identifier, version = params['indexing_watcher']['_component']
        watcher = db.metadata.get_component('watcher', identifier, version)['config']['params']
        table = watcher['select']['_query']['table']
        entry: dict[str, Any] = {
            'identifier': record['identifier'],
            'version': record['version'],
            'table': table,
            'key': watcher['key'],
            'engine': params.get('engine') or 'bm25',
            'language': params.get('language', 'english'),
        }
        chunks_of = chunker_of(db, table, watchers)
        if chunks_of is not None:
            entry['chunks_of'] = chunks_of
        found.append(entry)
    return found
