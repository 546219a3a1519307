"""The metadata store: component records, column encoders, tables we created.

It lives in ``_superduper*`` tables/collections of a database (the user's own
by default) and is written once, over the small :class:`DataBackend`
contract, so it works the same on every backend.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from superduperdb.backends.base import DataBackend
from superduperdb.base import forks
from superduperdb.base.exceptions import BackendError, ComponentError, ComponentNotFound, WriteFailed
from superduperdb.components.component import check_identifier

COMPONENTS = '_superduper_components'
COLUMNS = '_superduper_columns'
TABLES = '_superduper_tables'
OUTPUTS = '_superduper_outputs'
FAILURES = '_superduper_failures'
JOBS = '_superduper_jobs'
POSITIONS = '_superduper_cdc_positions'
EVALUATIONS = '_superduper_evaluations'
#: the position record naming the version of a vector index that serves (after a staged change:
#: vector_search/staging.py), followed by the index's identifier
SERVING = '_superduper_serving:'

logger = logging.getLogger(__name__)

#: The columns of a job record (see superduperdb.jobs.job.Job).
JOB_COLUMNS = {
    '_id': 'str',
    'method': 'str',
    'component': 'str',
    'args': 'str',
    'dependencies': 'str',
    'status': 'str',
    'done': 'int',
    'total': 'int',
    'created_at': 'float',
    'started_at': 'float',
    'ended_at': 'float',
    'heartbeat': 'float',
    'worker': 'str',
    'attempts': 'int',
    'log': 'str',
    'error': 'str',
    'result': 'str',
}


class MetadataStore:
    """Records about components and tables, kept in a database."""

    def __init__(self, backend: DataBackend) -> None:
        self.backend = backend
        self._job_writes = threading.Lock()
        self._clock = (-float('inf'), 0.0)  # (measured at, monotonic; offset of the database's clock)
        forks.in_child(self._forked)
        self._install_lock = threading.RLock()
        self._installing = False
        self._looked_at = -float('inf')  # when the tables were last looked for (monotonic)
        #: whether superduperdb's tables exist in this database: made on the first write, not on
        #: a look (connecting, ``superduperdb info``, a find leave the database as it was)
        self.installed = COMPONENTS in backend.list_tables()
        if self.installed:
            self._create_tables()  # those added since this database was installed
        self._db = _Installed(backend, self)
        #: whether the backend records the tables it creates in TABLES itself, as it creates them
        self.records_creations = backend.record_creations_in(TABLES, before=self.install)

    def _create_tables(self) -> None:
        backend = self.backend
        backend.create_table(
            COMPONENTS,
            {
                '_id': 'str',
                'type_id': 'str',
                'identifier': 'str',
                'version': 'int',
                'config': 'str',
                'artifacts': 'str',
                'dependencies': 'str',
                'hash': 'str',
                'created_at': 'float',
            },
        )
        backend.create_table(
            COLUMNS,
            {
                '_id': 'str',
                'table_name': 'str',
                'column_name': 'str',
                'encoder': 'str',
                'encoder_version': 'int',
            },
        )
        backend.create_table(TABLES, {'_id': 'str', 'created_at': 'float'})
        backend.create_table(OUTPUTS, {'_id': 'str', 'table_name': 'str', 'key': 'str', 'model': 'str'})
        backend.create_table(
            FAILURES,
            {
                '_id': 'str',
                'output_table': 'str',
                'source_id': 'str',
                'error': 'str',
                'message': 'str',
                'attempts': 'int',
                'failed_at': 'float',
            },
        )
        backend.create_table(JOBS, JOB_COLUMNS)
        backend.create_index(JOBS, ['component', 'created_at'])  # jobs of a component, newest first
        backend.create_table(POSITIONS, {'_id': 'str', 'position': 'str', 'updated_at': 'float'})

    #: how long a process that found no tables waits before looking again (another process may
    #: have installed them meanwhile); writes look at once
    LOOK_EVERY = 1.0

    def install(self) -> None:
        """Make superduperdb's tables (where missing): before the first write of anything."""
        if self.installed:
            return
        with self._install_lock:
            if self.installed or self._installing:  # _installing: creating them calls back here
                return
            self._installing = True
            try:
                self._create_tables()
            finally:
                self._installing = False
            self.installed = True
            logger.info('superduperdb made its tables in %s', self.backend.describe())

    def present(self) -> bool:
        """Whether superduperdb's tables exist; until they do, looked for at most once per
        :attr:`LOOK_EVERY` seconds (one catalog query)."""
        if self.installed:
            return True
        now = time.monotonic()
        if now - self._looked_at >= self.LOOK_EVERY:
            self._looked_at = now
            if COMPONENTS in self.backend.list_tables():
                self.install()
        return self.installed

    def forget_installation(self) -> None:
        """After ``drop_superduperdb``: the tables are gone; the next write makes them again."""
        with self._install_lock:
            self.installed = False
            self._looked_at = -float('inf')

    #: how often the offset of the database's clock from this process's is measured again
    CLOCK_EVERY = 60.0

    def now(self) -> float:
        """Seconds since the epoch on the database's clock: what job heartbeats, leases and their
        ages are measured in, so that processes whose clocks differ (another host, a clock
        that jumped) agree. This process's clock plus an offset measured once a minute (one
        query, half its round trip allowed for); the local clock where the database is embedded.
        """
        measured, offset = self._clock
        if time.monotonic() - measured >= self.CLOCK_EVERY:
            best = None  # (round trip, offset): of three samples, the quickest is the surest
            try:
                for _ in range(3):
                    before = time.time()
                    server = self.backend.clock()
                    after = time.time()
                    if server is None:
                        best = (0.0, 0.0)
                        break
                    if best is None or after - before < best[0]:
                        best = (after - before, server - (before + after) / 2)
            except BackendError:  # the database is away: keep the last offset
                pass
            if best is not None:
                offset = best[1]
            measured = time.monotonic()
            self._clock = (measured, offset)
        return time.time() + offset

    def _forked(self) -> None:
        # in a forked child: the heartbeat thread may have held it mid-write in the parent
        self._job_writes = threading.Lock()

    def _rows(self, table: str, filter: dict[str, Any], **kw: Any) -> list[dict[str, Any]]:
        return [row for chunk in self._db.find(table, filter, **kw) for row in chunk]

    # ----- components -------------------------------------------------------
    def add_component(
        self,
        type_id: str,
        identifier: str,
        version: int,
        *,
        config: dict[str, Any],
        artifacts: dict[str, str],
        dependencies: list[str],
        hash: str,
    ) -> None:
        """Record a component version; raises WriteFailed if that version exists."""
        _check(type_id, identifier)
        self._db.insert(
            COMPONENTS,
            [
                {
                    '_id': f'{type_id}/{identifier}/{version}',
                    'type_id': type_id,
                    'identifier': identifier,
                    'version': version,
                    'config': json.dumps(config, sort_keys=True),
                    'artifacts': json.dumps(artifacts, sort_keys=True),
                    'dependencies': json.dumps(dependencies),
                    'hash': hash,
                    'created_at': time.time(),
                }
            ],
            new_columns=False,
        )

    def get_component(self, type_id: str, identifier: str, version: int | None = None) -> dict[str, Any]:
        """The record of one version (the latest if None), with JSON fields parsed."""
        versions = self.versions(type_id, identifier)
        if not versions:
            known = self.identifiers(type_id)
            hint = f' Registered {type_id}s: {", ".join(known)}.' if known else ''
            raise ComponentNotFound(
                f'No {type_id} {identifier!r} is registered.{hint} See db.show({type_id!r}).',
                type_id=type_id,
                identifier=identifier,
            )
        if version is None:
            version = versions[-1]
        if version not in versions:
            raise ComponentNotFound(
                f'{type_id.capitalize()} {identifier!r} has no version {version}; versions are '
                f'{", ".join(map(str, versions))}. See db.show({type_id!r}, {identifier!r}).',
                type_id=type_id,
                identifier=identifier,
                version=version,
            )
        row = self._db.get(COMPONENTS, f'{type_id}/{identifier}/{version}')
        assert row is not None, 'listed by versions() above'
        return _parse(row)

    def versions(self, type_id: str, identifier: str) -> list[int]:
        _check(type_id, identifier)
        rows = self._rows(
            COMPONENTS, {'type_id': type_id, 'identifier': identifier}, projection={'version': 1}
        )
        return sorted(int(r['version']) for r in rows)

    def identifiers(self, type_id: str) -> list[str]:
        check_identifier(type_id, 'type id')
        rows = self._rows(COMPONENTS, {'type_id': type_id}, projection={'identifier': 1})
        return sorted({r['identifier'] for r in rows})

    def latest(self, type_id: str) -> list[dict[str, Any]]:
        """The record of the latest version of every component of ``type_id``, parsed."""
        latest: dict[str, dict[str, Any]] = {}
        for row in self._rows(COMPONENTS, {'type_id': type_id}):
            record = _parse(row)
            seen = latest.get(record['identifier'])
            if seen is None or record['version'] > seen['version']:
                latest[record['identifier']] = record
        return [latest[k] for k in sorted(latest)]

    def all_components(self) -> list[dict[str, Any]]:
        return [_parse(r) for r in self._rows(COMPONENTS, {})]

    def delete_component(self, type_id: str, identifier: str, version: int) -> None:
        self._db.delete(COMPONENTS, {'_id': f'{type_id}/{identifier}/{version}'}, many=False)

    # ----- columns and tables ----------------------------------------------
    def column_encoders(self, table: str) -> dict[str, tuple[str, int]]:
        """``{column: (encoder identifier, version)}`` for a SQL table."""
        return {
            r['column_name']: (r['encoder'], int(r['encoder_version']))
            for r in self._rows(COLUMNS, {'table_name': table})
        }

    def set_column_encoder(self, table: str, column: str, encoder: str, version: int) -> None:
        try:
            self._db.insert(
                COLUMNS,
                [
                    {
                        '_id': f'{table}.{column}',
                        'table_name': table,
                        'column_name': column,
                        'encoder': encoder,
                        'encoder_version': version,
                    }
                ],
                new_columns=False,
            )
        except WriteFailed:  # another process registered it first: keep theirs
            pass

    def columns_using(self, encoder: str) -> list[str]:
        return sorted(
            f'{r["table_name"]}.{r["column_name"]}' for r in self._rows(COLUMNS, {'encoder': encoder})
        )

    def forget_table(self, table: str) -> None:
        self._db.delete(COLUMNS, {'table_name': table}, many=True)
        self._db.delete(TABLES, {'_id': table}, many=False)

    def created_table(self, table: str) -> bool:
        """True if superduperdb created ``table`` (and so may add columns to it)."""
        return self._db.count(TABLES, {'_id': table}) > 0

    def created_tables(self) -> list[str]:
        """Every table recorded as made by superduperdb (its own, outputs, and users' tables
        made by an insert into a new name)."""
        return sorted(str(r['_id']) for r in self._rows(TABLES, {}, projection={'_id': 1}))

    def record_created_table(self, table: str) -> None:
        """Record that superduperdb creates ``table``: before creating it (an intent), unless
        the backend records its creations itself (:attr:`records_creations`)."""
        try:
            self._db.insert(TABLES, [{'_id': table, 'created_at': time.time()}], new_columns=False)
        except (WriteFailed, BackendError):
            pass

    # ----- model outputs and their failures ----------------------------------
    def register_output(self, out_table: str, table: str, key: str, model: str) -> None:
        if self._db.count(OUTPUTS, {'_id': out_table}):
            return
        try:
            self._db.insert(
                OUTPUTS,
                [{'_id': out_table, 'table_name': table, 'key': key, 'model': model}],
                new_columns=False,
            )
        except WriteFailed:  # registered meanwhile by another process
            pass

    def all_outputs(self) -> list[dict[str, Any]]:
        """Every output table's record (``_id``, ``table_name``, ``key``, ``model``)."""
        return self._rows(OUTPUTS, {})

    def outputs_of(self, table: str) -> list[dict[str, Any]]:
        """``[{'_id': output table, 'key': ..., 'model': ...}]`` for a source table."""
        return self._rows(OUTPUTS, {'table_name': table})

    def forget_outputs(self, out_table: str) -> None:
        self._db.delete(OUTPUTS, {'_id': out_table}, many=False)
        self._db.delete(FAILURES, {'output_table': out_table}, many=True)

    def record_failures(self, out_table: str, failures: dict[str, BaseException]) -> None:
        """Add or bump the failure ledger entries of rows whose prediction raised.

        Another process may record the same rows at the same moment (two runs of one backfill):
        the insert that loses the race is tried again from the entries the winner wrote.
        """
        if not failures:
            return
        ids = [f'{out_table}/{source_id}' for source_id in failures]
        for attempt in range(3):
            previous = {r['_id']: int(r['attempts']) for r in self._rows(FAILURES, {'_id': {'$in': ids}})}
            self._db.delete(FAILURES, {'_id': {'$in': ids}}, many=True)
            now = time.time()
            try:
                self._db.insert(
                    FAILURES,
                    [
                        {
                            '_id': f'{out_table}/{source_id}',
                            'output_table': out_table,
                            'source_id': str(source_id),
                            'error': type(exc).__name__,
                            'message': str(exc)[:2000],
                            'attempts': previous.get(f'{out_table}/{source_id}', 0) + 1,
                            'failed_at': now,
                        }
                        for source_id, exc in failures.items()
                    ],
                    new_columns=False,
                )
                return
            except WriteFailed:  # entries written meanwhile by another process
                if attempt == 2:
                    raise

    def clear_failures(self, out_table: str, source_ids: list[Any]) -> None:
        if source_ids:
            ids = [f'{out_table}/{source_id}' for source_id in source_ids]
            self._db.delete(FAILURES, {'_id': {'$in': ids}}, many=True)

    def failures(self, out_table: str) -> list[dict[str, Any]]:
        return self._rows(FAILURES, {'output_table': out_table})

    def _ledgers(self, names: Sequence[str], prefix: str | None) -> dict[str, Any]:
        """A filter on the ledger entries of the ledgers ``names``, and of those whose names start
        with ``prefix`` (a range on the name: every ledger of one table's downloads)."""
        picks: list[dict[str, Any]] = [{'output_table': {'$in': list(names)}}]
        if prefix:
            after = prefix[:-1] + chr(ord(prefix[-1]) + 1)
            picks.append({'output_table': {'$gte': prefix, '$lt': after}})
        return picks[0] if len(picks) == 1 else {'$or': picks}

    def failed_rows(self, names: Sequence[str], *, prefix: str | None = None) -> list[str]:
        """The source ids (as text) the ledgers ``names`` (and those starting with ``prefix``) hold."""
        rows = self._rows(FAILURES, self._ledgers(names, prefix), projection={'source_id': 1})
        return sorted({str(r['source_id']) for r in rows})

    def forget_failures(
        self, names: Sequence[str], source_ids: Sequence[Any] | None = None, *, prefix: str | None = None
    ) -> None:
        """Delete the entries of ``source_ids`` (all of them if None) from the ledgers ``names``
        and those whose names start with ``prefix``: rows deleted, a table dropped."""
        where = self._ledgers(names, prefix)
        if source_ids is not None:
            if not source_ids:
                return
            where = {'$and': [where, {'source_id': {'$in': [str(i) for i in source_ids]}}]}
        self._db.delete(FAILURES, where, many=True)

    # ----- jobs ---------------------------------------------------------------
    def create_job(self, record: dict[str, Any]) -> None:
        self._db.insert(JOBS, [record], new_columns=False)

    def update_job(self, job_id: str, **fields: Any) -> None:
        # a running job's record is written by its own thread and by the heartbeat thread: one
        # at a time (DuckDB fails the second of two concurrent updates of a row)
        with self._job_writes:
            self._db.update(JOBS, {'_id': job_id}, {'$set': fields}, many=False)

    def claim_job(self, job_id: str, status: str, worker: str, fields: dict[str, Any]) -> bool:
        """Set ``fields`` on a job only if it is still ``status`` and held by ``worker``; True if so.

        Two processes that both see an orphaned job: one claims it, the other's claim finds
        the worker changed and does nothing.
        """
        with self._job_writes:
            ids = self._db.update(
                JOBS, {'_id': job_id, 'status': status, 'worker': worker}, {'$set': fields}, many=False
            )
        return bool(ids)

    def release_jobs(self, job_ids: list[str], worker: str) -> None:
        """Pending jobs ``worker`` held are now held by a cluster: no heartbeat to expect (one query)."""
        if job_ids:
            with self._job_writes:
                self._db.update(
                    JOBS,
                    {'_id': {'$in': job_ids}, 'status': 'pending', 'worker': worker},
                    {'$set': {'heartbeat': None}},
                    many=True,
                )

    def get_job(self, job_id: str) -> dict[str, Any] | None:
        return self._db.get(JOBS, job_id)

    def job_ids_starting(self, prefix: str, *, limit: int = 3) -> list[str]:
        """Ids of jobs that start with ``prefix`` (at most ``limit``), by a range on the key."""
        if not prefix:
            return []
        after = prefix[:-1] + chr(ord(prefix[-1]) + 1)
        rows = self._rows(JOBS, {'_id': {'$gte': prefix, '$lt': after}}, projection={'_id': 1}, limit=limit)
        return sorted(r['_id'] for r in rows if str(r['_id']).startswith(prefix))

    def jobs(self, filter: dict[str, Any] | None = None, *, limit: int | None = None) -> list[dict[str, Any]]:
        """Job records, newest first."""
        return self._rows(JOBS, filter or {}, sort=[('created_at', -1)], limit=limit)

    # ----- change-capture positions -------------------------------------------
    def position(self, name: str) -> str | None:
        """The persisted position (high-water mark, resume token) of a change-capture stream."""
        row = self._db.get(POSITIONS, name)
        return None if row is None else row['position']

    def record_evaluation(self, result: dict[str, Any]) -> None:
        """Keep an evaluation's result (see vector_search/evaluate.py); its table is made with
        the first one (most databases never evaluate)."""
        self.install()
        if not self.backend.has_table(EVALUATIONS):
            self.backend.create_table(
                EVALUATIONS, {'_id': 'str', 'index_name': 'str', 'created_at': 'float', 'result': 'str'}
            )
        row = {'_id': result['id'], 'index_name': result['index'], 'created_at': result['created_at']}
        self._db.insert(EVALUATIONS, [{**row, 'result': json.dumps(result, default=str)}], new_columns=False)

    def evaluations(self, index: str | None = None) -> list[dict[str, Any]]:
        """The evaluations kept (of ``index``), oldest first."""
        if not self.backend.has_table(EVALUATIONS):
            return []
        rows = self._rows(EVALUATIONS, {'index_name': index} if index else {})
        return sorted((json.loads(r['result']) for r in rows), key=lambda r: r['created_at'])

    def positions(self) -> list[dict[str, Any]]:
        """Every persisted change-capture position: ``_id`` (the stream), ``position``,
        ``updated_at`` (when it last moved). Records of superduperdb's own (``_superduper*``,
        such as the seal key's) are not streams and are left out."""
        rows = self._rows(POSITIONS, {}, sort=[('_id', 1)])
        return [r for r in rows if not r['_id'].startswith('_superduper')]

    def forget_position(self, name: str) -> None:
        """Delete the position ``name`` (a stream no longer followed: its table dropped)."""
        self._db.delete(POSITIONS, {'_id': name}, many=False)

    def add_position(self, name: str, position: str) -> None:
        """Record ``position`` under a new ``name``; WriteFailed if another process wrote it first."""
        self._db.insert(
            POSITIONS, [{'_id': name, 'position': position, 'updated_at': time.time()}], new_columns=False
        )

    def swap_position(self, name: str, old: str | None, new: str) -> bool:
        """Set ``name`` to ``new`` only if it is still ``old`` (None: not recorded yet); whether
        it was. Several processes appending to one record each retry until theirs lands."""
        if old is None:
            try:
                self.add_position(name, new)
            except WriteFailed:
                return False
            return True
        changed = self._db.update(
            POSITIONS,
            {'_id': name, 'position': old},
            {'$set': {'position': new, 'updated_at': time.time()}},
            many=False,
        )
        return bool(changed)

    def set_position(self, name: str, position: str) -> None:
        if not self._db.update(
            POSITIONS, {'_id': name}, {'$set': {'position': position, 'updated_at': time.time()}}, many=False
        ):
            try:
                self.add_position(name, position)
            except WriteFailed:  # written meanwhile by another process: update it
                self._db.update(POSITIONS, {'_id': name}, {'$set': {'position': position}}, many=False)


