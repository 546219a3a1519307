"""Change capture on SQL databases: triggers and a queue on PostgreSQL, a high-water mark elsewhere.

See :mod:`superduperdb.freshness.cdc` for the policy; this module only finds changes.
"""

from __future__ import annotations

import decimal
import hashlib
import logging
import select
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from superduperdb.backends.changes import ChangeSource, Handler, HighWaterMark, fold
from superduperdb.base.config import CFG
from superduperdb.base.exceptions import BackendError, ChangesNotHandled, ConfigError

if TYPE_CHECKING:
    from superduperdb.backends.sql.backend import SQLBackend
    from superduperdb.datalayer.datalayer import Datalayer

logger = logging.getLogger(__name__)

QUEUE = '_superduper_cdc_queue'
CHANNEL = 'superduperdb_cdc'
#: The triggers on a watched table, by event (TRUNCATE has no transition table).
TRIGGERS = {
    'INSERT': ('_superduper_cdc_insert', 'REFERENCING NEW TABLE AS _sd_new'),
    'UPDATE': ('_superduper_cdc_update', 'REFERENCING OLD TABLE AS _sd_old NEW TABLE AS _sd_new'),
    'DELETE': ('_superduper_cdc_delete', 'REFERENCING OLD TABLE AS _sd_old'),
    'TRUNCATE': ('_superduper_cdc_truncate', ''),
}


class SQLKeys:
    """Primary keys of SQL tables, read with SQLAlchemy Core (the key column only)."""

    db: Datalayer
    #: the Python type of each table's key column (None: not one column)
    _key_types: dict[str, Any]

    @property
    def backend(self) -> SQLBackend:
        return self.db.databackend  # type: ignore[return-value]

    def check(self, table: str) -> None:
        self.key_column(table)

    def key_column(self, table: str) -> sa.Column[Any] | None:
        """The single primary key column of ``table`` (None if the table does not exist)."""
        t = self.backend.table(table)
        if t is None:
            return None
        if len(t.primary_key.columns) != 1:
            refreshed = self.backend.table(table, refresh=True)  # a key added since we looked?
            t = refreshed if refreshed is not None else t
        columns = list(t.primary_key.columns)
        if len(columns) == 1:
            return columns[0]
        what = (
            'no primary key'
            if not columns
            else f'a composite primary key ({", ".join(c.name for c in columns)})'
        )
        raise ConfigError(
            f'Change capture cannot follow table {table!r}: it has {what}. Change capture needs '
            f'a single-column primary key to tell which rows changed: add one (for example '
            f'ALTER TABLE {table} ADD PRIMARY KEY (id)), or deactivate the watchers of {table!r}. '
            'Writes made through db.execute reach its watchers without change capture.'
        )

    def _rows(self, stmt: Any) -> list[Any]:
        try:
            with self.backend.engine.connect() as conn:
                return list(conn.execute(stmt).all())
        except sa.exc.SQLAlchemyError as exc:
            raise BackendError(f'Change capture query failed: {_reason(exc)}') from exc

    def exists(self, table: str) -> bool:
        """Whether ``table`` exists now: the cached schema says so and a query that reads no row
        finds it (another program may have dropped it since it was read); a table found gone is
        forgotten by the backend, so a table made anew under its name is read afresh."""
        t = self.backend.table(table)
        if t is None:
            return False
        try:
            self._rows(sa.select(sa.literal(1)).select_from(t).where(sa.false()))
            return True
        except BackendError:  # gone, or the database away: the schema tells which
            self._key_types.pop(table, None)
            return self.backend.table(table, refresh=True) is not None

    def key_from_text(self, table: str, text: str) -> Any:
        """A key as text (a queued change's, a ledger entry's) as the value the driver gives for
        the key column; None where the column's type cannot be told."""
        if table not in self._key_types:
            t = self.backend.table(table)
            single = t is not None and len(t.primary_key.columns) == 1
            column = next(iter(t.primary_key.columns)) if t is not None and single else None
            try:
                self._key_types[table] = column.type.python_type if column is not None else None
            except NotImplementedError:
                self._key_types[table] = str
        kind = self._key_types[table]
        if kind is None:
            return None
        if text is None or kind is str:
            return text
        try:
            if kind in (int, float, decimal.Decimal, uuid.UUID):
                return kind(text)
        except (ValueError, decimal.InvalidOperation):
            return None
        return text

    def all_keys(self, table: str, chunk_size: int) -> Iterator[list[Any]]:
        pk = self.key_column(table)
        if pk is None:
            return
        last: Any = None
        while True:
            stmt = sa.select(pk).order_by(pk).limit(chunk_size)
            if last is not None:
                stmt = stmt.where(pk > last)
            keys = [row[0] for row in self._rows(stmt)]
            if keys:
                last = keys[-1]
                yield keys
            if len(keys) < chunk_size:
                return

    def existing(self, table: str, keys: Sequence[Any]) -> set[Any]:
        pk = self.key_column(table)
        if pk is None or not keys:
            return set()
        return {row[0] for row in self._rows(sa.select(pk).where(pk.in_(list(keys))))}


