"""The SQL backend's writes: inserts (new tables and columns as needed), updates, deletes.

A write runs in one transaction: all of it, or nothing. Its database errors become a
:class:`~superduperdb.base.exceptions.WriteFailed` (:meth:`Writes._writing`); one that says a
table changed under its cached definition is run once more
(:func:`~superduperdb.backends.sql.errors.again_if_changed`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa

from superduperdb.backends.sql import keys as row_keys
from superduperdb.backends.sql import schema
from superduperdb.backends.sql.compiler import compile_filter
from superduperdb.backends.sql.ddl import Tables
from superduperdb.backends.sql.errors import (
    TableChangedOnWrite,
    again_if_changed,
    map_driver_errors,
    reason,
    schema_change,
    write_failed,
)
from superduperdb.backends.sql.inserts import Column, InsertPlan, insert_documents, with_keys, write_planned
from superduperdb.base.exceptions import QueryError, WriteFailed


class Writes(Tables):
    """Inserting, updating and deleting rows: a part of the SQL backend (see backend.py)."""

    @again_if_changed
    def insert(self, table: str, documents: Sequence[dict[str, Any]], *, new_columns: bool) -> list[Any]:
        if not documents:
            return []
        existing = self.table(table)
        if existing is not None and row_keys.is_composite(existing):
            # the whole key read as one field: derived from the key's columns, never stored
            documents = [{k: v for k, v in doc.items() if k != row_keys.ROW_KEY} for doc in documents]
        names = list(dict.fromkeys(k for doc in documents for k in doc))
        self._check_values(table, documents, names)
        if existing is None:
            self._prepare_creation()
            created = self._create(self._table_from_documents(table, documents, names), documents, name=table)
            if created is not None:
                return created
            # created meanwhile by another process: write into it as into any table
        t = self._table_for_write(table, documents, names, new_columns=new_columns)
        pk = next(iter(t.primary_key.columns)).name if t.primary_key.columns else None
        documents, columns, generated = with_keys(t, pk, documents, names)
        if not generated and pk is not None:  # the keys are known: the bulk lane (COPY, executemany)
            plan = self._insert_plan(table, tuple(columns))
            if plan is not None:
                values = [tuple(map(doc.get, columns)) for doc in documents]
                self._write_rows(plan, values, what=f'{len(values)} documents', table=table)
                if row_keys.is_composite(t):
                    key = row_keys.key_columns(t)
                    return [row_keys.compose([doc[c.name] for c in key]) for doc in documents]
                return [doc[pk] for doc in documents]
        failed = (
            f'Inserting {len(documents)} documents into {table!r} failed and was rolled back '
            '(nothing was written)'
        )
        with self._writing(failed), self.engine.begin() as conn:
            return insert_documents(conn, t, documents, columns, generated)

    @again_if_changed
    def insert_rows(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> bool:
        """Bulk-insert value tuples (in ``columns`` order) into an existing table, in one transaction.

        The fast lane of :meth:`insert` for writers that already hold plain stored values
        (model outputs): no documents, no type inference, no generated keys, no per-row
        statement processing. PostgreSQL (psycopg) gets ``COPY``, other databases the
        driver's ``executemany``. Returns False, having written nothing, when the table
        or one of the columns does not exist: use :meth:`insert` then.
        """
        plan = self._insert_plan(table, tuple(columns))
        if plan is None:
            return False
        if rows:
            by_column = [Column(rows, at) for at in range(len(plan.columns))]  # size check, COPY's check
            limit = self.size_limit()
            if limit is not None:  # (a database with no limit known: nothing to check)
                schema.check_sizes(table, limit, dict(zip(plan.columns, by_column)))
            self._write_rows(plan, rows, what=f'{len(rows)} rows', table=table, columns=by_column)
        return True

    def _write_rows(
        self,
        plan: InsertPlan,
        rows: Sequence[Sequence[Any]],
        *,
        what: str,
        table: str,
        columns: Sequence[Iterable[Any]] | None = None,
    ) -> None:
        """Write value tuples with ``plan`` in one transaction: all of them, or none
        (``columns``: the rows' values column by column, where the caller has them)."""
        failed = f'Inserting {what} into {table!r} failed and was rolled back (nothing was written)'
        # COPY and executemany run on the driver's cursor: its own errors are mapped too
        with self._writing(failed, driver=True), self.engine.begin() as conn:
            write_planned(conn, plan, rows, columns)

    def _writing(self, failed: str, *, driver: bool = False) -> contextlib.AbstractContextManager[None]:
        """A write's database errors as :meth:`_write_failed`'s, ``'<failed>: <reason>'`` (with
        ``driver``: the driver's own DB-API errors too, not only SQLAlchemy's)."""
        dbapi_error = self.engine.dialect.loaded_dbapi.Error if driver else None
        return map_driver_errors(failed, self._write_failed, driver=dbapi_error)

    def _write_failed(self, message: str, exc: Exception) -> WriteFailed:
        """The error of a rolled-back write; when a table changed under its cached definition
        (another program dropped a column or the table), the definitions are forgotten and the
        write methods run once more (:func:`~superduperdb.backends.sql.errors.again_if_changed`)."""
        if schema_change(exc) == 'definition':
            self._forget_tables()
            return TableChangedOnWrite(message, reason=reason(exc))
        return write_failed(message, exc)

    def _insert_plan(self, table: str, columns: tuple[str, ...]) -> InsertPlan | None:
        t = self.table(table)
        if t is None or any(c not in t.c for c in columns):
            return None
        plan = self._insert_plans.get((table, columns))
        if plan is None or plan.table is not t:  # built once per table version
            plan = self._insert_plans[(table, columns)] = InsertPlan(self.engine.dialect, t, columns)
        return plan

    def _table_for_write(
        self,
        table: str,
        documents: Sequence[dict[str, Any]],
        keys: Sequence[str],
        *,
        new_columns: bool,
    ) -> sa.Table:
        self._prepare_creation()  # in case the table was dropped meanwhile: made again below
        with self._lock:
            t = self.table(table)
            if t is None:  # dropped meanwhile
                self._create(self._table_from_documents(table, documents, keys), name=table)
                t = self.table(table)
                assert t is not None
            missing = [k for k in keys if k not in t.c]
            if missing:
                refreshed = self.table(table, refresh=True)  # another process may have added them
                t = refreshed if refreshed is not None else t
                missing = [k for k in keys if k not in t.c]
            if missing and not new_columns:
                raise QueryError(
                    f'Table {table!r} has no column {", ".join(map(repr, missing))}; its columns '
                    f'are {", ".join(c.name for c in t.c)}. superduperdb does not alter tables '
                    'it did not create: add the column yourself, or write only existing columns.'
                )
            if missing:
                types = schema.infer_columns(documents, missing)
                preparer = self.engine.dialect.identifier_preparer
                with self._ddl() as conn:
                    present = set(self._column_names(conn, table))  # added meanwhile by another process?
                    for name in missing:
                        if name in present:
                            continue
                        if self.facts.add_column is not None:  # ClickHouse
                            spec = self.facts.add_column(name, types[name], preparer.quote)
                        else:
                            spec = f'{preparer.quote(name)} ' + schema.sql_type(types[name]).compile(
                                dialect=self.engine.dialect
                            )
                        if self.facts.instant_comment and types[name] == 'datetime':
                            spec += f" COMMENT '{schema.INSTANT_COMMENT}'"
                        conn.execute(sa.text(f'ALTER TABLE {preparer.format_table(t)} ADD COLUMN {spec}'))
                t = self.table(table, refresh=True)
                assert t is not None
            return t

    def _check_values(self, table: str, documents: Sequence[dict[str, Any]], keys: Sequence[str]) -> None:
        """Refuse values their columns (existing, or about to be created) would not give back."""
        t = self.table(table)
        types = {} if t is None else {c.name: c.type for c in t.c if c.name in keys}
        new = [k for k in keys if k not in types and k != '_id']
        if new:
            types.update(
                {k: schema.sql_type(kind) for k, kind in schema.infer_columns(documents, new).items()}
            )
        schema.check_values(table, types, documents)
        schema.check_sizes(table, self.size_limit(), schema.document_columns(documents, keys))

    def size_limit(self) -> schema.SizeLimit | None:
        """The most one row may take on this database as the driver sends it (read once; see
        :func:`schema.size_limit`); None: no limit known."""
        if not hasattr(self, '_size_limit'):
            self._size_limit = schema.size_limit(self.dialect, self._read)
        return self._size_limit

    def _table_from_documents(
        self, table: str, documents: Sequence[dict[str, Any]], keys: Sequence[str]
    ) -> sa.Table:
        """A new table's definition, its column types inferred from ``documents``."""
        sample_id = next((d['_id'] for d in documents if d.get('_id') is not None), None)
        types = schema.infer_columns(documents, [k for k in keys if k != '_id'])
        cols = [schema.primary_key_column('_id', sample_id)]
        cols += [schema.column(name, kind) for name, kind in types.items()]
        in_schema, bare = self._split(table)
        return sa.Table(bare, sa.MetaData(), *cols, schema=in_schema)

    @again_if_changed
    def update(
        self,
        table: str,
        filter: dict[str, Any],
        update: dict[str, Any],
        *,
        many: bool,
        new_columns: bool = False,
    ) -> list[Any]:
        t = self.table(table)
        if t is None:
            return []
        values: dict[str, Any] = {}
        for op, fields in update.items():
            for key, value in fields.items():
                if '.' in key:
                    raise QueryError(
                        f'Updating inside a JSON column ({key!r}) is not supported on SQL '
                        f'databases; $set the whole {key.split(".")[0]!r} value instead.'
                    )
                if key == row_keys.ROW_KEY and row_keys.is_composite(t):
                    raise QueryError(
                        f'{key!r} of {table!r} is its whole primary key, read from the key columns '
                        f'({", ".join(c.name for c in row_keys.key_columns(t))}): update those instead.'
                    )
                if op == '$set':
                    values[key] = value
                elif op == '$unset':
                    values[key] = None
        # new columns take their type from the values $set or $inc give them
        set_docs = [{**update.get('$inc', {}), **update.get('$set', {})}]
        self._check_values(table, set_docs, list(set_docs[0]))
        t = self._table_for_write(
            table, set_docs, list(values) + list(update.get('$inc', {})), new_columns=new_columns
        )
        for key, amount in update.get('$inc', {}).items():
            values[key] = sa.func.coalesce(t.c[key], 0) + amount
        pk = self._key_columns(table, t)
        where = compile_filter(t, filter, self.dialect)
        with self._writing(f'Updating {table!r} failed and was rolled back'), self.engine.begin() as conn:
            key = _own_key(table, pk, filter)
            if key is not None and not many:  # the row by its key: no statement to find it first
                return [key] if conn.execute(t.update().values(values).where(where)).rowcount else []
            ids = self._matching_ids(conn, pk, where, many)
            if ids:
                stmt = t.update().values(values)
                if many:
                    conn.execute(stmt.where(where))
                elif not conn.execute(stmt.where(sa.and_(where, self._key_is(t, pk, ids[0])))).rowcount:
                    # the row stopped matching since it was read (another process changed it): a
                    # compare-and-swap (MetadataStore.swap_position) that lost, not an update
                    ids = []
        return ids

    @again_if_changed
    def delete(self, table: str, filter: dict[str, Any], *, many: bool) -> list[Any]:
        t = self.table(table)
        if t is None:
            return []
        pk = self._key_columns(table, t)
        where = compile_filter(t, filter, self.dialect)
        failed = f'Deleting from {table!r} failed and was rolled back'
        with self._writing(failed), self.engine.begin() as conn:
            ids = self._matching_ids(conn, pk, where, many)
            if ids:
                conn.execute(t.delete().where(where if many else self._key_is(t, pk, ids[0])))
        return ids

    @staticmethod
    def _matching_ids(conn: sa.Connection, pk: Sequence[sa.Column[Any]], where: Any, many: bool) -> list[Any]:
        stmt = sa.select(*pk).where(where)
        if not many:
            stmt = stmt.order_by(*pk).limit(1)
        if len(pk) > 1:
            return [row_keys.compose(row) for row in conn.execute(stmt)]
        return list(conn.execute(stmt).scalars())

    def set_fields(self, table: str, updates: Sequence[tuple[Any, dict[str, Any]]]) -> None:
        """Set different values on different rows: one executemany per set of columns."""
        t = self.table(table)
        if t is None or not updates:
            return
        pk = self._key_columns(table, t)
        names = list(dict.fromkeys(name for _, values in updates for name in values))
        schema.check_sizes(table, self.size_limit(), schema.document_columns([u for _, u in updates], names))
        groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for row_id, fields in updates:
            columns = tuple(sorted(fields))
            key = row_keys.parse(t, row_id) if len(pk) > 1 else (row_id,)
            params = {
                **{f'_pk{i}': v for i, v in enumerate(key)},
                **{f'_v{i}': fields[c] for i, c in enumerate(columns)},
            }
            groups.setdefault(columns, []).append(params)
        where = sa.and_(*(c == sa.bindparam(f'_pk{i}') for i, c in enumerate(pk)))
        # a WriteFailed without its reason, and no second run after a table changed: as set_fields
        # has always failed (not _writing's mapping)
        failed = f'Update of {table!r} failed and was rolled back'
        with map_driver_errors(failed, _without_reason), self.engine.begin() as conn:
            for columns, params_list in groups.items():
                values: dict[str, Any] = {c: sa.bindparam(f'_v{i}') for i, c in enumerate(columns)}
                conn.execute(t.update().where(where).values(values), params_list)


def _without_reason(message: str, exc: Exception) -> WriteFailed:
    return WriteFailed(message)


def _own_key(table: str, pk: Sequence[sa.Column[Any]], filter: dict[str, Any]) -> str | None:
    """The key of the one row of one of superduperdb's own tables that ``filter`` names by its
    text key alone (``{'_id': 'x'}``: a job's record), else None. (Not a user's table: a
    case-insensitive collation may match a key written otherwise, which only a read returns.)"""
    own = table.rpartition('.')[2].startswith('_superduper')
    if not own or len(pk) != 1 or len(filter) != 1 or not isinstance(pk[0].type, sa.String):
        return None
    value = filter.get(pk[0].name)
    return value if type(value) is str else None
