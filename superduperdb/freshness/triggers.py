"""Triggers after writes: the jobs that keep outputs fresh for rows just written or deleted.

A write through the Datalayer (``insert``, ``update``, ``delete``) commits its rows first and
then calls :func:`after_write`: for written rows, a download job for the data references they
hold, a ``predict`` job per watcher of the table (each after the watchers whose outputs it
reads), and ``vector_update`` (and ``vector_neighbours``) jobs for the table's vector indexes;
for deleted rows, their outputs and failure-ledger entries go, and so do they from the vector
indexes. Change capture (:mod:`superduperdb.freshness.cdc`) starts the same jobs for writes
made by other programs, through ``db.trigger_jobs`` and ``db.rows_deleted``.

The Datalayer's ``trigger_jobs``, ``rows_deleted`` and ``start_jobs`` are these functions.

>>> from superduperdb import superduper, Collection, Watcher
>>> db = superduper('sqlite:///:memory:')
>>> _ = db.execute(Collection('t').insert_many([{'x': 1}]))
>>> _ = db.add(Watcher(model=superduper(lambda x: x + 1, identifier='inc'), key='x',
...                    select=Collection('t').find()))
>>> [job.method for job in db.execute(Collection('t').insert_one({'x': 2})).jobs]
['predict']
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from superduperdb.base.exceptions import BackendError
from superduperdb.components.watcher import in_dependency_order
from superduperdb.freshness.downloads import policy_args, process_policy
from superduperdb.query import objects as query
from superduperdb.store.chunks import parents_deleted

if TYPE_CHECKING:
    from superduperdb.components.watcher import Watcher
    from superduperdb.datalayer.datalayer import Datalayer
    from superduperdb.jobs.job import Job

logger = logging.getLogger(__name__)

#: Seconds to wait before each further try at starting a committed write's jobs.
AFTER_WRITE_RETRIES = (0.2, 1.0)


def after_write(
    db: Datalayer,
    table: str,
    ids: list[Any],
    *,
    downloads: list[str] | None = None,
    deleted: bool = False,
    fields: set[str] | None = None,
) -> list[Job]:
    """The jobs for rows just committed (written, or ``deleted``). The write stands whatever
    happens here: a failure to start them (a watcher whose model cannot load) is returned as
    a failed job, never raised, so a caller never retries (and duplicates) a write that
    succeeded. ``fields``: the top-level fields an update changed (None: any, as an insert)."""
    # the fetch policy of the process that took the write, stored with the jobs (a failed
    # start's too): a re-run elsewhere fetches under it, never under a wider one
    policy = policy_args(process_policy(db)) if downloads else None
    for pause in (*AFTER_WRITE_RETRIES, None):
        try:
            if deleted:
                return db.rows_deleted(table, ids)
            return db.trigger_jobs(table, ids, downloads=downloads, policy=policy, fields=fields)
        except Exception as exc:
            # a connection the database dropped, or none free in the pool: the rows are
            # committed, so try again (a predict skips rows a half-started try computed)
            if pause is not None and _transient(exc):
                logger.info('starting the jobs of a write to %r failed (%s); trying again', table, exc)
                time.sleep(pause)
                continue
            from superduperdb.jobs.job import record_failed_start

            jobs = record_failed_start(db, table, ids, downloads, exc, deleted=deleted, policy=policy)
            if not jobs:
                logger.error(
                    'the %d row(s) written to %r have no jobs, and none could be recorded; the '
                    'reconcile of change capture (superduperdb cdc) computes their outputs within '
                    'cdc.reconcile_interval seconds',
                    len(ids),
                    table,
                )
            return jobs
    raise AssertionError('unreachable')  # the last pause is None: the loop returns


def trigger_jobs(
    db: Datalayer,
    table: str,
    ids: list[Any],
    *,
    downloads: list[str] | None = None,
    policy: dict[str, Any] | None = None,
    fields: set[str] | None = None,
) -> list[Job]:
    """Start the jobs for the rows ``ids`` just written to ``table``.

    ``downloads``: fields holding references to fetch; a download job runs first and
    the watchers of those fields run after it. Then every watcher of the table, each
    after the watchers whose outputs it reads. ``policy``: the fetch policy the download
    job keeps (:func:`~superduperdb.freshness.downloads.policy_args`); without one it
    runs under the narrowest. ``fields``: the top-level fields an update changed; only the
    watchers that read one of them (and those reading their outputs) run, and only their
    indexes are brought up to date (None: every watcher, as after an insert).
    """
    if not ids or table.startswith('_superduper'):
        return []
    jobs: dict[str, Job] = {}
    if downloads:
        args = {'table': table, 'fields': downloads, 'ids': list(ids), 'policy': policy}
        jobs['download'] = db.new_job('download', args, component=f'table/{table}')
    broken: list[dict[str, Any]] = []  # watchers that cannot load here
    watchers = db.watchers_on(table, broken=broken)
    if fields is not None:
        watchers = _reading(watchers, fields | set(downloads or ()))
        if not watchers and not broken and not downloads:
            return []  # the update changed nothing any watcher reads: its outputs stand
    pk = db.databackend.primary_key(table) if watchers or broken else '_id'
    for record in broken:  # the rows are committed: the failure belongs to a job, not the write
        jobs[record['identifier']] = db.new_job(
            'predict',
            _predict_args_of(record, pk, ids),
            component=f'watcher/{record["identifier"]}/{record["version"]}',
        )
    for watcher in in_dependency_order(watchers):
        if watcher.precomputed:
            continue  # its vectors are in the table already: nothing to compute
        depends = [jobs[w.identifier].id for w in watcher.upstream(watchers) if w.identifier in jobs]
        keys = watcher.key if isinstance(watcher.key, tuple) else (watcher.key,)
        if downloads and any(k.split('.')[0] in downloads or k == '_base' for k in keys):
            depends.insert(0, jobs['download'].id)
        args = watcher.predict_args(watcher.select.restrict(pk, ids))
        jobs[watcher.identifier] = db.new_job(
            'predict', args, component=watcher.unique_id, dependencies=depends
        )
    watched = None if fields is None else {w.identifier for w in watchers} | {r['identifier'] for r in broken}
    updates = vector_jobs(db, table, ids, jobs, watched) + keyword_jobs(db, table, ids, jobs, watched)
    return db.submit_jobs(list(jobs.values()) + updates)


def _reading(watchers: list[Watcher], fields: set[str]) -> list[Watcher]:
    """The ``watchers`` whose outputs change when ``fields`` of a row do: those that read one
    of them, and the watchers reading their outputs (``features``), transitively."""
    chosen: list[Watcher] = []
    for watcher in in_dependency_order(watchers):
        reads = watcher.reads()
        if reads is None or reads & fields or any(w in chosen for w in watcher.upstream(watchers)):
            chosen.append(watcher)
    return chosen


def vector_jobs(
    db: Datalayer, table: str, ids: list[Any], jobs: dict[str, Job], watched: set[str] | None = None
) -> list[Job]:
    """``vector_update`` jobs for the indexes of ``table``, after the jobs of their watchers
    (``watched``: only the indexes of these watchers; None: all)."""
    if table.startswith('_superduper'):
        return []
    updates = []
    for index in db.vectors.refs_on(table):  # configs only: a write loads no model
        if watched is not None and index.watcher not in watched:
            continue  # an update of fields its watcher does not read
        upstream = jobs.get(index.watcher)
        if upstream is None and jobs and not index.precomputed:
            continue  # its watcher did not run: nothing changed
        args = {'index': [index.identifier, index.version], 'ids': list(ids)}
        depends = [upstream.id] if upstream is not None else []
        update = db.new_job('vector_update', args, component=index.unique_id, dependencies=depends)
        updates.append(update)
        if index.neighbours:
            updates.append(
                db.new_job('vector_neighbours', args, component=index.unique_id, dependencies=[update.id])
            )
    return updates


def keyword_jobs(
    db: Datalayer, table: str, ids: list[Any], jobs: dict[str, Job], watched: set[str] | None = None
) -> list[Job]:
    """``keyword_update`` jobs for the BM25 keyword indexes of ``table``, after their watchers'
    jobs (a native index follows its output table inside the database: no job; ``watched``:
    as in :func:`vector_jobs`)."""
    if table.startswith('_superduper'):
        return []
    updates = []
    for index in db.keywords.refs_on(table):
        if index.engine != 'bm25' or (watched is not None and index.watcher not in watched):
            continue
        upstream = jobs.get(index.watcher)
        if upstream is None and jobs:
            continue
        args = {'index': [index.identifier, index.version], 'ids': list(ids)}
        depends = [upstream.id] if upstream is not None else []
        updates.append(db.new_job('keyword_update', args, component=index.unique_id, dependencies=depends))
    return updates


def rows_deleted(db: Datalayer, table: str, ids: list[Any]) -> list[Job]:
    """Rows ``ids`` of ``table`` are gone: drop their outputs and failure-ledger entries, and
    them from vector indexes."""
    if not ids:
        return []
    from superduperdb.freshness.ledger import forget_rows

    db.outputs.delete_for(table, ids)
    forget_rows(db, table, ids)
    chunk_jobs = parents_deleted(db, table, ids)  # their chunks go, with their outputs and vectors
    return chunk_jobs + db.submit_jobs(vector_jobs(db, table, ids, {}) + keyword_jobs(db, table, ids, {}))


def _predict_args_of(record: dict[str, Any], pk: str, ids: list[Any]) -> dict[str, Any]:
    """:meth:`Watcher.predict_args` over rows ``ids``, from a watcher's stored record (not loaded)."""
    params = record['config']['params']
    select = query.query_from_dict(params['select']['_query']).restrict(pk, ids)
    return {
        'model': params['model']['_component'],
        'key': params['key'],
        'select': select.to_dict(),
        'features': params.get('features') or {},
        'overwrite': False,
        'watcher': record['identifier'],
    }


def _transient(exc: BaseException) -> bool:
    """Whether ``exc`` may pass if tried again: the database's (a dropped connection, a pool
    with no connection free in time), not a bug or a watcher that cannot load."""
    return isinstance(exc, (BackendError, ConnectionError, TimeoutError)) or type(exc).__module__.startswith(
        'sqlalchemy'
    )
