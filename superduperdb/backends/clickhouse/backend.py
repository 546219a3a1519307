"""ClickHouse: embedded (``chdb://path``, the chdb package) or a server (``clickhouse://host``).

Both are driven the same way: clickhouse-connect's client (chdb registers itself as one of
its transports, in process, no socket) under clickhouse-connect's SQLAlchemy dialect, under
the SQL backend. So queries, filters, encoders, outputs, predict, vector search and change
capture by high-water mark are the SQL backend's, and only what ClickHouse does its own way
is in :mod:`.dialect`. superduperdb's records (components, jobs, positions) live in a SQLite
file of their own (a warehouse is for large appends and scans, not for a job table updated
every second): inside the chdb folder, or under ``~/.superduperdb/clickhouse/`` for a server;
``metadata_store`` may name any other database (PostgreSQL, for workers on several hosts).
"""

from __future__ import annotations

import collections
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

import sqlalchemy as sa

from superduperdb.backends.base import Capabilities
from superduperdb.backends.clickhouse import dialect as ch
from superduperdb.backends.clickhouse.columns import ColumnQuery, arrow_table, compiled_for
from superduperdb.backends.clickhouse.search import search_statement
from superduperdb.backends.sql.backend import SQLBackend
from superduperdb.backends.sql.compiler import compile_filter, compile_sort
from superduperdb.base._deps import require
from superduperdb.base.exceptions import ConfigError, ConnectionFailed, WriteFailed
from superduperdb.base.masking import mask_secrets

#: the folder inside a chdb database where superduperdb keeps its own file
INTERNAL = '_superduper'


class ClickHouseBackend(SQLBackend):
    """The SQL backend on ClickHouse (see the module's docstring)."""

    #: no readable output views (their SQL is per dialect; ClickHouse's is not written yet)
    capabilities: ClassVar[Capabilities] = Capabilities(
        column_reads=True, bulk_rows=True, views=False, vector_search=True, arrow_reads=True
    )

    def __init__(self, engine: sa.Engine, *, path: str | None = None) -> None:
        #: the chdb database's folder (None: in memory, or a server)
        self.path = path
        self.embedded = path is not None or engine.url.host is None
        super().__init__(engine, facts=ch.CHDB if self.embedded else ch.SERVER)
        #: statements read column-wise, by identity (see columns.compiled_for)
        self._column_queries: dict[int, tuple[sa.Select[Any], ColumnQuery | None]] = {}

    @property
    def name(self) -> str:  # type: ignore[override]
        return 'chdb' if self.embedded else 'clickhouse'

    def describe(self) -> str:
        if self.embedded:
            return f'chdb: {self.path or ":memory:"}'
        url = self.engine.url
        return f'clickhouse: {mask_secrets(url.render_as_string(hide_password=True))}'

    def default_metadata_store(self) -> str:
        if self.embedded:
            if self.path is None:
                return 'sqlite:///:memory:'
            return f'sqlite:///{Path(self.path) / INTERNAL / "metadata.sqlite"}'
        url = self.engine.url
        name = re.sub(r'[^A-Za-z0-9_.-]', '_', f'{url.host}-{url.port or 8123}-{url.database or "default"}')
        return f'sqlite:///{Path.home() / ".superduperdb" / "clickhouse" / f"{name}.sqlite"}'

    def one_thread_at_a_time(self) -> bool:
        return self.embedded

    def list_tables(self) -> list[str]:
        rows = self._read(
            lambda conn: conn.execute(
                sa.text(
                    'SELECT name FROM system.tables WHERE database = currentDatabase() AND NOT is_temporary'
                )
            ).scalars()
        )
        return sorted(r.decode() if isinstance(r, bytes) else r for r in rows)

    def insert(self, table: str, documents: Sequence[dict[str, Any]], *, new_columns: bool) -> list[Any]:
        self._refuse_taken_keys(table, documents)
        return super().insert(table, documents, new_columns=new_columns)

    def _refuse_taken_keys(self, table: str, documents: Sequence[dict[str, Any]]) -> None:
        """ClickHouse keeps every row it is given (a MergeTree key is an order, not a unique
        constraint): refuse keys already there, or given twice, with one query per 100k keys
        (bound by the server as one array, not as 100k SQL parameters). superduperdb's own
        tables are left out (their writers replace rows by key themselves); another process
        inserting the same key at the same moment is not seen (docs/warehouses.md)."""
        t = self.table(table)
        if t is None or table.startswith('_superduper') or len(t.primary_key.columns) != 1:
            return
        pk = next(iter(t.primary_key.columns))
        given = [doc[pk.name] for doc in documents if doc.get(pk.name) is not None]
        if not given:
            return
        taken = {k for k, n in collections.Counter(given).items() if n > 1}
        kind = 'Int64' if all(isinstance(k, int) for k in given) else 'String'
        quote = self.engine.dialect.identifier_preparer.quote
        key = quote(pk.name)
        sql = f'SELECT {key} FROM {quote(table)} WHERE {key} IN {{keys:Array({kind})}} LIMIT 10'
        for start in range(0, len(given), 100_000):
            part = given[start : start + 100_000]

            def found(conn: sa.Connection, part: list[Any] = part) -> list[Any]:
                client = conn.connection.driver_connection.client  # type: ignore[union-attr]
                return [row[0] for row in client.query(sql, parameters={'keys': part}).result_rows]

            taken.update(self._read(found))
        if taken:
            shown = ', '.join(map(repr, sorted(taken, key=str)[:5]))
            raise WriteFailed(
                f'Inserting {len(documents)} documents into {table!r} failed and was rolled back '
                f'(nothing was written): duplicate key {shown}',
                reason=f'duplicate key {shown}',
            )

    def _lookup(self, stmt: sa.Select[Any], keys: list[Any], *, joined: Sequence[sa.Table] = ()) -> None:
        """No lookups on the driver's own cursor: through SQLAlchemy, whose execution options
        read strings as bytes (dialect.QUERY_FORMATS), so a bytes column is never decoded."""
        return None

    #: pages through SQLAlchemy (see _lookup), unless read column-wise as below
    _pages_on_driver = False

    def _fetch_columns(self, stmt: sa.Select[Any], params: dict[str, Any] | None = None) -> list[list[Any]]:
        """Columns as the client decodes them (see :mod:`.columns`), not rows taken apart."""
        query = compiled_for(self._column_queries, stmt, self.engine.dialect)
        if query is None:
            return super()._fetch_columns(stmt, params)

        def run(conn: sa.Connection) -> list[list[Any]]:
            return query.run(conn.connection.driver_connection.client, params)  # type: ignore[union-attr]

        return self._read(run)

    def search_vectors(
        self,
        table: str,
        out: str,
        filter: dict[str, Any],
        query: Any,
        n: int,
        *,
        measure: str,
        version: int,
        dtype: str,
    ) -> list[tuple[Any, float]] | None:
        """Exact search by ClickHouse's own distance functions (see :mod:`.search`)."""
        t, o = self.table(table), self.table(out)
        if t is None or o is None:
            return None if t is None else []
        where = compile_filter(t, filter, self.dialect) if filter else None
        values = [float(x) for x in query]
        stmt = search_statement(t, o, where, values, n, measure=measure, version=version, dtype=dtype)
        if stmt is None:
            return None
        return [(key, float(score)) for key, score in self._fetch(stmt, raw=True)]

    def find_arrow(
        self,
        table: str,
        filter: dict[str, Any],
        *,
        sort: Sequence[tuple[str, int]] = (),
        limit: int | None = None,
        skip: int = 0,
        outputs: Sequence[tuple[str, str]] = (),
    ) -> Any:
        """ClickHouse's own Arrow output (see :func:`.columns.arrow_table`), in the order
        ``find`` reads: by the sort keys then the key, else by the key."""
        t = self.table(table)
        if t is None or len(t.primary_key.columns) != 1:
            return None
        (pk,) = self._key_columns(table, t)
        joined = [
            (o, name) for o, name in ((self.table(out), name) for out, name in outputs) if o is not None
        ]
        order = [*compile_sort(t, sort, self.dialect), pk] if sort else [pk]
        where = compile_filter(t, filter, self.dialect)
        return arrow_table(self, t, pk, where, order, limit, skip, joined)

    def fulltext(self, language: str) -> Any:
        return None  # keyword indexes use the bm25 engine


