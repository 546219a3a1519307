"""Change capture on MongoDB: change streams where the server has them, a high-water mark elsewhere.

Change streams need a replica set or a sharded cluster; a standalone server and mongomock
are polled instead. See :mod:`superduperdb.freshness.cdc` for the policy.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from superduperdb.backends.changes import ChangeSource, Handler, HighWaterMark, fold
from superduperdb.base.document import OUTPUTS

if TYPE_CHECKING:
    from superduperdb.datalayer.datalayer import Datalayer

logger = logging.getLogger(__name__)

#: Key types that order among themselves (MongoDB never compares keys across types).
LANES = ('number', 'string', 'objectId')
STREAM_POSITION = 'cdc:mongodb'
#: MongoDB error codes: the resume token fell off the oplog / is not known.
_HISTORY_LOST = {136, 280, 286}
_OPS = {'insert': 'I', 'update': 'U', 'replace': 'U', 'delete': 'D'}


def mongo_source(db: Datalayer, handle: Handler, stop: threading.Event) -> ChangeSource:
    """Change streams on replica sets and sharded clusters; polling on standalone servers and mongomock."""
    database = db.databackend.database  # type: ignore[attr-defined]
    if type(database).__module__.startswith('mongomock'):
        return MongoHighWaterMark(db, handle, stop)
    hello = database.client.admin.command('hello')
    if hello.get('setName') or hello.get('msg') == 'isdbgrid':
        return ChangeStream(db, handle, stop)
    logger.info('MongoDB server is standalone (no change streams): polling a high-water mark instead')
    return MongoHighWaterMark(db, handle, stop)


class MongoKeys:
    """``_id`` values of collections, read without the documents."""

    db: Datalayer

    @property
    def database(self) -> Any:
        return self.db.databackend.database  # type: ignore[attr-defined]

    def all_keys(self, table: str, chunk_size: int) -> Iterator[list[Any]]:
        chunk: list[Any] = []
        for doc in self.database[table].find({}, {'_id': 1}).sort('_id', 1).batch_size(chunk_size):
            chunk.append(doc['_id'])
            if len(chunk) == chunk_size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def existing(self, table: str, keys: Sequence[Any]) -> set[Any]:
        if not keys:
            return set()
        return {doc['_id'] for doc in self.database[table].find({'_id': {'$in': list(keys)}}, {'_id': 1})}


class MongoHighWaterMark(MongoKeys, HighWaterMark):
    """A mark per key type: numbers, strings (superduperdb's ids) and ObjectIds."""

    def lanes(self, table: str) -> list[str]:
        return list(LANES)

    def exists(self, table: str) -> bool:
        return table in self.database.list_collection_names()

    @staticmethod
    def _filter(lane: str, after: Any) -> dict[str, Any]:
        of_type = {'_id': {'$type': lane}}
        return of_type if after is None else {'$and': [of_type, {'_id': {'$gt': after}}]}

    def keys_after(self, table: str, lane: str, after: Any, limit: int) -> list[Any]:
        cursor = self.database[table].find(self._filter(lane, after), {'_id': 1}).sort('_id', 1).limit(limit)
        return [doc['_id'] for doc in cursor]

    def count_after(self, table: str, lane: str, after: Any) -> int:
        return int(self.database[table].count_documents(self._filter(lane, after)))

    def newest(self, table: str, lane: str) -> Any:
        found = list(self.database[table].find({'_id': {'$type': lane}}, {'_id': 1}).sort('_id', -1).limit(1))
        return found[0]['_id'] if found else None

    def dump(self, lane: str, key: Any) -> Any:
        return str(key) if lane == 'objectId' and key is not None else key

    def load(self, lane: str, value: Any) -> Any:
        if lane == 'objectId' and value is not None:
            from bson import ObjectId

            return ObjectId(value)
        return value


def changes_from_events(events: Sequence[Mapping[str, Any]], tables: set[str]) -> list[tuple[str, str, Any]]:
    """``(table, op, _id)`` for the change-stream events on ``tables`` that matter.

    An update that only wrote model outputs (``_outputs.*``, our own write-back) is skipped.
    """
    found = []
    for event in events:
        op = _OPS.get(event.get('operationType', ''))
        table = (event.get('ns') or {}).get('coll')
        if op is None or table not in tables:
            continue
        if event['operationType'] == 'update':
            description = event.get('updateDescription') or {}
            changed = [*description.get('updatedFields', {}), *description.get('removedFields', [])]
            if changed and all(name == OUTPUTS or name.startswith(f'{OUTPUTS}.') for name in changed):
                continue
        found.append((table, op, event['documentKey']['_id']))
    return found


class ChangeStream(MongoKeys, ChangeSource):
    """A database-wide change stream, resumed from a persisted token.

    The position ``cdc:mongodb`` holds ``{"token": <resume token>, "tables": [followed]}``.
    """

    def __init__(self, db: Datalayer, handle: Handler, stop: threading.Event) -> None:
        super().__init__(db, handle, stop)
        self._stream: Any = None
        self._tables: list[str] = []
        self._token: Any = None
        self._saved_at = 0.0

    def _load(self) -> dict[str, Any]:
        stored = self.db.metadata.position(STREAM_POSITION)
        if stored is None:
            return {'token': None, 'tables': []}
        from bson import json_util

        state = json.loads(stored)
        token = state.get('token')
        return {'token': json_util.loads(token) if token else None, 'tables': state.get('tables', [])}

    def _save(self, token: Any, tables: Sequence[str]) -> None:
        from bson import json_util

        self._token, self._saved_at = token, time.monotonic()
        state = {'token': json_util.dumps(token) if token is not None else None, 'tables': sorted(tables)}
        self.db.metadata.set_position(STREAM_POSITION, json.dumps(state))

    def follow(self, tables: Sequence[str]) -> list[str]:
        state = self._load()
        fresh = [t for t in tables if t not in state['tables']]
        if self._stream is None:
            fresh = self._open(state['token'], tables, fresh)
        if fresh or sorted(tables) != sorted(state['tables']):
            self._save(self._token, tables)
        self._tables = list(tables)
        return fresh

    def _open(self, token: Any, tables: Sequence[str], fresh: list[str]) -> list[str]:
        import pymongo.errors

        pipeline = [
            {
                '$match': {
                    'operationType': {'$in': list(_OPS)},
                    'ns.coll': {'$not': {'$regex': '^_superduper'}},
                }
            }
        ]
        try:
            self._stream = self.database.watch(pipeline, resume_after=token, max_await_time_ms=100)
        except pymongo.errors.OperationFailure as exc:
            if token is None or exc.code not in _HISTORY_LOST:
                raise
            logger.warning(
                'change stream cannot resume (%s): starting from now and reconciling %s',
                exc,
                ', '.join(tables),
            )
            self._stream = self.database.watch(pipeline, max_await_time_ms=100)
            fresh = list(tables)
        self._token = token if token is not None else self._stream.resume_token
        return fresh

    def drain(self, tables: Sequence[str], batch_size: int) -> None:
        if self._stream is None:
            return
        watched = set(tables)
        while not self.stop.is_set():
            events: list[Any] = []
            while len(events) < batch_size:
                event = self._stream.try_next()
                if event is None:
                    break
                events.append(event)
            for table, kinds in fold(changes_from_events(events, watched)).items():
                self.handle(
                    table, inserted=kinds['inserted'], updated=kinds['updated'], deleted=kinds['deleted']
                )
            token = self._stream.resume_token
            # an idle stream's token moves too: persist it now and then, not on every poll
            if (
                token is not None
                and token != self._token
                and (events or time.monotonic() - self._saved_at > 30)
            ):
                self._save(token, self._tables)
            if len(events) < batch_size:
                return

    def backlog(self, tables: Sequence[str]) -> dict[str, int]:
        return dict.fromkeys(tables, 0)  # the oplog cannot be counted cheaply

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()
