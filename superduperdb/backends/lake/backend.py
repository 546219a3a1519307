"""The lake backend: tables as folders of Parquet files (or Delta/Iceberg tables), read with DuckDB.

Reads: each query runs on an in-process DuckDB connection over the files listed now, with the
filter compiled by the SQL compiler (the same answers as on SQL databases); DuckDB pushes the
projection and the filter into the Parquet scan (row groups skipped by their statistics,
partition folders ``key=value/`` pruned). Rows come back a record batch at a time: a table
is never loaded whole.

Writes: ``insert`` appends one new file (one Delta commit for a Delta table) with the rows.
Lakes are append-mostly: ``update`` and ``delete`` on your tables are refused (rewrite the
table with your own tools, or use a Delta table's own API); superduperdb's own tables (model
outputs) are rewritten file by file when outputs are replaced.

Values: numbers, strings, booleans and bytes are Parquet columns of those types; documents
and lists are stored as Parquet JSON columns (readable by any engine as text). Struct, map
and list columns written by other programs read back as dicts and lists, and filter with
dotted paths; a list of numbers (an embedding) reads back as a ``numpy`` array.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import sqlalchemy as sa

from superduperdb.backends.base import Capabilities, DataBackend
from superduperdb.backends.lake import formats
from superduperdb.backends.lake.storage import INTERNAL, DataFile, LakeStorage
from superduperdb.backends.lake.values import (
    _arrow_type,
    _is_vector,
    _kind_name,
    _python_column,
    _sa_type,
    _to_arrow,
    check_values,
)
from superduperdb.base._deps import require
from superduperdb.base.document import new_id
from superduperdb.base.exceptions import BackendError, NotSupported, QueryError, WriteFailed

logger = logging.getLogger(__name__)

#: The name the compiled queries use for the table; replaced by the SELECT over its files.
_PLACEHOLDER = '__sddb_lake_table'
#: The name a key lookup's keys are registered under (see LakeBackend._where).
_KEYS = '__sddb_lake_keys'
#: Rows per file below which a write is small; the lake reads and writes in chunks at least this big.
MIN_CHUNK = 10_000


@dataclass
class _Table:
    """What one listing of a table's files gives: its columns and how to read it."""

    listing: tuple[DataFile, ...] | str  # the files, or a Delta/Iceberg version
    kind: str  # 'parquet', 'delta' or 'iceberg'
    source: str  # DuckDB FROM text (one parameter-free expression)
    columns: dict[str, str]  # name -> DuckDB type as DESCRIBE shows it
    table: sa.Table  # the table's columns, the primary key marked
    select: sa.Table  # the columns as the compiler reads them (structs as JSON), under _PLACEHOLDER
    text: str  # the SELECT that reads them
    registered: Any = None  # an Arrow dataset the source names (Delta), or None