def open_clickhouse(uri: str) -> ClickHouseBackend:
    """``chdb://path`` (``chdb:///abs/path``, ``chdb://:memory:``) or ``clickhouse://user:pw@host:port/db``."""
    require('clickhouse_connect', extra='clickhouse', what='Connecting to ClickHouse')
    scheme, _, rest = uri.partition('://')
    scheme = scheme.lower()
    if scheme == 'chdb':
        require('chdb', extra='clickhouse', what='The embedded ClickHouse engine (chdb://)')
        return _chdb(rest.split('?')[0], uri)
    from clickhouse_connect import dbapi

    parts = urlsplit(uri)
    secure = scheme in ('clickhouses', 'clickhouse+https')
    options: dict[str, Any] = {
        'host': parts.hostname or 'localhost',
        'port': parts.port or (8443 if secure else 8123),
        'username': parts.username or 'default',
        'password': parts.password or '',
        'database': parts.path.lstrip('/') or None,
        'secure': secure,
    }
    url = sa.engine.URL.create(
        'clickhousedb',
        username=options['username'],
        password=options['password'] or None,
        host=options['host'],
        port=options['port'],
        database=options['database'],
    )
    engine = sa.create_engine(
        url,
        creator=lambda: dbapi.connect(**options),
        execution_options={'query_formats': ch.QUERY_FORMATS},
    )
    _probe(engine, f'{options["host"]}:{options["port"]}')
    return ClickHouseBackend(engine)


def _chdb(path: str, uri: str) -> ClickHouseBackend:
    from clickhouse_connect import dbapi

    if path in ('', ':memory:', 'memory'):
        folder, dsn = None, 'chdb://memory'
    else:
        folder = os.path.abspath(os.path.expanduser(path))
        parent = Path(folder).parent
        if not parent.is_dir():
            raise ConfigError(
                f'The folder {parent} does not exist ({uri!r}). Check the path for a typo, or create '
                f'it (mkdir -p {parent}); chdb makes the database folder itself.'
            )
        dsn = f'chdb://{folder}'
    engine = sa.create_engine(
        'clickhousedb://',
        creator=lambda: dbapi.connect(dsn=dsn),
        execution_options={'query_formats': ch.QUERY_FORMATS},
    )
    _probe(engine, folder or ':memory:')
    return ClickHouseBackend(engine, path=folder)


def _probe(engine: sa.Engine, where: str) -> None:
    try:
        with engine.connect() as conn:
            conn.execute(sa.text('SELECT 1'))
    except (sa.exc.SQLAlchemyError, OSError, RuntimeError) as exc:
        reason = str(getattr(exc, 'orig', exc)).strip().splitlines()[0][:300]
        raise ConnectionFailed(
            f'Could not open ClickHouse at {where}: {reason}. For a server: is it running and '
            'reachable, and are the user and password right? For chdb: is another process '
            'holding the folder?'
        ) from exc