def _check(type_id: str, identifier: str) -> None:
    check_identifier(type_id, 'type id')
    check_identifier(identifier)


def _parse(row: dict[str, Any]) -> dict[str, Any]:
    try:
        parsed = {
            **row,
            'version': int(row['version']),
            'config': json.loads(row['config']),
            'artifacts': json.loads(row['artifacts']),
            'dependencies': json.loads(row['dependencies']),
        }
    except (TypeError, ValueError, KeyError) as exc:
        raise ComponentError(
            f'The stored record {row.get("_id")!r} is not readable ({type(exc).__name__}).'
        ) from exc
    config, artifacts = parsed['config'], parsed['artifacts']
    if not isinstance(config, dict) or not isinstance(config.get('params'), dict):
        raise ComponentError(f'The stored record {row.get("_id")!r} has no {{"cls", "params"}} config.')
    if not isinstance(artifacts, dict) or not all(isinstance(v, str) for v in artifacts.values()):
        raise ComponentError(f'The stored record {row.get("_id")!r} has malformed artifact keys.')
    return parsed


class _Installed:
    """The backend as the metadata store uses it: a write makes superduperdb's tables first;
    reads, updates and deletes before there are any find nothing (and create nothing)."""

    def __init__(self, backend: DataBackend, store: MetadataStore) -> None:
        self.backend, self.store = backend, store

    def insert(self, table: str, documents: Sequence[dict[str, Any]], *, new_columns: bool) -> list[Any]:
        self.store.install()
        return self.backend.insert(table, documents, new_columns=new_columns)

    def find(self, table: str, filter: dict[str, Any], **kw: Any) -> Iterator[list[dict[str, Any]]]:
        if not self.store.present():
            return iter(())
        return self.backend.find(table, filter, **kw)

    def get(self, table: str, key: Any) -> dict[str, Any] | None:
        return self.backend.get(table, key) if self.store.present() else None

    def count(self, table: str, filter: dict[str, Any]) -> int:
        return self.backend.count(table, filter) if self.store.present() else 0

    def update(self, table: str, filter: dict[str, Any], update: dict[str, Any], *, many: bool) -> list[Any]:
        return self.backend.update(table, filter, update, many=many) if self.store.present() else []

    def delete(self, table: str, filter: dict[str, Any], *, many: bool) -> list[Any]:
        return self.backend.delete(table, filter, many=many) if self.store.present() else []
