"""Idempotency keys: an insert sent again after a lost answer is stored once.

A client whose insert got no answer (the connection dropped, the server was killed) cannot
tell whether its rows were stored, and sent again they were stored twice (7 of 8 rounds of
killing a server mid-request). An insert sent with ``Idempotency-Key: <unique text>`` (the
Python client sends one with every insert) is remembered in ``_superduper_idempotency_keys``
of the metadata store for ``CFG.server.idempotency_ttl`` seconds, and a request with the same
key gets the first request's answer, with nothing written again: on the same server process
or another, before or after a restart. The same key with a different request is refused
(:class:`~superduperdb.server.errors.IdempotencyKeyReused`).

Why it holds across a kill: the keys the rows will have are chosen and recorded *before* the
insert (the documents' own keys, or the ids superduperdb would make for them anyway), so a
retry learns from the table itself whether the first attempt's rows were stored. If they were,
it answers with them and starts their jobs, which the killed process may never have run (a
predict skips rows already computed); if not, it inserts them with the same keys. A retry of an
insert whose answer was recorded gets it again, its jobs started again unless they all
succeeded (they may have died with the process that ran them). Where the
database makes the keys (an autoincrement column of an application's own table), a first
attempt cut off between its commit and its answer cannot be told from one that wrote nothing:
the retry gets :class:`~superduperdb.server.errors.IdempotencyKeyInUse` (409) saying so, never
a second copy.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from superduperdb.base.document import Document, new_id
from superduperdb.base.exceptions import QueryError
from superduperdb.server import wire
from superduperdb.server.errors import IdempotencyKeyInUse, IdempotencyKeyReused

if TYPE_CHECKING:
    from superduperdb.datalayer.datalayer import Datalayer, WriteResult
    from superduperdb.query.objects import Insert

logger = logging.getLogger(__name__)

TABLE = '_superduper_idempotency_keys'
HEADER = 'Idempotency-Key'
MAX_KEY_LENGTH = 255
#: Seconds between deletions of expired keys (by whichever request records a key next).
PURGE_EVERY = 60.0


def check_key(key: str) -> str:
    """The key as sent, if it is 1 to 255 printable ASCII characters (QueryError otherwise)."""
    if not (0 < len(key) <= MAX_KEY_LENGTH and key.isascii() and key.isprintable()):
        raise QueryError(
            f'{HEADER} is 1 to {MAX_KEY_LENGTH} printable ASCII characters, unique per request '
            '(a UUID, say); got one of length ' + str(len(key)) + '.'
        )
    return key


def request_digest(query: dict[str, Any]) -> str:
    """A digest of a request's query (as sent, JSON): what a key is checked against."""
    import json

    text = json.dumps(query, sort_keys=True, separators=(',', ':'), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class IdempotencyKeys:
    """The keys of one database's inserts, in its metadata store (see the module docstring).

    Callers run :meth:`insert` one at a time per process (the server's write lock); processes
    racing on one key are told apart by the table's primary key.
    """

    def __init__(self, db: Datalayer, *, ttl: float) -> None:
        self.db, self.ttl = db, ttl
        self.backend = db.metadata.backend
        self.backend.create_table(
            TABLE,
            {
                '_id': 'str',
                'digest': 'str',
                'table_name': 'str',
                'ids': 'json',
                'jobs': 'json',
                'expires': 'float',
            },
        )
        self._purged = 0.0

    def insert(
        self, key: str, digest: str, q: Insert, run: Callable[[Insert], WriteResult]
    ) -> tuple[WriteResult, bool]:
        """``run(q)`` once for ``key``: ``(result, replayed)``; a replayed result is the first one's."""
        from superduperdb.datalayer.datalayer import WriteResult

        record_id = hashlib.sha256(key.encode()).hexdigest()
        record = self._get(record_id)
        if record is not None:
            if record['digest'] != digest or record['table_name'] != q.table:
                raise IdempotencyKeyReused(
                    f'{HEADER} {key!r} was sent before with a different request. A key names one '
                    'request: send a new key with each new insert, the same key only with its retries.'
                )
            ids = None if record['ids'] is None else wire.from_json(record['ids'])
            if record['jobs'] is not None:  # answered before: the same rows
                jobs = self._jobs(record['jobs'])
                if ids and any(job.status != 'success' for job in jobs):
                    # not done (yet): the process running them may have been killed with the
                    # answer; started again, a predict skips the rows already computed
                    jobs = self.db.start_jobs(q.table, ids)
                    self._finish(record_id, ids, jobs)
                return WriteResult(ids or [], jobs), True
            if ids is None:
                raise IdempotencyKeyInUse(
                    f'The first insert with {HEADER} {key!r} has not finished: it is running elsewhere, '
                    f'or was cut off, and {q.table!r} makes its own keys, so whether its rows were stored '
                    'cannot be told. Look for them, then send the insert with a new key if they are missing.'
                )
            if self._stored(q.table, ids):  # the first attempt's rows, its answer lost
                jobs = self.db.start_jobs(q.table, ids)  # its process may have died before they ran
                self._finish(record_id, ids, jobs)
                return WriteResult(ids, jobs), True
            q = _with_ids(q, self._key_of(q.table), ids)
        else:
            ids = self._choose_ids(q)
            if ids is not None:
                q = _with_ids(q, self._key_of(q.table), ids)
            self._start(record_id, key, digest, q.table, ids)
        try:
            result = run(q)
        except Exception:
            if ids is not None and self._stored(q.table, ids):
                raise IdempotencyKeyInUse(
                    f'Another request with {HEADER} {key!r} stored these rows meanwhile; send it again '
                    'for its answer.'
                ) from None
            self._forget(record_id)  # nothing was stored: a retry may go ahead
            raise
        self._finish(record_id, result.ids, result.jobs)
        return result, False

    # ----- the record --------------------------------------------------------------------
    def _get(self, record_id: str) -> dict[str, Any] | None:
        record = self.backend.get(TABLE, record_id)
        if record is not None and record['expires'] <= self.db.metadata.now():
            self._forget(record_id)
            return None
        return record

    def _start(self, record_id: str, key: str, digest: str, table: str, ids: list[Any] | None) -> None:
        now = self.db.metadata.now()
        if time.monotonic() - self._purged > PURGE_EVERY:
            self._purged = time.monotonic()
            self.backend.delete(TABLE, {'expires': {'$lt': now}}, many=True)
        record = {
            '_id': record_id,
            'digest': digest,
            'table_name': table,
            'ids': None if ids is None else wire.to_json(ids),
            'jobs': None,
            'expires': now + self.ttl,
        }
        try:
            self.backend.insert(TABLE, [record], new_columns=False)
        except Exception:
            if self.backend.get(TABLE, record_id) is None:
                raise
            raise IdempotencyKeyInUse(
                f'A request with {HEADER} {key!r} is being handled elsewhere; send it again shortly '
                'for its answer.'
            ) from None

    def _finish(self, record_id: str, ids: list[Any], jobs: list[Any]) -> None:
        """Record the answer. The rows are stored whatever happens here: a failure is logged
        (a retry then finds the rows by their keys, recorded before the insert)."""
        done = {'ids': wire.to_json(list(ids)), 'jobs': [job.id for job in jobs]}
        try:
            self.backend.update(TABLE, {'_id': record_id}, {'$set': done}, many=False)
        except Exception:
            logger.warning('could not record the answer of an insert with an idempotency key', exc_info=True)

    def _forget(self, record_id: str) -> None:
        try:
            self.backend.delete(TABLE, {'_id': record_id}, many=False)
        except Exception:
            logger.warning('could not forget an idempotency key', exc_info=True)

    def _jobs(self, job_ids: list[str]) -> list[Any]:
        from superduperdb.base.exceptions import JobNotFound

        jobs = []
        for job_id in job_ids:
            try:
                jobs.append(self.db.job(job_id))
            except JobNotFound:  # cleared since
                continue
        return jobs

    # ----- the rows' keys --------------------------------------------------------------
    def _key_of(self, table: str) -> str:
        backend = self.db.databackend
        return backend.primary_key(table) if backend.has_table(table) else '_id'

    def _choose_ids(self, q: Insert) -> list[Any] | None:
        """The keys the rows will have, known before the insert: the documents' own, or ids
        superduperdb makes for them (as the backend would); None where the database makes them."""
        pk = self._key_of(q.table)
        if all(pk in doc for doc in q.documents):
            return [doc[pk] for doc in q.documents]
        if pk != '_id' or not self._makes_text_keys(q.table):
            return None
        return [doc['_id'] if '_id' in doc else new_id() for doc in q.documents]

    def _makes_text_keys(self, table: str) -> bool:
        """Whether rows of ``table`` without a key get one of superduperdb's text ids."""
        backend = self.db.databackend
        if backend.self_describing or not backend.has_table(table):
            return True  # MongoDB, or a table superduperdb creates from these documents
        key_type = backend.key_type(table)  # a lake knows it
        if key_type is not None:
            return bool(key_type is str)
        t = backend.table(table)
        try:
            return bool(t.c['_id'].type.python_type is str)
        except (AttributeError, KeyError, NotImplementedError):
            return False

    def _stored(self, table: str, ids: list[Any]) -> bool:
        """Whether the rows of ``ids`` were stored (an insert is all or nothing: its first and
        last keys tell)."""
        pk = self._key_of(table)
        probe = list(dict.fromkeys([ids[0], ids[-1]])) if ids else []
        return bool(probe) and self.db.databackend.count(table, {pk: {'$in': probe}}) > 0


def _with_ids(q: Insert, pk: str, ids: list[Any]) -> Insert:
    documents = tuple(Document({**doc, pk: key}) for doc, key in zip(q.documents, ids))
    return dataclasses.replace(q, documents=documents)
