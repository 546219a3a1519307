"""The MongoDB backend, on pymongo (or mongomock, which speaks the same API)."""

from __future__ import annotations

import datetime
import itertools
import threading
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from superduperdb.backends.base import DataBackend
from superduperdb.backends.mongodb.folds import split_fold
from superduperdb.base.document import new_id
from superduperdb.base.exceptions import BackendError, InvalidValue, WriteFailed


class MongoBackend(DataBackend):
    """Documents stored as they are; encoded values carry their encoder's name."""

    name: ClassVar[str] = 'mongodb'
    self_describing: ClassVar[bool] = True

    def __init__(self, database: Any) -> None:
        self.database = database

    def one_thread_at_a_time(self) -> bool:
        """mongomock, an in-process stand-in for MongoDB, is not thread-safe."""
        return type(self.database).__module__.startswith('mongomock')

    def clock(self) -> float | None:
        """The server's time (``hello``'s ``localTime``); None on mongomock (this process's)."""
        if type(self.database).__module__.startswith('mongomock'):
            return None
        import datetime

        local = self.database.command('hello')['localTime']
        return float(local.replace(tzinfo=datetime.UTC).timestamp())

    def fulltext(self, language: str) -> Any:
        """A real server's text index (backends/mongodb/fulltext.py); mongomock has no ``$text``."""
        if type(self.database).__module__.startswith('mongomock'):
            return None
        from superduperdb.backends.mongodb.fulltext import MongoFullText

        return MongoFullText(self.database, language)

    def describe(self) -> str:
        client = type(self.database.client).__module__.split('.')[0]
        return f'mongodb ({client}): database {self.database.name!r}'

    def _errors(self) -> tuple[type[BaseException], ...]:
        if type(self.database).__module__.startswith('mongomock'):
            import mongomock

            return (mongomock.PyMongoError,)  # type: ignore[attr-defined]
        import pymongo.errors

        return (pymongo.errors.PyMongoError,)

    def insert(
        self, table: str, documents: Sequence[dict[str, Any]], *, new_columns: bool = True
    ) -> list[Any]:
        if not documents:
            return []
        _refuse_naive_datetimes(table, documents)
        docs = [doc if '_id' in doc else {**doc, '_id': new_id()} for doc in documents]
        ids = [doc['_id'] for doc in docs]
        collection = self.database[table]
        try:
            collection.insert_many(docs, ordered=True)
        except self._errors() as exc:
            # MongoDB has no multi-document transaction outside replica sets:
            # undo what the call wrote so that it is all or nothing.
            written = (getattr(exc, 'details', None) or {}).get('nInserted', 0)
            if written:
                collection.delete_many({'_id': {'$in': ids[:written]}})
            raise WriteFailed(
                f'Inserting {len(docs)} documents into {table!r} failed and was rolled back '
                f'(nothing was written): {_first_line(exc)}'
            ) from exc
        return ids

    def find(
        self,
        table: str,
        filter: dict[str, Any],
        *,
        projection: dict[str, int] | None = None,
        sort: Sequence[tuple[str, int]] = (),
        limit: int | None = None,
        skip: int = 0,
        chunk_size: int = 1000,
    ) -> Iterator[list[dict[str, Any]]]:
        filter, keep = split_fold(filter)
        shown = projection
        if keep is not None and projection:  # the fold is decided from _id and _fold
            projection = _with_fold_fields(projection)
        cursor = self.database[table].find(filter, projection or None)
        cursor = cursor.sort(list(sort) + [('_id', 1)]) if sort else cursor.sort('_id', 1)
        if limit == 0:
            return
        docs: Iterator[dict[str, Any]]
        if keep is None:
            if skip:
                cursor = cursor.skip(skip)
            if limit is not None:
                cursor = cursor.limit(limit)
            docs = iter(cursor.batch_size(chunk_size))
        else:  # skip and limit count the documents of the fold only
            matching = (d for d in cursor.batch_size(chunk_size) if keep(d))
            docs = itertools.islice(matching, skip, None if limit is None else skip + limit)
            if shown is not projection and shown:
                docs = (_shown(d, shown) for d in docs)
        chunk: list[dict[str, Any]] = []
        for doc in docs:
            chunk.append(_instants(doc))
            if len(chunk) == chunk_size:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def count(self, table: str, filter: dict[str, Any]) -> int:
        filter, keep = split_fold(filter)
        if keep is not None:
            return sum(1 for d in self.database[table].find(filter, _FOLD_FIELDS) if keep(d))
        return int(self.database[table].count_documents(filter))

    def update(
        self,
        table: str,
        filter: dict[str, Any],
        update: dict[str, Any],
        *,
        many: bool,
        new_columns: bool = True,
    ) -> list[Any]:
        if '$set' in update:
            _refuse_naive_datetimes(table, [update['$set']])
        ids = self._matching_ids(table, filter, many)
        if ids:
            try:
                if many:
                    self.database[table].update_many({'_id': {'$in': ids}}, update)
                elif (
                    not self.database[table]
                    .update_one({'$and': [{'_id': ids[0]}, filter]}, update)
                    .matched_count
                ):
                    ids = []  # changed since it was read: a compare-and-swap that lost
            except self._errors() as exc:
                raise WriteFailed(f'Updating {table!r} failed: {_first_line(exc)}') from exc
        return ids

    def set_fields(self, table: str, updates: Sequence[tuple[Any, dict[str, Any]]]) -> None:
        """Set different fields on different documents in one bulk write."""
        if not updates:
            return
        collection = self.database[table]
        if type(collection).__module__.startswith('mongomock'):
            # mongomock cannot run pymongo>=4.9's UpdateOne in bulk_write (it passes a sort=
            # mongomock does not take): its own unordered bulk, the same one write
            bulk = collection.initialize_unordered_bulk_op()
            for i, fields in updates:
                bulk.find({'_id': i}).update_one({'$set': fields})
            bulk.execute()
            return
        from pymongo import UpdateOne

        collection.bulk_write(
            [UpdateOne({'_id': i}, {'$set': fields}) for i, fields in updates], ordered=False
        )

    def delete(self, table: str, filter: dict[str, Any], *, many: bool) -> list[Any]:
        ids = self._matching_ids(table, filter, many)
        if ids:
            self.database[table].delete_many({'_id': {'$in': ids}})
        return ids

    def _matching_ids(self, table: str, filter: dict[str, Any], many: bool) -> list[Any]:
        filter, keep = split_fold(filter)
        if keep is not None:
            cursor = self.database[table].find(filter, _FOLD_FIELDS).sort('_id', 1)
            ids = (doc['_id'] for doc in cursor if keep(doc))
            return list(ids if many else itertools.islice(ids, 1))
        cursor = self.database[table].find(filter, {'_id': 1}).sort('_id', 1)
        if not many:
            cursor = cursor.limit(1)
        return [doc['_id'] for doc in cursor]

    def create_table(self, table: str, schema: dict[str, str], *, primary_key: str = '_id') -> None:
        if table not in self.database.list_collection_names():
            try:
                self.database.create_collection(table)
            except self._errors() as exc:  # created meanwhile by another process
                if table not in self.database.list_collection_names():
                    raise BackendError(f'Could not create collection {table!r}: {exc}') from exc

    def create_index(self, table: str, columns: Sequence[str]) -> None:
        self.database[table].create_index([(c, 1) for c in columns])

    def change_source(self, db: Any, handle: Any, stop: threading.Event) -> Any:
        """Change streams on a replica set, else a high-water mark (:mod:`.cdc`)."""
        from superduperdb.backends.mongodb.cdc import mongo_source

        return mongo_source(db, handle, stop)

    def drop_table(self, table: str) -> None:
        self.database.drop_collection(table)

    def unset_field(self, table: str, name: str) -> int:
        """Remove the field ``name`` from every document of ``table``; how many had it."""
        return int(
            self.database[table].update_many({name: {'$exists': True}}, {'$unset': {name: ''}}).modified_count
        )

    def list_tables(self) -> list[str]:
        return sorted(self.database.list_collection_names())

    def primary_key(self, table: str) -> str:
        return '_id'

    def close(self) -> None:
        close = getattr(self.database.client, 'close', None)
        if close is not None:
            close()