class LakeBackend(DataBackend):
    """A folder (or bucket prefix) of tables; see the module docstring."""

    name: ClassVar[str] = 'lake'  # type: ignore[misc]
    self_describing: ClassVar[bool] = False
    has_schema: ClassVar[bool] = True
    append_only: ClassVar[bool] = True
    #: the least rows per chunk the Datalayer reads and writes here: every write is a file
    min_chunk_size: ClassVar[int] = MIN_CHUNK
    capabilities: ClassVar[Capabilities] = Capabilities(column_reads=True, bulk_rows=True)

    def __init__(self, url: str, *, table_format: str = 'parquet') -> None:
        duckdb = require('duckdb', extra='lake', what='Reading a lake')
        require('pyarrow', extra='lake', what='Reading a lake')
        if table_format not in ('parquet', 'delta'):
            raise QueryError(f'New lake tables are parquet or delta, got {table_format!r}.')
        self.storage = LakeStorage(url)
        self.storage.ensure_root()
        self.table_format = table_format
        self._duckdb = duckdb.connect()
        if not self.storage.local:
            self._duckdb.register_filesystem(self.storage.fs)
        self._lock = threading.RLock()
        self._tables: dict[str, _Table] = {}
        self._registered = itertools.count()
        self._dialect = _duckdb_dialect()
        self._kinds: dict[str, str] = {}
        #: (table, file) this process wrote with columns the cached table already had
        self._same: set[tuple[str, str]] = set()
        #: output table -> (source table, key, model): written as columns of each output file
        self._labels: dict[str, tuple[str, str, str]] = {}
        #: files this process wrote through the datalayer (whose writes start their jobs directly):
        #: change capture records them without handing their rows over again
        self.own_files: set[tuple[str, str]] = set()

    @property
    def url(self) -> str:
        return self.storage.url

    def describe(self) -> str:
        from superduperdb.base.masking import mask_secrets  # s3://key:secret@bucket

        return f'lake: {mask_secrets(self.storage.url)}'

    def default_metadata_store(self) -> str:
        """The metadata database for this lake when ``metadata_store`` is not set."""
        return f'sqlite:///{self.storage.metadata_path()}'

    def default_artifact_store(self) -> str:
        """Artifacts inside the lake's own ``_superduper`` folder (for every root, a bucket too)."""
        return (
            self.storage.uri(INTERNAL, 'artifacts')
            if not self.storage.local
            else ('filesystem://' + self.storage.path(INTERNAL, 'artifacts'))
        )

    def label_output(self, out: str, table: str, key: str, model: str) -> None:
        """Write the input's key and the model's name into every file of the output table ``out``
        (columns ``_key`` and ``_model``), so another engine reading it needs no metadata store."""
        self._labels[out] = (table, key, model)

    def _labelled(self, table: str, data: Any) -> Any:
        label = self._labels.get(table)
        if label is None:
            return data
        pa = require('pyarrow', extra='lake')
        n = data.num_rows
        for name, value in (('_key', label[1]), ('_model', label[2])):
            if name not in data.column_names:
                data = data.append_column(name, pa.array([value] * n, pa.string()).dictionary_encode())
        return data

    # ----- tables -----------------------------------------------------------------
    def list_tables(self) -> list[str]:
        return [t for t in self.storage.table_folders() if self._listed_kind(t) is not None]

    def has_table(self, table: str) -> bool:
        # a table seen once is taken to exist (lake tables are not dropped under a reader):
        # no listing, an S3 LIST request, for each chunk of outputs a predict writes
        return self._known(table) is not None

    def _known(self, table: str, column: str | None = None) -> _Table | None:
        """The cached state when it has ``column`` (if named), else the state listed afresh.

        For what only needs a table's columns: its files change with every append, its columns
        seldom, and a column missing from the cache is looked for again."""
        with self._lock:
            cached = self._tables.get(table)
        if cached is not None and (column is None or column in cached.columns):
            return cached
        return self._state(table)

    def _listed_kind(self, table: str) -> str | None:
        kind = formats.kind_of(self.storage, table)
        if kind == 'parquet' and not self.storage.files(table):
            return None
        return kind

    def _state(self, table: str, *, refresh: bool = True) -> _Table | None:
        """The table's state for the files there now (cached while they stay the same)."""
        _check_name(table)
        with self._lock:
            cached = self._tables.get(table)
            if cached is not None and not refresh:
                return cached
            kind = self._kind(table)
            listing: tuple[DataFile, ...] | str
            if kind == 'parquet':
                listing = tuple(self.storage.files(table))
                if not listing:
                    self._tables.pop(table, None)
                    self._kinds.pop(table, None)
                    return None
            elif kind is None:
                self._tables.pop(table, None)
                return None
            else:
                try:
                    listing = formats.version_of(self.storage, table, kind)
                except (FileNotFoundError, OSError):  # the table went away
                    self._kinds.pop(table, None)
                    self._tables.pop(table, None)
                    return None
            if cached is not None and cached.listing == listing:
                return cached
            state = self._appended(table, cached, listing) or self._describe(table, kind, listing)
            self._tables[table] = state
            return state

    def _kind(self, table: str) -> str | None:
        """The table's format, looked up once (a listing that finds no files forgets it)."""
        kind = self._kinds.get(table)
        if kind is None:
            kind = formats.kind_of(self.storage, table)
            if kind is not None:
                self._kinds[table] = kind
        return kind

    def _appended(self, table: str, cached: _Table | None, listing: Any) -> _Table | None:
        """``cached`` with the files this process appended since (same columns): no DESCRIBE,
        which reads every file's footer, after each chunk of outputs written."""
        if cached is None or cached.kind != 'parquet' or not isinstance(listing, tuple):
            return None
        assert isinstance(cached.listing, tuple)
        before = set(cached.listing)
        added = [f for f in listing if f not in before]
        if len(listing) != len(before) + len(added) or not all((table, f.path) in self._same for f in added):
            return None
        source = self._parquet_source(table, listing)
        text = cached.text.replace(cached.source, source, 1)
        return dataclasses.replace(cached, listing=listing, source=source, text=text)

    def _parquet_source(self, table: str, listing: tuple[DataFile, ...]) -> str:
        paths = [self.storage.uri(table, f.path) for f in listing]
        hive = any('=' in f.path.rsplit('/', 1)[0] for f in listing if '/' in f.path)
        return (
            f'read_parquet({_sql_list(paths)}, union_by_name=true, '
            f'hive_partitioning={"true" if hive else "false"})'
        )

    def _wrote(self, table: str, name: str, data: Any) -> None:
        """Remember a file this process wrote whose columns the cached table already has."""
        cached = self._tables.get(table)
        if cached is not None and all(
            c in cached.columns and not _is_vector(cached.columns[c]) for c in data.column_names
        ):
            self._same.add((table, name))

    def _describe(self, table: str, kind: str, listing: tuple[DataFile, ...] | str) -> _Table:
        registered = None
        if kind == 'parquet':
            assert isinstance(listing, tuple)
            source = self._parquet_source(table, listing)
        elif kind == 'delta':
            registered = formats.delta_dataset(self.storage, table)
            source = f'"__sddb_delta_{next(self._registered)}"'
        else:
            paths = formats.iceberg_files(self.storage, table)
            source = f'read_parquet({_sql_list(paths)}, union_by_name=true)'
        con = self._cursor(registered, source)
        try:
            described = con.sql(f'DESCRIBE SELECT * FROM {source}').fetchall()
        except Exception as exc:
            raise BackendError(f'Cannot read the lake table {table!r}: {_reason(exc)}') from exc
        finally:
            con.close()
        columns = {row[0]: str(row[1]) for row in described}
        pk = _primary_key(columns)
        sa_columns = []
        exprs = []
        for name, kind_ in columns.items():
            sa_type, expr = _sa_type(name, kind_)
            sa_columns.append(sa.Column(name, sa_type, primary_key=name == pk))
            exprs.append(expr)
        sa_table = sa.Table(table, sa.MetaData(), *sa_columns)
        # the compiler's view of the table: its columns as the SELECT below reads them, under a
        # placeholder name that _run replaces with that SELECT
        select = sa.Table(  # the key marked too: a filter on _fold hashes it
            _PLACEHOLDER,
            sa.MetaData(),
            *[sa.Column(c.name, c.type, primary_key=c.primary_key) for c in sa_table.c],
        )
        text = f'SELECT {", ".join(exprs)} FROM {source}' if exprs else f'SELECT * FROM {source}'
        return _Table(listing, kind, source, columns, sa_table, select, text, registered)

    def _cursor(self, registered: Any = None, source: str = '') -> Any:
        con = self._duckdb.cursor()
        if registered is not None:
            con.register(source.strip('"'), registered)
        return con

    def table(self, name: str, *, refresh: bool = False) -> sa.Table | None:
        """The table's columns as an SQLAlchemy ``Table`` (for the filter compiler), or None."""
        state = self._state(name, refresh=True)
        return None if state is None else state.table

    def columns(self, table: str, *, refresh: bool = False) -> list[str] | None:
        state = self._state(table)
        return None if state is None else list(state.columns)

    def column_kind(self, table: str, column: str) -> str | None:
        state = self._known(table, column)
        if state is None or column not in state.columns:
            return None
        if _is_vector(state.columns[column]):
            return 'vector'  # a list of numbers, read as numpy arrays
        return _kind_name(state.columns[column])

    def vector_width(self, table: str, column: str) -> int | None:
        """The size of every vector in ``column`` when all have one size, else None.

        From the column's type where it fixes the size (``FLOAT[384]``); else from the Arrow
        schema in each file's footer (pyarrow writes fixed-size lists as Parquet lists and keeps
        the size there); else one DuckDB pass over the column's lengths (no Python per row).
        """
        state = self._state(table)
        duck = None if state is None else state.columns.get(column)
        if state is None or duck is None or not _is_vector(duck):
            return None
        size = duck.rsplit('[', 1)[1].rstrip(']')
        if size.isdigit():
            return int(size)
        if state.kind == 'parquet' and isinstance(state.listing, tuple):
            pq = require('pyarrow.parquet', extra='lake')
            widths = set()
            for f in state.listing:
                schema = pq.read_schema(self.storage.path(table, f.path), filesystem=self.storage.fs)
                field = schema.field(column) if column in schema.names else None
                widths.add(getattr(field.type, 'list_size', None) if field is not None else None)
            width = widths.pop() if len(widths) == 1 else None
            if width is not None:
                return int(width)
        t = state.select
        length = sa.func.len(t.c[column])
        stmt = sa.select(sa.func.min(length), sa.func.max(length)).select_from(t)
        with self._run(state, stmt) as rel:
            low, high = rel.fetchall()[0]
        return int(low) if low is not None and low == high else None

    def primary_key(self, table: str) -> str:
        state = self._state(table, refresh=False)
        return '_id' if state is None else _primary_key(state.columns)

    def key_type(self, table: str) -> type:
        """How to turn a vector engine's string ids back into keys of ``table``."""
        state = self._state(table, refresh=False)
        if state is None:
            return str
        kind = state.columns.get(_primary_key(state.columns), '')
        return int if _kind_name(kind) == 'int' else str

    def create_table(self, table: str, schema: dict[str, str], *, primary_key: str = '_id') -> None:
        if self.has_table(table):
            return
        pa = require('pyarrow', extra='lake')
        fields = [pa.field(name, _arrow_type(pa, kind)) for name, kind in schema.items()]
        empty = pa.table({f.name: pa.array([], f.type) for f in fields})
        self.storage.write_parquet(table, self._labelled(table, empty))

    def change_source(self, db: Any, handle: Any, stop: threading.Event) -> Any:
        """The listing of each table's files: new files' rows are inserted rows (:mod:`.cdc`)."""
        from superduperdb.backends.lake.cdc import LakeFiles

        return LakeFiles(db, handle, stop)

    def drop_table(self, table: str) -> None:
        _check_name(table)
        with self._lock:
            self.storage.remove_table(table)
            self._tables.pop(table, None)
            self._kinds.pop(table, None)

    # ----- writes -----------------------------------------------------------------
    def insert(self, table: str, documents: Sequence[dict[str, Any]], *, new_columns: bool) -> list[Any]:
        if not documents:
            return []
        _check_name(table)
        state = self._state(table)
        if state is not None and state.kind == 'iceberg':
            raise NotSupported(
                f'The lake table {table!r} is an Iceberg table, which superduperdb reads but does not '
                'write: append to it with your Iceberg catalog (pyiceberg, Spark), and change capture '
                'picks the new rows up.'
            )
        pk = '_id' if state is None else _primary_key(state.columns)
        if any(pk not in doc for doc in documents):
            if pk != '_id':
                raise QueryError(
                    f'Rows of the lake table {table!r} are keyed by {pk!r}: give every document one.'
                )
            documents = [doc if '_id' in doc else {'_id': new_id(), **doc} for doc in documents]
        existing = {} if state is None else state.columns
        keys = list(dict.fromkeys(k for doc in documents for k in doc))
        missing = [k for k in keys if k not in existing]
        if state is not None and missing and not new_columns:
            raise QueryError(
                f'The lake table {table!r} has no column {", ".join(map(repr, missing))}; its columns '
                f'are {", ".join(existing)}. superduperdb adds columns only to tables it created: '
                'write only existing columns.'
            )
        check_values(table, documents, keys, existing)
        partitions = _partition_keys(state)
        data = _to_arrow(table, documents, [k for k in keys if k not in partitions], existing)
        ids = [doc[pk] for doc in documents]
        if state is not None:
            self._refuse_duplicate_keys(table, state, pk, ids)
        try:
            if (state is not None and state.kind == 'delta') or (state is None and self._new_is_delta(table)):
                formats.delta_append(self.storage, table, data, new_columns=bool(missing))
            elif partitions:
                self._write_partitioned(table, documents, data, partitions)
            else:
                labelled = self._labelled(table, data)
                name = self.storage.write_parquet(table, labelled)
                self.own_files.add((table, name))
                self._wrote(table, name, labelled)
        except (OSError, ValueError) as exc:
            raise WriteFailed(
                f'Writing {len(documents)} rows to the lake table {table!r} failed (nothing was '
                f'written): {_reason(exc)}',
                reason=_reason(exc),
            ) from exc
        return ids

    def _write_partitioned(
        self, table: str, documents: Sequence[dict[str, Any]], data: Any, partitions: list[str]
    ) -> None:
        """One new file per partition the documents fall in (``country=fr/part-....parquet``)."""
        groups: dict[str, list[int]] = {}
        for i, doc in enumerate(documents):
            folder = '/'.join(f'{p}={_partition_value(doc.get(p))}' for p in partitions)
            groups.setdefault(folder, []).append(i)
        for folder, rows in groups.items():
            part = data if len(rows) == len(documents) else data.take(rows)
            name = self.storage.write_parquet(table, part, name=f'{folder}/{self.storage.new_file_name()}')
            self._wrote(table, name, part)
            self.own_files.add((table, name))

    def _new_is_delta(self, table: str) -> bool:
        return self.table_format == 'delta' and not table.startswith('_superduper')

    def _refuse_duplicate_keys(self, table: str, state: _Table, pk: str, ids: Sequence[Any]) -> None:
        if len(set(ids)) != len(ids):
            raise WriteFailed(
                f'Writing {len(ids)} rows to the lake table {table!r} failed (nothing was written, '
                f'as if rolled back): they repeat a {pk!r}, and keys are unique.',
                reason='duplicate key',
            )
        if table.startswith('_superduper'):
            return  # output rows are replaced by deleting first (Outputs.write)
        found = self.keys(table, {pk: {'$in': list(ids)}})
        if found:
            raise WriteFailed(
                f'Writing {len(ids)} rows to the lake table {table!r} failed (nothing was written, '
                f'as if rolled back): it already has rows with {pk} {found[:3]!r}. Lakes are '
                'append-only: write new keys (leave out _id and one is made).',
                reason='duplicate key',
            )

    def insert_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> bool:
        """Append value tuples (model outputs) as one file; False if ``table`` lacks a column."""
        state = self._known(table)
        if state is not None and any(c not in state.columns for c in columns):
            state = self._state(table)  # columns another writer added since?
        if state is None or any(c not in state.columns for c in columns):
            return False
        if rows:
            data = _to_arrow(table, None, list(columns), state.columns, values=list(zip(*rows)))
            labelled = self._labelled(table, data)
            self._wrote(table, self.storage.write_parquet(table, labelled), labelled)
        return True

    def update(
        self,
        table: str,
        filter: dict[str, Any],
        update: dict[str, Any],
        *,
        many: bool,
        new_columns: bool = False,
    ) -> list[Any]:
        raise NotSupported(
            f'update_one/update_many are not supported on the lake table {table!r}: lake tables are '
            'append-only here. Append corrected rows under new keys, or rewrite the table with your '
            'own tools (Delta tables: deltalake.DeltaTable.update); change capture then sees the new files.'
        )

    def set_fields(self, table: str, updates: Sequence[tuple[Any, dict[str, Any]]]) -> None:
        self.update(table, {}, {}, many=True)

    def delete(self, table: str, filter: dict[str, Any], *, many: bool) -> list[Any]:
        if not table.startswith('_superduper'):
            raise NotSupported(
                f'delete_one/delete_many are not supported on the lake table {table!r}: lake tables are '
                'append-only here. Remove or rewrite its files with your own tools (Delta tables: '
                'deltalake.DeltaTable.delete); change capture then drops the outputs of rows gone.'
            )
        return self._rewrite_without(table, filter, many=many)

    def _rewrite_without(self, table: str, filter: dict[str, Any], *, many: bool) -> list[Any]:
        """Copy-on-write: every file holding a matching row is written again without it."""
        pa = require('pyarrow', extra='lake')
        pc = require('pyarrow.compute', extra='lake')
        pq = require('pyarrow.parquet', extra='lake')
        with self._lock:
            state = self._state(table)
            if state is None:
                return []
            pk = _primary_key(state.columns)
            keys = self.keys(table, filter)
            if not many:
                keys = sorted(keys)[:1]
            if not keys:
                return []
            assert isinstance(state.listing, tuple)
            doomed = pa.array(keys)
            for file in state.listing:
                path = self.storage.path(table, file.path)
                with self.storage.fs.open(path, 'rb') as f:
                    data = pq.read_table(f)
                hit = pc.is_in(data[pk], value_set=doomed.cast(data.schema.field(pk).type))
                if not pc.any(hit).as_py():
                    continue
                kept = data.filter(pc.invert(hit))
                if kept.num_rows:
                    self.storage.write_parquet(table, kept)
                self.storage.remove(table, file.path)
            self._tables.pop(table, None)
            return keys

    # ----- reads ------------------------------------------------------------------
    def count(self, table: str, filter: dict[str, Any]) -> int:
        state = self._state(table)
        if state is None:
            return 0
        where, keys = self._where(state, filter)
        stmt = sa.select(sa.func.count()).select_from(state.select).where(where)
        with self._run(state, stmt, keys) as rel:
            return int(rel.fetchall()[0][0])

    def _where(self, state: _Table, filter: dict[str, Any]) -> tuple[Any, Any]:
        """The WHERE clause of ``filter``, and the keys it looks up (an Arrow table) or None.

        A lookup by key (``{pk: {'$in': keys}}``, alone or in a top-level ``$and``: like() results,
        outputs attached to a chunk, fingerprints) becomes a semi-join with the keys registered
        as a table: DuckDB runs it several times faster than the same ``IN (?, ?, ...)`` list.
        """
        from superduperdb.backends.sql.compiler import compile_filter
        from superduperdb.query.filters import validate_filter

        validate_filter(filter)
        pk = _primary_key(state.columns)
        keys, rest = _key_lookup(filter, pk, _kind_name(state.columns.get(pk, '')))
        if keys is None:
            return compile_filter(state.select, filter, 'duckdb'), None  # type: ignore[arg-type]
        pa = require('pyarrow', extra='lake')
        semi = sa.text(f'{_PLACEHOLDER}.{_quote(pk)} IN (SELECT k FROM {_KEYS})')
        clause = sa.and_(compile_filter(state.select, rest, 'duckdb'), semi) if rest else semi  # type: ignore[arg-type]
        return clause, pa.table({'k': keys})

    def _sql(self, state: _Table, stmt: Any) -> tuple[str, list[Any]]:
        """``stmt`` (over ``state.select``) as DuckDB SQL over the files, with its parameters."""
        compiled = stmt.compile(dialect=self._dialect, compile_kwargs={'render_postcompile': True})
        params = compiled.construct_params()
        values = [params[name] for name in compiled.positiontup or []]
        sql = str(compiled)
        # the placeholder table is named once, in FROM; the values are parameters, never text
        sql = sql.replace(f'FROM {_PLACEHOLDER}', f'FROM ({state.text}) AS {_PLACEHOLDER}', 1)
        return sql, values

    @contextlib.contextmanager
    def _run(self, state: _Table, stmt: Any, keys: Any = None) -> Iterator[Any]:
        """The DuckDB relation of ``stmt`` over the table's files, on a cursor of its own."""
        sql, values = self._sql(state, stmt)
        con = self._cursor(state.registered, state.source)
        if keys is not None:
            con.register(_KEYS, keys)
        try:
            yield con.sql(sql, params=values)
        except duckdb_errors() as exc:
            raise BackendError(
                f'Query on the lake table {state.table.name!r} failed: {_reason(exc)}'
            ) from exc
        finally:
            con.close()

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
        for names, columns in self._batches(table, filter, projection, sort, limit, skip, chunk_size):
            yield [dict(zip(names, values)) for values in zip(*columns)]

    def find_columns(
        self,
        table: str,
        filter: dict[str, Any],
        columns: Sequence[str],
        *,
        sort: Sequence[tuple[str, int]] = (),
        limit: int | None = None,
        skip: int = 0,
        chunk_size: int = 1000,
        ordered: bool = True,
    ) -> Iterator[dict[str, list[Any]]]:
        """:meth:`find`, column-wise (see the SQL backend's)."""
        state = self._state(table)
        if state is None:
            return
        pk = _primary_key(state.columns)
        projection = {c: 1 for c in [pk, *columns]}
        for names, values in self._batches(table, filter, projection, sort, limit, skip, chunk_size):
            found = dict(zip(names, values))
            n = len(values[0]) if values else 0
            yield {pk: found[pk], **{c: found.get(c) or [None] * n for c in columns}}

    def _batches(
        self,
        table: str,
        filter: dict[str, Any],
        projection: dict[str, int] | None,
        sort: Sequence[tuple[str, int]],
        limit: int | None,
        skip: int,
        chunk_size: int,
    ) -> Iterator[tuple[list[str], list[list[Any]]]]:
        """``(names, columns)`` a record batch at a time."""
        from superduperdb.backends.sql.compiler import compile_sort

        state = self._state(table)
        if state is None:
            return
        t = state.select
        pk = _primary_key(state.columns)
        selected = _projected(t, pk, projection)
        where, keys = self._where(state, filter)
        stmt = sa.select(*selected).select_from(t).where(where)
        if sort:
            stmt = stmt.order_by(*compile_sort(t, sort, 'duckdb'), t.c[pk]) if pk in t.c else stmt
        if limit is not None:
            stmt = stmt.limit(limit)
        if skip:
            stmt = stmt.offset(skip)
        kinds = [state.columns.get(c.name, '') for c in selected]
        with self._run(state, stmt, keys) as rel:
            reader = rel.to_arrow_reader(max(1, chunk_size))
            pending: list[Any] = []
            size = 0
            for batch in reader:
                pending.append(batch)
                size += batch.num_rows
                if size >= chunk_size:
                    yield self._columns(pending, kinds)
                    pending, size = [], 0
            if size:
                yield self._columns(pending, kinds)

    @staticmethod
    def _columns(batches: list[Any], kinds: list[str]) -> tuple[list[str], list[list[Any]]]:
        pa = require('pyarrow', extra='lake')
        data = pa.Table.from_batches(batches) if len(batches) > 1 else pa.Table.from_batches(batches)
        names = data.column_names
        return names, [_python_column(data.column(i), kinds[i]) for i in range(len(names))]

    def explain(self, table: str, filter: dict[str, Any], projection: dict[str, int] | None = None) -> str:
        """DuckDB's plan for a ``find``: shows the filters and columns pushed into the file scan."""
        state = self._state(table)
        if state is None:
            raise QueryError(f'No lake table {table!r}.')
        t = state.select
        stmt = sa.select(*_projected(t, _primary_key(state.columns), projection))
        where, keys = self._where(state, filter)
        stmt = stmt.select_from(t).where(where)
        sql, values = self._sql(state, stmt)
        con = self._cursor(state.registered, state.source)
        if keys is not None:
            con.register(_KEYS, keys)
        try:
            rows = con.sql('EXPLAIN ' + sql, params=values).fetchall()
        finally:
            con.close()
        return '\n'.join(str(r[-1]) for r in rows)

    def keys(self, table: str, filter: dict[str, Any]) -> list[Any]:
        state = self._state(table)
        if state is None:
            return []
        pk = _primary_key(state.columns)
        t = state.select
        where, keys = self._where(state, filter)
        stmt = sa.select(t.c[pk]).select_from(t).where(where)
        with self._run(state, stmt, keys) as rel:
            return rel.to_arrow_table().column(0).to_pylist()

    def keys_in_files(self, table: str, files: Sequence[str]) -> list[Any]:
        """The keys of the rows in ``files`` (paths relative to the table) of a Parquet table."""
        state = self._state(table)
        if state is None or not files:
            return []
        pk = _primary_key(state.columns)
        paths = [self.storage.uri(table, f) for f in files]
        con = self._cursor()
        try:
            return (
                con.sql(f'SELECT {_quote(pk)} FROM read_parquet({_sql_list(paths)}, union_by_name=true)')
                .to_arrow_table()
                .column(0)
                .to_pylist()
            )
        finally:
            con.close()

    def close(self) -> None:
        self._duckdb.close()