class SQLHighWaterMark(SQLKeys, HighWaterMark):
    """New rows past a persisted mark on the primary key (SQLite, DuckDB, MySQL/MariaDB)."""

    def __init__(self, db: Datalayer, handle: Handler, stop: threading.Event) -> None:
        super().__init__(db, handle, stop)
        self._key_types = {}

    def lanes(self, table: str) -> list[str]:
        return ['key']

    def exists(self, table: str) -> bool:
        return SQLKeys.exists(self, table)

    def keys_after(self, table: str, lane: str, after: Any, limit: int) -> list[Any]:
        pk = self.key_column(table)
        if pk is None:
            return []
        stmt = sa.select(pk).order_by(pk).limit(limit)
        if after is not None:
            stmt = stmt.where(pk > after)
        return [row[0] for row in self._rows(stmt)]

    def count_after(self, table: str, lane: str, after: Any) -> int:
        pk = self.key_column(table)
        if pk is None:
            return 0
        stmt = sa.select(sa.func.count()).select_from(pk.table)
        if after is not None:
            stmt = stmt.where(pk > after)
        return int(self._rows(stmt)[0][0])

    def newest(self, table: str, lane: str) -> Any:
        pk = self.key_column(table)
        return None if pk is None else self._rows(sa.select(sa.func.max(pk)))[0][0]

    def dump(self, lane: str, key: Any) -> Any:
        return key if key is None or isinstance(key, (int, str, float)) else str(key)