#: What deciding a document's fold reads.
_FOLD_FIELDS = {'_id': 1, '_fold': 1}


def _with_fold_fields(projection: dict[str, int]) -> dict[str, int]:
    """``projection`` reading ``_id`` and ``_fold`` as well (an exclusion: not excluding them)."""
    if any(v for k, v in projection.items() if k != '_id'):  # inclusion
        return {**projection, **_FOLD_FIELDS}
    return {k: v for k, v in projection.items() if k not in _FOLD_FIELDS}


def _shown(doc: dict[str, Any], projection: dict[str, int]) -> dict[str, Any]:
    """``doc`` without the fields :func:`_with_fold_fields` added to what ``projection`` shows."""
    inclusion = any(v for k, v in projection.items() if k != '_id')
    for name in _FOLD_FIELDS:
        if (inclusion and name != '_id' and not projection.get(name)) or projection.get(name) == 0:
            doc.pop(name, None)
    return doc


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


_UTC = datetime.UTC


def _refuse_naive_datetimes(table: str, documents: Sequence[dict[str, Any]]) -> None:
    """BSON dates are points in time (UTC): a datetime without a zone would be read as UTC."""
    for row, doc in enumerate(documents):
        for key, value in doc.items():
            if type(value) is datetime.datetime and value.utcoffset() is None:
                raise InvalidValue(
                    f'Field {key!r} of {table!r} holds a datetime without a time zone (document '
                    f'{row}); datetimes are stored as points in time and returned in UTC. Give it '
                    'a zone, e.g. value.replace(tzinfo=datetime.timezone.utc) or value.astimezone().',
                    field=key,
                    row=row,
                )


def _instants(doc: dict[str, Any]) -> dict[str, Any]:
    """Top-level datetimes as aware UTC values (pymongo returns BSON dates naive, in UTC)."""
    for key, value in doc.items():
        if type(value) is datetime.datetime and value.tzinfo is None:
            doc[key] = value.replace(tzinfo=_UTC)
    return doc
