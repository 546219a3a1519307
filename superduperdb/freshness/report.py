"""How fresh the watchers' outputs are, and where change capture stands: ``db.status()``,
``superduperdb status``, ``GET /status`` and the dashboard.

Per watcher (:func:`watcher_status`), every figure is read from the database, so any process
reports the same (a server, the CLI, a notebook beside a ``superduperdb cdc`` process):

- ``rows``: rows its select picks; ``current``: those whose stored output is of the model's
  version and was computed from the row's input as it is now; ``stale``: those whose output
  is of the model's version but whose input changed since (their recomputation is due);
- ``failed``: rows in its failure ledger; ``queued``: changes captured and not handled yet
  (PostgreSQL's change queue, rows past a high-water mark); ``backlog``: rows without a
  current output (stale ones included) that are not failed, plus the queued changes;
- ``jobs``: its live pending or running jobs; ``lag_s``: seconds since the oldest unhandled
  change, on the database's clock: its oldest queued change (stamped by the database), its
  oldest unfinished job (live or orphaned), and the time since a backlog has been reported
  with no progress (:func:`_backlog_since`), whichever is oldest; 0.0 when nothing waits;
- ``usage`` (watchers of API models only): what their requests used so far, added up by
  every job on every process (``requests``, ``input_tokens``, ``output_tokens``, ``errors``,
  ``rate_limited``: 429s, ``cost`` in USD or None without a price, ``limits``);
- ``table_missing``: its table does not exist (dropped by another program, or not created
  yet): reported, never raised, and the other watchers are reported as usual.

Counting ``stale`` reads every selected row's input columns (nothing decoded) and the output
fingerprints, a chunk at a time: 0.25 s for two watchers of 20,000 rows each on SQLite, 0.34 s
on PostgreSQL (one a 384-float vector, one an integer; 2026-12-07, this 2-core machine), where
counting outputs of the model's version alone took 0.015-0.03 s. A comparison that took longer than
``_SLOW`` seconds is reused by this process for up to ``_REUSE`` times as long (the dashboard
asks every 2 s: a table of millions of rows is compared about once a minute, not in every
request), unless this process wrote or deleted outputs since (its own reconcile or jobs show at
once; another process's show when the figure is compared again); ``compared_s_ago`` says how
old the figures of ``current`` and ``stale`` are.

>>> from superduperdb import superduper
>>> capture_status(superduper('sqlite:///:memory:'))
{'running': False, 'error': None, 'positions': []}
"""

from __future__ import annotations

import logging
import time
import weakref
from typing import TYPE_CHECKING, Any

from superduperdb.base.exceptions import BackendError, WriteFailed
from superduperdb.store.chunks import chunk_counts, chunk_table
from superduperdb.store.usage import usage_of

if TYPE_CHECKING:
    from superduperdb.datalayer.datalayer import Datalayer

logger = logging.getLogger(__name__)

#: the metadata record of the time a watcher's backlog was first reported (see _backlog_since)
_SINCE = '_superduper_backlog_since:'
#: a comparison of inputs and outputs slower than this many seconds is reused ...
_SLOW = 0.25
#: ... for up to this many times as long as it took
_REUSE = 10.0
#: per Datalayer, per (watcher, version): (when compared, seconds it took, (current, stale),
#: ``db.outputs.generation`` then)
_COMPARED: weakref.WeakKeyDictionary[
    Any, dict[tuple[str, int], tuple[float, float, tuple[int, int], int]]
] = weakref.WeakKeyDictionary()


def capture_status(db: Datalayer) -> dict[str, Any]:
    """``running``: whether change capture runs in this process (``db.cdc.start()``; a
    ``superduperdb cdc`` process elsewhere shows as positions that keep moving), ``error``:
    its last error, and ``positions``: each persisted stream position (``stream``,
    ``position``, ``updated_at``: when it last moved, seconds since the epoch)."""
    from superduperdb.base.masking import mask_secrets  # a driver's error may quote the URI

    cdc = db.started_cdc
    error = None if cdc is None else cdc.error
    return {
        'running': bool(cdc is not None and cdc.running),
        'error': mask_secrets(error) if error else error,
        'positions': [
            {'stream': r['_id'], 'position': r['position'], 'updated_at': r.get('updated_at')}
            for r in db.metadata.positions()
        ],
    }