# ----- helpers -----------------------------------------------------------------------
def _duckdb_dialect() -> Any:
    from duckdb_engine import Dialect

    return Dialect(paramstyle='qmark')  # positional '?' placeholders, as duckdb's execute takes them


def duckdb_errors() -> tuple[type[BaseException], ...]:
    import duckdb

    return (duckdb.Error,)


def _check_name(table: str) -> None:
    if not isinstance(table, str) or not table or '/' in table or table.startswith('.') or table == INTERNAL:
        raise QueryError(
            f'{table!r} is not a lake table name: use a folder name under the lake root (no "/").'
        )


def _key_lookup(filter: dict[str, Any], pk: str, kind: str | None) -> tuple[list[Any] | None, dict[str, Any]]:
    """``(keys, the rest of the filter)`` when ``filter`` looks rows up by a list of keys of the
    key column's own type (else ``(None, filter)``: the compiler's type-bracketed answer)."""
    parts = filter['$and'] if set(filter) == {'$and'} and isinstance(filter['$and'], list) else [filter]
    wanted = {'int': int, 'str': str}.get(kind or '')
    for i, part in enumerate(parts):
        cond = part.get(pk) if isinstance(part, dict) and len(part) == 1 else None
        if not (isinstance(cond, dict) and set(cond) == {'$in'} and isinstance(cond['$in'], list)):
            continue
        keys = cond['$in']
        if wanted is None or not keys or {type(k) for k in keys} != {wanted}:
            continue
        rest = [p for j, p in enumerate(parts) if j != i]
        return keys, ({'$and': rest} if len(rest) > 1 else rest[0] if rest else {})
    return None, filter