class PostgresTriggers(SQLKeys, ChangeSource):
    """Statement triggers append each change to a queue table and NOTIFY a listener.

    The queue, ``_superduper_cdc_queue``, lives in the connection's current schema and holds
    (table, op, primary key as text, transaction id, time). A pass reads it in id order and
    deletes what it handled in the same transaction, so a crash leaves the rows to be handled
    again. A change whose job failed is not deleted: it gets an ``attempts`` count, its
    ``error`` and a ``retry_at`` time (backoff ``cdc.retry_backoff`` doubling up to
    ``cdc.retry_max``) and is handled again then. A transaction-level advisory lock lets one
    process drain at a time.
    """

    def __init__(self, db: Datalayer, handle: Handler, stop: threading.Event) -> None:
        super().__init__(db, handle, stop)
        self._schema: str | None = None
        self._followed: set[str] | None = None
        self._verified_at = 0.0
        self._listener: Any = None
        self._raw: Any = None
        self._wakers: tuple[socket.socket, socket.socket] | None = None
        self._key_types: dict[str, Any] = {}

    # ----- names -----------------------------------------------------------------
    @property
    def schema(self) -> str:
        if self._schema is None:
            self._schema = str(self._rows(sa.text('SELECT current_schema()'))[0][0])
        return self._schema

    def _quote(self, name: str) -> str:
        return self.backend.engine.dialect.identifier_preparer.quote_identifier(name)

    @property
    def queue(self) -> str:
        return f'{self._quote(self.schema)}.{self._quote(QUEUE)}'

    def lock_key(self, purpose: str) -> int:
        """The advisory lock key of ``purpose`` (``drain`` or ``install``) in this schema."""
        digest = hashlib.sha1(f'superduperdb_cdc:{purpose}:{self.schema}'.encode()).digest()
        return int.from_bytes(digest[:8], 'big', signed=True)

    # ----- following tables --------------------------------------------------------
    def follow(self, tables: Sequence[str]) -> list[str]:
        wanted = {table for table in tables if self.key_column(table) is not None}
        if wanted == self._followed and time.monotonic() - self._verified_at < CFG.cdc.reconcile_interval:
            return []  # now and then look again: a table dropped and made anew lost its triggers
        fresh = []
        try:
            with self.backend.engine.begin() as conn:
                conn.execute(sa.text('SELECT pg_advisory_xact_lock(:key)'), {'key': self.lock_key('install')})
                conn.execute(
                    sa.text(
                        f'CREATE TABLE IF NOT EXISTS {self.queue} ('
                        'id BIGSERIAL PRIMARY KEY, table_name TEXT NOT NULL, op CHAR(1) NOT NULL, '
                        'pk TEXT, txid BIGINT NOT NULL DEFAULT txid_current(), '
                        'created_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp())'
                    )
                )
                # a change whose job failed stays queued, to be retried after retry_at (columns of
                # queues made before; ALTER TABLE only when one is missing: it locks the queue
                # every trigger writes to, and a lock taken at every check deadlocked writers)
                have = conn.execute(
                    sa.text(
                        'SELECT column_name FROM information_schema.columns '
                        'WHERE table_schema = :schema AND table_name = :name'
                    ),
                    {'schema': self.schema, 'name': QUEUE},
                ).scalars()
                if not {'attempts', 'retry_at', 'error'} <= set(have):
                    conn.execute(
                        sa.text(
                            f'ALTER TABLE {self.queue} '
                            'ADD COLUMN IF NOT EXISTS attempts INT NOT NULL DEFAULT 0, '
                            'ADD COLUMN IF NOT EXISTS retry_at TIMESTAMPTZ, '
                            'ADD COLUMN IF NOT EXISTS error TEXT'
                        )
                    )
                installed = self._followed_now(conn)
                for table in sorted(wanted - installed):
                    self._install(conn, table)
                    fresh.append(table)
                for table in sorted(installed - wanted):
                    self._uninstall(conn, table)
                self._drop_orphans(conn, wanted)
        except sa.exc.SQLAlchemyError as exc:
            raise BackendError(f'Installing change-capture triggers failed: {_reason(exc)}') from exc
        self._followed, self._verified_at = wanted, time.monotonic()
        if fresh:
            logger.info('change capture triggers installed on %s', ', '.join(fresh))
        return fresh

    def _followed_now(self, conn: sa.Connection) -> set[str]:
        """The tables whose triggers call this schema's functions, named as superduperdb names
        them: the user's tables bare, those of other schemas qualified (``shop.items``). The
        triggers are on the user's tables, which are not in this schema when superduperdb has
        one of its own (``internal_schema``)."""
        rows = conn.execute(
            sa.text(
                'SELECT n.nspname, c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid '
                'JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_proc p ON p.oid = t.tgfoid '
                'JOIN pg_namespace f ON f.oid = p.pronamespace WHERE t.tgname = :name AND f.nspname = :schema'
            ),
            {'name': TRIGGERS['INSERT'][0], 'schema': self.schema},
        ).all()
        user = self.backend.user_schema or self.schema
        return {name if schema == user else f'{schema}.{name}' for schema, name in rows}

    @staticmethod
    def _function_name(table: str) -> str:
        return f'_superduper_cdc_{hashlib.sha1(table.encode()).hexdigest()[:16]}'

    def _target(self, table: str) -> str:
        """``table`` quoted with its schema: ours, or the one it names (``shop.items``)."""
        in_schema, dot, bare = table.rpartition('.')
        if not dot:  # the user's schema: the current one, unless ours comes first (internal_schema)
            in_schema = self.backend.user_schema or self.schema
        return f'{self._quote(in_schema)}.{self._quote(bare)}'

    def _function(self, table: str) -> str:
        return f'{self._quote(self.schema)}.{self._quote(self._function_name(table))}'

    def _drop_orphans(self, conn: sa.Connection, wanted: set[str]) -> None:
        """Trigger functions of tables dropped while followed (their triggers went with them)."""
        keep = {self._function_name(table) for table in wanted}
        found = conn.execute(
            sa.text(
                'SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace '
                "WHERE n.nspname = :schema AND p.proname LIKE '\\_superduper\\_cdc\\_%' "
                'AND NOT EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgfoid = p.oid)'
            ),
            {'schema': self.schema},
        ).scalars()
        for name in found:
            if name not in keep:
                conn.execute(
                    sa.text(f'DROP FUNCTION IF EXISTS {self._quote(self.schema)}.{self._quote(name)}()')
                )

    def _install(self, conn: sa.Connection, table: str) -> None:
        pk = self.key_column(table)
        assert pk is not None
        key, queue, function = self._quote(pk.name), self.queue, self._function(table)
        target = self._target(table)
        # the name as superduperdb knows it ('items', or 'shop.items' in another schema); names are
        # checked to letters, digits, '_', '-' and one '.': safe in a literal
        name = f"'{table}'"
        insert = f'INSERT INTO {queue} (table_name, op, pk) SELECT {name}'
        conn.execute(
            sa.text(
                f"""CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $sd$
DECLARE
  n BIGINT := 0;
  m BIGINT := 0;
BEGIN
  IF current_setting('superduperdb.origin', true) = 'datalayer' THEN
    RETURN NULL;  -- written through superduperdb, which started the watchers' jobs itself
  END IF;
  IF TG_OP = 'INSERT' THEN
    {insert}, 'I', r.{key}::text FROM _sd_new r;
    GET DIAGNOSTICS n = ROW_COUNT;
  ELSIF TG_OP = 'UPDATE' THEN
    {insert}, 'U', r.{key}::text FROM _sd_new r;
    GET DIAGNOSTICS n = ROW_COUNT;
    {insert}, 'D', o.{key}::text FROM _sd_old o
      WHERE NOT EXISTS (SELECT 1 FROM _sd_new r WHERE r.{key} = o.{key});
    GET DIAGNOSTICS m = ROW_COUNT;
    n := n + m;
  ELSIF TG_OP = 'DELETE' THEN
    {insert}, 'D', o.{key}::text FROM _sd_old o;
    GET DIAGNOSTICS n = ROW_COUNT;
  ELSE
    INSERT INTO {queue} (table_name, op, pk) VALUES ({name}, 'T', NULL);
    n := 1;
  END IF;
  IF n > 0 THEN
    PERFORM pg_notify('{CHANNEL}', TG_TABLE_SCHEMA || '.' || TG_TABLE_NAME);
  END IF;
  RETURN NULL;
END $sd$"""
            )
        )
        for event, (name, referencing) in TRIGGERS.items():
            conn.execute(sa.text(f'DROP TRIGGER IF EXISTS {self._quote(name)} ON {target}'))
            conn.execute(
                sa.text(
                    f'CREATE TRIGGER {self._quote(name)} AFTER {event} ON {target} {referencing} '
                    f'FOR EACH STATEMENT EXECUTE FUNCTION {function}()'
                )
            )

    def _uninstall(self, conn: sa.Connection, table: str) -> None:
        """A table no longer watched stops paying for triggers (its queued changes are still handled)."""
        target = self._target(table)
        for name, _ in TRIGGERS.values():
            conn.execute(sa.text(f'DROP TRIGGER IF EXISTS {self._quote(name)} ON {target}'))
        conn.execute(sa.text(f'DROP FUNCTION IF EXISTS {self._function(table)}()'))
        logger.info('change capture triggers removed from %s (no active watcher)', table)

    # ----- draining the queue ---------------------------------------------------------
    def drain(self, tables: Sequence[str], batch_size: int) -> None:
        self.drained = True
        if self._followed is None:
            return
        while not self.stop.is_set():
            try:
                with self.backend.engine.begin() as conn:
                    locked = conn.execute(
                        sa.text('SELECT pg_try_advisory_xact_lock(:key)'), {'key': self.lock_key('drain')}
                    ).scalar()
                    if not locked:
                        logger.debug('another process is draining the change-capture queue')
                        self.drained = False
                        return
                    rows = conn.execute(
                        sa.text(
                            f'SELECT id, table_name, op, pk FROM {self.queue} '
                            'WHERE retry_at IS NULL OR retry_at <= clock_timestamp() ORDER BY id LIMIT :n'
                        ),
                        {'n': batch_size},
                    ).all()
                    if not rows:
                        return
                    failed = self._dispatch([(r.id, r.table_name, r.op, r.pk) for r in rows])
                    done = [r.id for r in rows if r.id not in failed]
                    if done:  # handled: outputs committed, or their rows' failures in the ledger
                        conn.execute(
                            sa.text(f'DELETE FROM {self.queue} WHERE id IN :ids').bindparams(
                                sa.bindparam('ids', expanding=True)
                            ),
                            {'ids': done},
                        )
                    for error, ids in _by_error(failed).items():
                        self._retry_later(conn, ids, error)
            except sa.exc.SQLAlchemyError as exc:
                raise BackendError(f'Reading the change-capture queue failed: {_reason(exc)}') from exc
            if len(rows) < batch_size:
                return

    def _dispatch(self, rows: Sequence[tuple[int, str, str, str | None]]) -> dict[int, str]:
        """Hand queued changes over in order; a TRUNCATE ends the run of changes before it.

        Returns the queue ids whose jobs failed, with the error: they stay queued. Changes to
        a table that no longer exists are done (its rows are gone; see ChangeCapture._gone):
        retried, they would hold up the queue of every other table.
        """
        failed: dict[int, str] = {}
        run: list[tuple[int, str, str, Any]] = []
        present: dict[str, bool] = {}
        for queue_id, table, op, key in rows:
            if table not in present:
                present[table] = self.exists(table)
            if not present[table]:
                continue
            if op == 'T':
                failed.update(self._hand_over(run))
                run = []
                try:
                    self.handle(table, truncated=True)
                except ChangesNotHandled as exc:
                    failed[queue_id] = _first_line(exc)
            else:
                run.append((queue_id, table, op.strip(), self._key(table, key)))
        failed.update(self._hand_over(run))
        return failed

    def _hand_over(self, run: list[tuple[int, str, str, Any]]) -> dict[int, str]:
        failed: dict[int, str] = {}
        for table, kinds in fold([(table, op, key) for _, table, op, key in run]).items():
            try:
                self.handle(
                    table, inserted=kinds['inserted'], updated=kinds['updated'], deleted=kinds['deleted']
                )
            except ChangesNotHandled as exc:
                error = _first_line(exc)
                failed.update({queue_id: error for queue_id, t, _, _ in run if t == table})
        return failed

    def _retry_later(self, conn: sa.Connection, ids: list[int], error: str) -> None:
        """Keep the changes ``ids``, to be handled again after a backoff that doubles per attempt."""
        conn.execute(
            sa.text(
                f'UPDATE {self.queue} SET attempts = attempts + 1, error = :error, retry_at = '
                'clock_timestamp() + make_interval(secs => least(:most, :first * power(2, attempts))) '
                'WHERE id IN :ids'
            ).bindparams(sa.bindparam('ids', expanding=True)),
            {'ids': ids, 'error': error[:2000], 'first': CFG.cdc.retry_backoff, 'most': CFG.cdc.retry_max},
        )
        logger.warning(
            'change capture: %d change(s) kept for a retry in %s s or more, their jobs failed: %s',
            len(ids),
            CFG.cdc.retry_backoff,
            error,
        )

    def _key(self, table: str, text: Any) -> Any:
        """A queued key (text) as the Python value the driver gives for the key column."""
        key = self.key_from_text(table, text)
        return text if key is None else key

    # ----- waiting for notifications ------------------------------------------------------
    def _listen(self) -> None:
        if self._listener is not None:
            return
        raw = self.backend.engine.raw_connection()
        try:
            conn = raw.driver_connection
            assert conn is not None
            raw.detach()  # a connection of its own, kept out of the pool
            conn.rollback()
            conn.autocommit = True
            conn.execute(f'LISTEN {CHANNEL}')
        except Exception:
            raw.close()
            raise
        self._raw, self._listener = raw, conn

    def wait(self, timeout: float) -> None:
        if self._wakers is None:
            self._wakers = socket.socketpair()
            for end in self._wakers:
                end.setblocking(False)
        if self._listener is None:
            self._listen()
            return  # changes may have come before LISTEN: look at the queue again first
        if self.stop.is_set():
            return
        wake = self._wakers[0]
        try:
            ready, _, _ = select.select([wake, self._listener.fileno()], [], [], timeout)
        except (OSError, ValueError):  # the listener's socket went away
            self._close_listener()
            return
        if wake in ready:
            try:
                while wake.recv(4096):
                    pass
            except BlockingIOError:
                pass
        if self._listener.fileno() in ready:
            try:
                for _ in self._listener.notifies(timeout=0):
                    pass  # a notification only says "look at the queue"
            except Exception:
                logger.warning('change capture lost its LISTEN connection; reconnecting', exc_info=True)
                self._close_listener()

    def wake(self) -> None:
        wakers = self._wakers
        if wakers is not None:
            try:
                wakers[1].send(b'x')
            except OSError:
                pass

    def _close_listener(self) -> None:
        raw, self._raw, self._listener = self._raw, None, None
        if raw is not None:
            try:
                raw.close()
            except Exception:
                logger.debug('closing the LISTEN connection failed', exc_info=True)

    def close(self) -> None:
        self._close_listener()
        wakers, self._wakers = self._wakers, None
        for end in wakers or ():
            end.close()

    # ----- status -----------------------------------------------------------------------
    def _queue_exists(self) -> bool:
        found = self._rows(sa.text('SELECT to_regclass(:name)').bindparams(name=f'{self.queue}'))
        return found[0][0] is not None

    def backlog(self, tables: Sequence[str]) -> dict[str, int]:
        counts = dict.fromkeys(tables, 0)
        if self._queue_exists():
            stmt = sa.text(f'SELECT table_name, count(*) FROM {self.queue} GROUP BY table_name')
            counts.update({str(name): int(n) for name, n in self._rows(stmt)})
        return counts

    def lag(self, tables: Sequence[str]) -> float | None:
        if not self._queue_exists():
            return None
        stmt = sa.text(f'SELECT EXTRACT(EPOCH FROM clock_timestamp() - min(created_at)) FROM {self.queue}')
        value = self._rows(stmt)[0][0]
        return None if value is None else max(0.0, float(value))

    def lags(self, tables: Sequence[str]) -> dict[str, float]:
        """Per table, the age of its oldest queued change: both times the server's (the queue's
        ``created_at`` is stamped by the trigger), so no process's clock takes part."""
        if not self._queue_exists():
            return {}
        stmt = sa.text(
            f'SELECT table_name, EXTRACT(EPOCH FROM clock_timestamp() - min(created_at)) '
            f'FROM {self.queue} GROUP BY table_name'
        )
        wanted = set(tables)
        return {str(name): max(0.0, float(age)) for name, age in self._rows(stmt) if name in wanted}


def _first_line(exc: BaseException) -> str:
    return str(exc.args[0] if exc.args else exc).strip().splitlines()[0]


def _by_error(failed: dict[int, str]) -> dict[str, list[int]]:
    grouped: dict[str, list[int]] = {}
    for queue_id, error in failed.items():
        grouped.setdefault(error, []).append(queue_id)
    return grouped


def _reason(exc: sa.exc.SQLAlchemyError) -> str:
    orig = getattr(exc, 'orig', None)
    return str(orig if orig is not None else exc).strip().splitlines()[0]