def watcher_status(db: Datalayer) -> list[dict[str, Any]]:
    """One row per watcher: see the module docstring. Reads records and data only: no model is
    loaded, no artifact read."""
    now = db.metadata.now()
    captured = _captured(db)
    return [_watcher_row(db, record, captured, now) for record in db.metadata.latest('watcher')]


def _captured(db: Datalayer) -> dict[str, dict[str, Any]]:
    """Change capture's pending changes per watched table, read from the database whether or
    not change capture runs in this process; {} (and a warning) where they cannot be read."""
    try:
        return db.cdc.pending()  # type: ignore[no-any-return]
    except BackendError as exc:
        logger.warning('status: the changes captured and not handled could not be read: %s', exc)
        return {}


def _watcher_row(
    db: Datalayer, record: dict[str, Any], captured: dict[str, dict[str, Any]], now: float
) -> dict[str, Any]:
    from superduperdb.store.metadata import FAILURES
    from superduperdb.store.outputs import output_table

    params = record['config']['params']
    identifier, query = record['identifier'], params['select']['_query']
    table, model, version = query['table'], params['model']['_component'][1], params['model']['_component'][2]
    key = params['key'] if isinstance(params['key'], str) else ','.join(params['key'])
    out = output_table(table, key, model)
    pending = captured.get(table) or {}
    missing = pending['missing'] if 'missing' in pending else not _exists_now(db, table)
    selected = current = stale = 0
    age = 0.0
    if not missing:
        try:
            selected = db.databackend.count(table, query.get('filter') or {})
            if db.databackend.has_table(out):
                (current, stale), age = _compared(db, identifier, params, version, out)
        except Exception:  # noqa: BLE001 - dropped meanwhile? the schema tells; else it is a fault
            if _exists_now(db, table):
                raise
            missing = True
            selected = current = stale = 0
    failed = db.metadata.backend.count(FAILURES, {'output_table': out})
    queued = int(pending.get('queued') or 0)
    backlog = max(0, selected - current - failed) + queued
    live, lags = _jobs(db, f'watcher/{identifier}/{record["version"]}', now)
    if pending.get('lag_s') is not None:
        lags.append(float(pending['lag_s']))
    since = _backlog_since(db, identifier, backlog, current, now)
    if since is not None:
        lags.append(now - since)
    row = {
        'watcher': identifier,
        'active': params.get('active', True),
        'table': table,
        'rows': selected,
        'current': current,
        'stale': stale,
        'failed': failed,
        'queued': queued,
        'backlog': backlog,
        'jobs': live,
        'lag_s': round(max(0.0, *lags), 3) if lags else 0.0,
        'table_missing': missing,
        'compared_s_ago': round(age, 3),
    }
    usage = usage_of(db.metadata, identifier)
    if usage is not None:  # an API model: requests, tokens, errors, 429s and cost so far
        row['usage'] = usage
    counts = None if missing else chunk_counts(db, table, key, model)
    if counts is not None:  # a chunker: its chunks (their embeddings: the chunk table's watchers)
        name = chunk_table(table, key, model)
        outs = [r['_id'] for r in db.metadata.outputs_of(name)]
        # chunks a watcher of the chunk table failed on (ledger keys start with the row's key)
        failed_chunks = db.metadata.backend.count(FAILURES, {'output_table': {'$in': outs}}) if outs else 0
        row.update({'chunk_table': name, **counts, 'failed_chunks': failed_chunks})
    return row