def _partition_keys(state: _Table | None) -> list[str]:
    """The hive partition keys of a Parquet table (``country`` of ``country=fr/part-0.parquet``)."""
    if state is None or state.kind != 'parquet' or not isinstance(state.listing, tuple) or not state.listing:
        return []
    folders = state.listing[-1].path.split('/')[:-1]
    return [f.split('=', 1)[0] for f in folders if '=' in f]


def _partition_value(value: Any) -> str:
    from urllib.parse import quote

    if value is None:
        return '__HIVE_DEFAULT_PARTITION__'
    if isinstance(value, bool):
        return str(value).lower()
    return quote(str(value), safe='')


def _sql_list(paths: Sequence[str]) -> str:
    return '[' + ', '.join("'" + p.replace("'", "''") + "'" for p in paths) + ']'


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _primary_key(columns: dict[str, str]) -> str:
    """``_id`` where the table has one; else ``id``; else ``_id`` (missing: predict refuses)."""
    if '_id' in columns or 'id' not in columns:
        return '_id'
    return 'id'


def _projected(t: Any, pk: str, projection: dict[str, int] | None) -> list[Any]:
    if not projection:
        return list(t.c)
    tops = {key.split('.')[0]: value for key, value in projection.items()}
    inclusion, keep_pk = any(tops.values()), tops.pop(pk, 1)  # {'_id': 1}: the key alone
    if inclusion:
        cols = [t.c[name] for name in tops if name in t.c]
    else:
        cols = [c for c in t.c if c.name not in tops and c.name != pk]
    head = [t.c[pk]] if keep_pk and pk in t.c else []
    return head + [c for c in cols if c.name != pk]


def _reason(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
