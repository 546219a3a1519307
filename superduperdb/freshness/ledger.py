"""The failure ledger of a watcher: rows its model could not compute, and retrying them.

A row on which a watcher's model raised (or whose output could not be stored) is recorded
in the ledger with the error's class and message, how many attempts failed and when the
last one did. An entry goes when its row's output becomes current, whoever stores it (this
job, a later one, another process: a predict that finds the output current clears it), when
the row is deleted (through superduperdb or, seen by change capture, by another program),
and when its table is dropped or truncated (``db.drop_table``, or change capture finding the
table gone); a failure on an input that changed meanwhile, or another writer's output met on
insert, is not recorded at all. The CLI
(``superduperdb failures``, ``superduperdb retry``), the server (``GET
/watchers/{identifier}/failures``, ``POST /watchers/{identifier}/retry``) and the dashboard
all read and act through these two functions.

>>> from superduperdb import superduper, Collection, Watcher
>>> db = superduper('sqlite:///:memory:')
>>> _ = db.execute(Collection('t').insert_many([{'x': 1}, {'x': 0}]))
>>> inverse = superduper(lambda x: 1 / x, identifier='inverse')
>>> _ = db.add(Watcher(model=inverse, key='x', select=Collection('t').find()))
>>> [(f['error'], f['attempts']) for f in failures(db, 'inverse@t.x')]
[('ZeroDivisionError', 1)]
>>> retry_failed(db, 'inverse@t.x').result['failed']
1
>>> [(f['error'], f['attempts']) for f in failures(db, 'inverse@t.x')]
[('ZeroDivisionError', 2)]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from superduperdb.base.exceptions import ComponentNotFound

if TYPE_CHECKING:
    from superduperdb.datalayer.datalayer import Datalayer
    from superduperdb.jobs.job import Job

#: the most ledger entries one call returns (newest failures first)
LIMIT = 1000


def _record(db: Datalayer, watcher: str) -> dict[str, Any]:
    for record in db.metadata.latest('watcher'):
        if record['identifier'] == watcher:
            return record
    known = sorted(r['identifier'] for r in db.metadata.latest('watcher'))
    hint = f' Watchers: {", ".join(known)}.' if known else ' There are no watchers.'
    raise ComponentNotFound(f'No watcher {watcher!r}.{hint}', type_id='watcher', identifier=watcher)


def ledger_table(record: dict[str, Any]) -> str:
    """The output table whose failures are the watcher's (the ledger is kept per output table)."""
    from superduperdb.store.outputs import output_table

    params = record['config']['params']
    key = params['key'] if isinstance(params['key'], str) else ','.join(params['key'])
    return output_table(params['select']['_query']['table'], key, params['model']['_component'][1])


def failures(db: Datalayer, watcher: str, *, limit: int = LIMIT) -> list[dict[str, Any]]:
    """The ledger of ``watcher`` (an identifier), newest failure first: ``row`` (the row's
    key, as text), ``error`` (the exception's class), ``message``, ``attempts`` and
    ``failed_at`` (the last try, seconds since the epoch). Reads records only: no model is
    loaded."""
    rows = db.metadata.failures(ledger_table(_record(db, watcher)))
    rows.sort(key=lambda r: -float(r.get('failed_at') or 0.0))
    return [
        {
            'row': str(r['source_id']),
            'error': r['error'],
            'message': r['message'],
            'attempts': int(r['attempts']),
            'failed_at': float(r['failed_at']),
        }
        for r in rows[:limit]
    ]


def retry_failed(db: Datalayer, watcher: str) -> Job:
    """Run ``watcher``'s model again now, as a job of the watcher, without waiting for the
    change capture's backoff: rows whose outputs are current are skipped, so what gets
    computed is the failed rows (and any other row still without an output). Rows that fail
    again stay in the ledger with one more attempt. Returns the job (finished when the
    executor runs jobs in the foreground)."""
    from superduperdb.components.watcher import Watcher

    record = _record(db, watcher)
    loaded = db.load('watcher', watcher, record['version'])
    assert isinstance(loaded, Watcher)
    args = loaded.predict_args(loaded.select)
    return db.submit_job('predict', args, component=loaded.unique_id)


def _download_prefix(table: str) -> str:
    """The start of the names of the ledgers of downloads into ``table`` (one per field)."""
    from superduperdb.freshness.downloads import ledger

    return ledger(table, '')


def ledger_rows(db: Datalayer, table: str) -> list[str]:
    """The rows of ``table`` (their keys as text) that any ledger holds: its watchers' and its
    downloads'."""
    outs = [record['_id'] for record in db.metadata.outputs_of(table)]
    return db.metadata.failed_rows(outs, prefix=_download_prefix(table))


def forget_rows(db: Datalayer, table: str, ids: Sequence[Any] | None = None) -> None:
    """Rows ``ids`` of ``table`` are gone (None: all of them, the table dropped or truncated):
    their entries leave every ledger of the table (one query). A row that is gone has nothing
    left to retry, and its key may come back as another row."""
    outs = [record['_id'] for record in db.metadata.outputs_of(table)]
    db.metadata.forget_failures(outs, ids, prefix=_download_prefix(table))