def _exists_now(db: Datalayer, table: str) -> bool:
    """Whether ``table`` exists now, asked of the database (SQL caches what it reflected)."""
    if db.databackend.has_schema:
        return db.databackend.table(table, refresh=True) is not None
    return db.databackend.has_table(table)


def _compared(
    db: Datalayer, watcher: str, params: dict[str, Any], version: int, out: str
) -> tuple[tuple[int, int], float]:
    """``((current, stale), seconds since they were counted)``: :func:`_compare`, or its last
    result where that took longer than ``_SLOW`` s, is younger than ``_REUSE`` times that, and
    this process has written or deleted no output since (a reconcile or a job run here must
    show in the next status, not up to ``_REUSE`` times later)."""
    kept = _COMPARED.setdefault(db, {})
    now = time.monotonic()
    generation = db.outputs.generation
    last = kept.get((watcher, version))
    if last is not None and last[1] > _SLOW and now - last[0] < _REUSE * last[1] and last[3] == generation:
        return last[2], now - last[0]
    counts = _compare(db, params, version, out)
    kept[(watcher, version)] = (now, time.monotonic() - now, counts, generation)
    return counts, 0.0


def _compare(db: Datalayer, params: dict[str, Any], version: int, out: str) -> tuple[int, int]:
    """``(current, stale)``: the selected rows whose stored output is of model ``version`` and
    was computed from their input as it is now, and those whose input changed since. The
    fingerprints predict compares, read a chunk at a time (memory stays flat)."""
    from superduperdb.predict.readers import input_fingerprints
    from superduperdb.query.objects import query_from_dict

    select = query_from_dict(params['select']['_query'])
    key = params['key'] if isinstance(params['key'], str) else tuple(params['key'])
    ordered = db.databackend.has_schema and not select.sort_by  # SQL reads these in key order
    current = stale = 0
    for ids, prints in input_fingerprints(db, select, key, params.get('features') or {}, db.chunk_size):
        stored = db.outputs.fingerprints_of_chunk(out, ids, ordered=ordered)
        for row_id, fp in zip(ids, prints):
            found = stored.get(row_id)
            if found is not None and found[0] == version:
                if found[1] == fp:
                    current += 1
                else:
                    stale += 1
    return current, stale


def _jobs(db: Datalayer, component: str, now: float) -> tuple[int, list[float]]:
    """``(live jobs, ages of every unfinished job)`` of ``component``: a job whose process died
    (orphaned, until a reconcile picks it up) is not live, but its rows still wait."""
    from superduperdb.jobs.job import Job

    records = db.metadata.jobs({'component': component, 'status': {'$in': ['pending', 'running']}})
    jobs = [Job.from_record(r, db) for r in records]
    waiting = [j for j in jobs if not j.finished]
    return sum(1 for j in waiting if not j.orphaned), [now - j.created_at for j in waiting]


def _backlog_since(db: Datalayer, watcher: str, backlog: int, current: int, now: float) -> float | None:
    """Since when (database clock) a backlog of ``watcher`` has been reported without its
    outputs making progress: rows another program wrote while no change capture ran, or left
    by a job killed mid-way, are dated by no queue or job. Kept in the metadata store while the
    backlog lasts; moved to now when more outputs are current than at the last report (work is
    being done: the jobs' and queue's times tell the lag then), forgotten when none is left.
    A best effort (a read-only database user keeps no record): None where none is kept."""
    import json

    name = f'{_SINCE}{watcher}'
    try:
        stored = db.metadata.position(name)
        if not backlog:
            if stored is not None:
                db.metadata.forget_position(name)
            return None
        mark = json.dumps({'since': now, 'current': current})
        if stored is None:
            db.metadata.add_position(name, mark)
            return now
        seen = json.loads(stored)
        if current > int(seen['current']):  # progress since the last report
            db.metadata.swap_position(name, stored, mark)
            return now
        return float(seen['since'])
    except (BackendError, WriteFailed, ValueError, KeyError, TypeError):
        return None
