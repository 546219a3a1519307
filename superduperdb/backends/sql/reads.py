"""The SQL backend's reads: queries, counts, pages, and lookups by primary key.

Every read goes through :meth:`SQLCore._read <superduperdb.backends.sql.core.SQLCore._read>`
(retried after a dropped connection; a table changed meanwhile is read again, see
:func:`~superduperdb.backends.sql.errors.again_if_changed`). Pages are keyset pages in
primary-key order unless sorted; a vector search's few small lookups by key run as SQL text
on the driver's cursor (:meth:`Reads._lookup`).
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import sqlalchemy as sa

from superduperdb.backends.sql import keys as row_keys
from superduperdb.backends.sql.compiler import compile_filter, compile_sort
from superduperdb.backends.sql.core import SQLCore
from superduperdb.backends.sql.errors import again_if_changed
from superduperdb.base.exceptions import BackendError


class Reads(SQLCore):
    """Reading documents, columns and keys: a part of the SQL backend (see backend.py)."""

    @property
    def _streams(self) -> bool:
        """Whether whole-table reads run as one statement (:meth:`_stream`): drivers whose cursor
        reads a page at a time (SQLite's; psycopg's server-side cursors)."""
        dialect = self.engine.dialect
        return dialect.name == 'sqlite' or (dialect.name == 'postgresql' and dialect.driver == 'psycopg')

    @again_if_changed
    def count(self, table: str, filter: dict[str, Any]) -> int:
        t = self.table(table)
        if t is None:
            return 0
        stmt = sa.select(sa.func.count()).select_from(t).where(compile_filter(t, filter, self.dialect))
        return int(self._read(lambda conn: conn.execute(stmt).scalar_one()))

    @again_if_changed
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
        t = self.table(table)
        if t is None:
            return
        pk = self._key_columns(table, t)
        columns, drop = _projected(t, pk, projection)
        stmt = sa.select(*columns).where(compile_filter(t, filter, self.dialect))
        names = [c.name for c in columns]
        whole_key = len(pk) > 1 and (projection or {}).get(row_keys.ROW_KEY, 1)
        at = [names.index(c.name) for c in pk]
        for rows in self._pages(stmt, pk, sort, limit, skip, chunk_size, t):
            chunk = [dict(zip(names, row)) for row in rows]
            if whole_key:
                for doc, row in zip(chunk, rows):
                    doc[row_keys.ROW_KEY] = row_keys.compose([row[i] for i in at])
            for name in drop:
                for doc in chunk:
                    del doc[name]
            yield chunk

    @again_if_changed
    def get(self, table: str, key: Any) -> dict[str, Any] | None:
        # one statement per table, built once: SQLAlchemy reuses its compiled form
        stmt = self._lookups.get(table)
        if stmt is None:
            t = self.table(table)
            if t is None:
                return None
            pk = self._key_columns(table, t)
            stmt = self._lookups[table] = sa.select(t).where(
                *(c == sa.bindparam(f'sddb_key_{i}', type_=c.type) for i, c in enumerate(pk))
            )
            self._whole_keys[table] = len(pk) > 1
        whole = self._whole_keys[table]
        values = (key,)
        if whole:
            t = self.table(table)
            assert t is not None
            values = row_keys.parse(t, key)
        found = self._lookup(stmt, [key]) if not whole else None
        if found is not None:
            if not found:
                return None
            names = [c.name for c in stmt.selected_columns]
            return dict(zip(names, found[0]))
        rows = self._fetch(stmt, {f'sddb_key_{i}': v for i, v in enumerate(values)})
        if not rows:
            return None
        doc = dict(rows[0]._mapping)  # type: ignore[attr-defined]
        if whole:
            doc[row_keys.ROW_KEY] = row_keys.compose(values)
        return doc

    @again_if_changed
    def get_many(
        self, table: str, keys: Sequence[Any], columns: Sequence[str] = ()
    ) -> list[dict[str, Any]] | None:
        """The rows whose primary key is in ``keys`` (in no order), with ``columns`` and the key
        (every column when none are named); None for a table with a composite key.

        For small, frequent lookups (the rows a vector search found, their outputs): one
        statement per table and columns, built once (an expanding ``IN`` parameter, so
        SQLAlchemy compiles it once), and the driver's rows without a Row object each.
        """
        t = self.table(table)
        if t is None:
            return []
        if len(t.primary_key.columns) > 1:
            return None
        cached = self._many.get((table, tuple(columns)))
        if cached is None or cached[0] is not t:  # reflected again: columns may have changed
            pk = t.c[self.primary_key(table)]
            selected = [pk, *(t.c[c] for c in columns if c in t.c and c != pk.name)] if columns else list(t.c)
            stmt = sa.select(*selected).where(pk.in_(sa.bindparam('sddb_keys', expanding=True)))
            cached = self._many[(table, tuple(columns))] = (t, stmt)
        stmt = cached[1]
        if not keys:
            return []
        names = [c.name for c in stmt.selected_columns]
        rows: Sequence[Sequence[Any]] | None = self._lookup(stmt, list(keys))
        if rows is None:
            rows = self._fetch(stmt, {'sddb_keys': list(keys)}, raw=True)
        return [dict(zip(names, row)) for row in rows]

    @again_if_changed
    def get_many_joined(
        self, table: str, keys: Sequence[Any], outputs: Sequence[str]
    ) -> tuple[list[dict[str, Any]], dict[str, list[dict[str, Any]]]] | None:
        """``get_many`` of every column, and in the same statement the ``output`` of each of the
        ``outputs`` tables (keyed by ``_id``, left-joined on the row's key): ``(rows, {output
        table: [{'_id', 'output'}, ...]})``. An output table missing, or keyed by another type,
        is left out of the second part (its caller reads it on its own); None for a composite key.

        A vector search's results with their model outputs, in one round trip.
        """
        t = self.table(table)
        if t is None:
            return [], {}
        if len(t.primary_key.columns) > 1:
            return None
        pk = t.c[self.primary_key(table)]
        joined: list[tuple[str, sa.Table]] = []
        for name in outputs:
            o = self.table(name)
            if o is not None and {'_id', 'output'} <= set(o.c.keys()) and _same_kind(o.c['_id'], pk):
                joined.append((name, o))
        at = (table, tuple(outputs))
        cached = self._joined.get(at)
        if cached is None or cached[0] != [t, *(o for _, o in joined)]:  # reflected again meanwhile
            selected: list[Any] = list(t.c)
            source: Any = t
            for i, (_, o) in enumerate(joined):
                selected += [o.c['_id'].label(f'sddb_j{i}_id'), o.c['output'].label(f'sddb_j{i}_output')]
                source = source.outerjoin(o, o.c['_id'] == pk)
            stmt = (
                sa.select(*selected)
                .select_from(source)
                .where(pk.in_(sa.bindparam('sddb_keys', expanding=True)))
            )
            cached = self._joined[at] = ([t, *(o for _, o in joined)], stmt)
        stmt = cached[1]
        found: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in joined}
        if not keys:
            return [], found
        rows: Sequence[Sequence[Any]] | None = self._lookup(stmt, list(keys), joined=[o for _, o in joined])
        if rows is None:
            rows = self._fetch(stmt, {'sddb_keys': list(keys)}, raw=True)
        width = len(t.c)
        names = list(t.c.keys())
        docs = []
        for row in rows:
            docs.append(dict(zip(names, row[:width])))
            for i, (name, _) in enumerate(joined):
                if row[width + 2 * i] is not None:
                    found[name].append({'_id': row[width + 2 * i], 'output': row[width + 2 * i + 1]})
        return docs, found

    # ----- lookups by key on the driver ---------------------------------------------
    # A vector search's few lookups by primary key (its rows, their outputs, the index's change
    # counter) are each a small statement whose time went mostly to SQLAlchemy's execution
    # pipeline (0.2 ms of 0.36 ms on PostgreSQL, 0.06 of 0.08 ms on SQLite, measured): they
    # run as SQL text prepared once per statement and key count, on the pooled connection's
    # driver cursor, with the columns' result processing applied as SQLAlchemy would.
    _MARKS: ClassVar[dict[str, str]] = {'qmark': '?', 'format': '%s', 'pyformat': '%s'}
    #: whether keyset pages may run on the driver's own cursor (see _page_plan)
    _pages_on_driver: ClassVar[bool] = True

    def _lookup(
        self, stmt: sa.Select[Any], keys: list[Any], *, joined: Sequence[sa.Table] = ()
    ) -> list[Any] | None:
        """The rows of ``stmt`` (a select of one table by its one-column primary key, with the
        ``_id`` and ``output`` of each ``joined`` table left-joined on that key) for ``keys`` on
        the driver; None where that is not possible (then SQLAlchemy runs it)."""
        if len(keys) > _LOOKUP_KEYS:
            return None  # a large read (a chunk's outputs): SQLAlchemy's cached statement serves it
        at = (id(stmt), len(keys))
        plan = self._plans.get(at)
        if plan is None or plan[0] is not stmt:  # a statement built again (the table reflected again)
            plan = self._plans[at] = (stmt, *self._lookup_plan(stmt, len(keys), joined))
        _, sql, processors = plan
        if sql is None:
            return None

        def run(conn: sa.Connection) -> tuple[Sequence[Sequence[Any]], list[Any]]:
            cursor = conn.connection.cursor()
            try:
                cursor.execute(sql, keys)
                rows = cursor.fetchall()
                known = (
                    processors
                    if processors is not None
                    else self._result_processors(stmt, cursor.description)
                )
                return rows, known
            finally:
                cursor.close()

        rows, found = self._read(run)
        if processors is None:
            self._plans[at] = (stmt, sql, found)
        return list(_processed(rows, found))

    def _lookup_plan(
        self, stmt: sa.Select[Any], count: int, joined: Sequence[sa.Table]
    ) -> tuple[str | None, Any]:
        """(SQL text, None: result processors found at the first run), or (None, None)."""
        mark = self._MARKS.get(self.engine.dialect.paramstyle)
        table = stmt.selected_columns[0].table
        if mark is None or not isinstance(table, sa.Table) or len(table.primary_key.columns) != 1:
            return None, None
        pk = list(table.primary_key.columns)
        try:
            if pk[0].type.python_type not in (int, str):
                return None, None  # other key types go through their bind processing
        except NotImplementedError:
            return None, None
        prep = self.engine.dialect.identifier_preparer
        width = len(stmt.selected_columns) - 2 * len(joined)
        selected = [f't.{prep.quote(c.name)}' for c in list(stmt.selected_columns)[:width]]
        source = f'{prep.format_table(table)} t'
        for i, o in enumerate(joined):
            selected += [f'j{i}.{prep.quote("_id")}', f'j{i}.{prep.quote("output")}']
            on = f'j{i}.{prep.quote("_id")} = t.{prep.quote(pk[0].name)}'
            source += f' LEFT OUTER JOIN {prep.format_table(o)} j{i} ON {on}'
        sql = f'SELECT {", ".join(selected)} FROM {source} WHERE t.{prep.quote(pk[0].name)}'
        if '%' in sql:
            return None, None  # would need escaping for the driver's %s markers
        sql += f' = {mark}' if count == 1 else f' IN ({", ".join([mark] * count)})'
        return sql, None

    @again_if_changed
    def keys(self, table: str, filter: dict[str, Any]) -> list[Any]:
        t = self.table(table)
        if t is None:
            return []
        pk = self._key_columns(table, t)
        if len(pk) == 1:
            found = self._keys_on_driver(table, t, pk[0], filter)
            if found is not None:
                return found
        # unordered: the planner's choice
        stmt = sa.select(*pk).where(compile_filter(t, filter, self.dialect))
        rows = self._fetch(stmt, raw=True)  # driver rows: no Row objects
        if len(pk) > 1:
            return [row_keys.compose(row) for row in rows]
        return list(map(operator.itemgetter(0), rows))

    def _keys_on_driver(
        self, table: str, t: sa.Table, pk: sa.Column[Any], filter: dict[str, Any]
    ) -> list[Any] | None:
        """:meth:`keys` as SQL text on the driver's cursor, compiled once per table and filter (a
        filtered vector search runs its filter at every search: SQLAlchemy's compiling and
        execution were 2 of its 8 ms for 2,000 keys); None where the statement needs
        SQLAlchemy's processing (a value or key type with processing, an expanding IN list)."""
        if not _small(filter):
            return None  # lists of values ($in): SQLAlchemy's expanding parameters, nothing kept
        at = (table, repr(filter))  # the same filter written the same way: the same SQL
        plan = self._key_sql.get(at)
        if plan is None or plan[0] is not t:  # new, or the table was reflected again
            if len(self._key_sql) >= 256:
                self._key_sql.clear()
            plan = self._key_sql[at] = (t, *self._key_plan(t, pk, filter))
        _, sql, params = plan
        if sql is None:
            return None

        def run(conn: sa.Connection) -> list[Any]:
            cursor = conn.connection.cursor()
            try:
                cursor.execute(sql, params)
                return list(map(operator.itemgetter(0), cursor.fetchall()))
            finally:
                cursor.close()

        return self._read(run)

    def _key_plan(self, t: sa.Table, pk: sa.Column[Any], filter: dict[str, Any]) -> tuple[str | None, Any]:
        dialect = self.engine.dialect
        if dialect.paramstyle not in self._MARKS:
            return None, None
        try:
            if pk.type.python_type not in (int, str):
                return None, None
        except NotImplementedError:
            return None, None
        found = self._driver_sql(sa.select(pk).where(compile_filter(t, filter, self.dialect)))
        return found if found is not None else (None, None)

    def _driver_sql(self, stmt: sa.Select[Any]) -> tuple[str, Any] | None:
        """``stmt`` as SQL text and its values, for the driver's own cursor; None where it needs
        SQLAlchemy's processing (a value type with bind processing, an expanding IN list)."""
        compiled = self._driver_compiled(stmt)
        if compiled is None:
            return None
        values = compiled.construct_params()
        if compiled.positiontup is not None:
            return compiled.string, tuple(values[name] for name in compiled.positiontup)
        return compiled.string, values

    def _driver_compiled(self, stmt: sa.Select[Any]) -> Any:
        """``stmt`` compiled for the driver's own cursor; None where it needs SQLAlchemy's
        processing (a value type with bind processing, an expanding IN list) or the driver
        takes other parameter markers."""
        dialect = self.engine.dialect
        if dialect.paramstyle not in self._MARKS:
            return None
        compiled = stmt.compile(dialect=dialect)
        if compiled.post_compile_params or any(
            b.type.dialect_impl(dialect).bind_processor(dialect) is not None for b in compiled.binds.values()
        ):
            return None
        return compiled

    def keys_of_other_width(
        self, table: str, column: str, width: int, filter: dict[str, Any], *, limit: int = 100
    ) -> list[Any] | None:
        """Keys of up to ``limit`` rows whose ``column`` is stored as bytes of another length
        than ``width`` (missing values excluded), found by the database in one scan; None when
        this database cannot measure the column (then read the rows instead)."""
        t = self.table(table)
        if t is None or column not in t.c:
            return None
        pk = self._key_columns(table, t)
        size = getattr(sa.func, self.facts.byte_length)  # SQLite: length, others: octet_length
        stmt = (
            sa.select(*pk)
            .where(
                compile_filter(t, filter, self.dialect), t.c[column].is_not(None), size(t.c[column]) != width
            )
            .limit(limit)
        )
        try:
            rows = self._fetch(stmt, raw=True)
        except BackendError:
            return None
        if len(pk) > 1:
            return [row_keys.compose(row) for row in rows]
        return [row[0] for row in rows]

    @again_if_changed
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
        """:meth:`find`, column-wise: each chunk maps the primary key and ``columns`` to lists of values.

        For bulk readers (predict) that want a column at a time: no dict per row.
        A column the table lacks comes back as ``None`` values. ``ordered=False`` (with no
        sort, limit or skip): the rows in the database's own order, from one statement
        (:meth:`_stream`), for a reader of every row that keeps no position (an index build).
        """
        t = self.table(table)
        if t is None:
            return
        pk = self._key_columns(table, t)
        in_key = {c.name for c in pk}
        selected = [*pk, *(t.c[c] for c in dict.fromkeys(columns) if c in t.c and c not in in_key)]
        names = [c.name for c in selected]
        stmt = sa.select(*selected).where(compile_filter(t, filter, self.dialect))
        whole = not ordered and not sort and limit is None and not skip
        pages = self._stream(stmt, chunk_size) if whole and self._streams else None
        if pages is not None:
            pages = (_transposed(rows, len(names)) for rows in pages)
        else:
            pages = self._pages(stmt, pk, sort, limit, skip, chunk_size, t, columns=True)
        for page in pages:
            found: dict[str, Any] = dict(zip(names, page))
            if len(pk) > 1:
                key = row_keys.ROW_KEY, row_keys.compose_columns([found[c.name] for c in pk])
            else:
                key = pk[0].name, found[pk[0].name]
            yield {key[0]: key[1], **{c: found.get(c) or [None] * len(page[0]) for c in columns}}

    def _pages(
        self,
        stmt: sa.Select[Any],
        pk: Sequence[sa.Column[Any]],
        sort: Sequence[tuple[str, int]],
        limit: int | None,
        skip: int,
        chunk_size: int,
        t: sa.Table,
        *,
        raw: bool = False,
        columns: bool = False,
    ) -> Iterator[Sequence[Sequence[Any]]]:
        """The rows of ``stmt`` (which selects ``pk``) page by page (``raw``: see :meth:`_fetch`;
        ``columns``: each page as a list of values per selected column, :meth:`_fetch_columns`)."""
        remaining = limit
        if columns:
            fetch: Callable[..., Sequence[Sequence[Any]]] = self._fetch_columns
            size: Callable[[Sequence[Sequence[Any]]], int] = _column_length
        else:
            fetch, size = functools.partial(self._fetch, raw=raw), len
        if sort:
            # offset pages, ordered by the sort keys with the key as tie-breaker
            ordered = stmt.order_by(*compile_sort(t, sort, self.dialect), *pk)
            offset = skip
            while remaining is None or remaining > 0:
                n = chunk_size if remaining is None else min(chunk_size, remaining)
                chunk = fetch(ordered.offset(offset).limit(n))
                got = size(chunk)
                if got:
                    yield chunk
                if got < n:
                    return
                offset += n
                remaining = None if remaining is None else remaining - n
            return
        # keyset pages in primary-key order: no long-lived cursor, stable under writes; one
        # statement for every page after the first (the last key is a parameter), compiled once
        names = [c.name for c in stmt.selected_columns]
        at = [names.index(c.name) for c in pk]
        ordered = stmt.order_by(*pk)
        if len(pk) > 1:  # a composite key: rows after the last one's key, compared as a row value
            after = ordered.where(row_keys.after(t))
        else:
            after = ordered.where(pk[0] > sa.bindparam('sddb_keyset_after_0', type_=pk[0].type))
        pages: dict[int, sa.Select[Any]] = {}
        last: Any = None
        offset = skip
        while remaining is None or remaining > 0:
            n = chunk_size if remaining is None else min(chunk_size, remaining)
            if last is None:
                chunk = fetch(ordered.offset(offset).limit(n) if offset else ordered.limit(n))
            else:
                if n not in pages:
                    pages[n] = after.limit(n)
                chunk = fetch(pages[n], last)
            got = size(chunk)
            if got:
                if columns:
                    last = {f'sddb_keyset_after_{i}': chunk[j][-1] for i, j in enumerate(at)}
                else:
                    last = {f'sddb_keyset_after_{i}': chunk[-1][j] for i, j in enumerate(at)}
                yield chunk
            if got < n:
                return
            remaining = None if remaining is None else remaining - n

    def _stream(self, stmt: sa.Select[Any], chunk_size: int) -> Iterator[Sequence[Sequence[Any]]] | None:
        """The rows of ``stmt`` in pages of ``chunk_size``, from one statement on the driver's
        cursor: one snapshot, no ORDER BY and no statement per page (keyset pages walk the key's
        index, which on SQLite and PostgreSQL made reading a table's vectors 1.6x slower than a
        scan); None for a statement whose values need SQLAlchemy's processing (read it in keyset
        pages then). Plain values (an index build's model version) are bound by the driver.

        The connection is held until the last page. SQLite's cursor steps through the rows as
        they are fetched; on PostgreSQL a server-side cursor keeps the client's memory to a page,
        its rows in binary format where every column's type reads the same in it (bytes as
        stored, not hex text: a third of the time to read float vectors)."""
        found = self._driver_sql(stmt)
        if found is None:
            return None
        sql, params = found
        return self._streamed(stmt, sql, params or None, chunk_size)

    def _streamed(
        self, stmt: sa.Select[Any], sql: str, params: Any, chunk_size: int
    ) -> Iterator[Sequence[Sequence[Any]]]:
        dialect = self.engine.dialect
        with self._read_connection() as conn:
            driver: Any = conn.connection.driver_connection
            try:
                if dialect.name == 'postgresql':
                    binary = all(_binary_safe(c.type) for c in stmt.selected_columns)
                    name = f'sddb_{id(stmt)}'
                    with driver.transaction(), driver.cursor(name=name, binary=binary) as cursor:
                        cursor.execute(sql, params)
                        processors = self._result_processors(stmt, cursor.description)
                        while rows := cursor.fetchmany(chunk_size):
                            yield _processed(rows, processors)
                    return
                cursor = driver.cursor()
                try:
                    cursor.execute(sql, params or ())
                    processors = self._result_processors(stmt, cursor.description)
                    while rows := cursor.fetchmany(chunk_size):
                        yield _processed(rows, processors)
                finally:
                    cursor.close()
            except (sa.exc.SQLAlchemyError, dialect.loaded_dbapi.Error) as exc:
                raise self._read_failed(exc) from exc

    def _fetch(
        self, stmt: sa.Select[Any], params: dict[str, Any] | None = None, *, raw: bool = False
    ) -> Sequence[Sequence[Any]]:
        """The rows of ``stmt``: SQLAlchemy rows, or with ``raw`` the driver's own tuples with
        the column types' result processing applied column by column (no Row object per row)."""

        def run(conn: sa.Connection) -> Sequence[Sequence[Any]]:
            result = conn.execute(stmt, params)
            if not raw:
                return result.fetchall()
            cursor = result.cursor
            rows = cursor.fetchall()
            processors = self._result_processors(stmt, cursor.description)
            result.close()
            return _processed(rows, processors)

        return self._read(run)

    def _fetch_columns(self, stmt: sa.Select[Any], params: dict[str, Any] | None = None) -> list[list[Any]]:
        """The rows of ``stmt`` as a list of values per selected column (processed as with
        ``_fetch(raw=True)``). A backend whose driver reads columns as they are stored
        (ClickHouse) overrides it: no row tuples made and taken apart again.

        A statement run again with new ``params`` (a keyset page after the first) runs as SQL
        text on the driver's cursor, compiled once: SQLAlchemy's execution of a cached statement
        took a quarter of a page of 1000 short texts on SQLite (a backfill's read)."""
        compiled = None if params is None else self._page_plan(stmt)
        if compiled is None:
            rows = self._fetch(stmt, params, raw=True)
        else:
            rows = self._fetch_on_driver(stmt, compiled, params)
        return _transposed(rows, len(stmt.selected_columns))

    def _page_plan(self, stmt: sa.Select[Any]) -> sa.Compiled | None:
        """:meth:`_driver_compiled`, kept by identity (with the statement, so that its id is
        not reused)."""
        found = self._page_sql.get(id(stmt))
        if found is not None and found[0] is stmt:
            return found[1]
        compiled = self._driver_compiled(stmt) if self._pages_on_driver else None
        if len(self._page_sql) >= 64:
            self._page_sql.clear()
        self._page_sql[id(stmt)] = (stmt, compiled)
        return compiled

    def _fetch_on_driver(
        self, stmt: sa.Select[Any], compiled: sa.Compiled, params: dict[str, Any] | None
    ) -> Sequence[Sequence[Any]]:
        """The rows of ``stmt`` (compiled by :meth:`_page_plan`) with ``params``, on the driver's
        cursor, processed as ``_fetch(raw=True)`` processes them."""
        values = compiled.construct_params(params) or {}
        order = compiled.positiontup  # type: ignore[attr-defined]
        args = values if order is None else tuple(values[name] for name in order)

        def run(conn: sa.Connection) -> Sequence[Sequence[Any]]:
            cursor = conn.connection.cursor()
            try:
                cursor.execute(compiled.string, args)
                rows = cursor.fetchall()
                processors = self._result_processors(stmt, cursor.description)
            finally:
                cursor.close()
            return _processed(rows, processors)

        return self._read(run)


def _transposed(rows: Sequence[Sequence[Any]], width: int) -> list[list[Any]]:
    """Rows as a list per column, by index: several times faster than transposing with zip(*rows)."""
    return [list(map(operator.itemgetter(i), rows)) for i in range(width)]


def _column_length(columns: Sequence[Sequence[Any]]) -> int:
    return len(columns[0]) if columns else 0


def _projected(
    t: sa.Table, pk: Sequence[sa.Column[Any]], projection: dict[str, int] | None
) -> tuple[list[Any], list[str]]:
    """The columns to select (always the key's: pages continue from it), and those to drop after.

    A single-column key is kept unless the projection excludes it (as MongoDB's ``_id``); the
    columns of a composite key follow the projection, its whole key (``_key``) is kept unless
    excluded.
    """
    if not projection:
        return list(t.c), []
    tops = {key.split('.')[0]: value for key, value in projection.items()}
    tops.pop(row_keys.ROW_KEY, None)
    inclusion = any(tops.values())  # ({'_id': 1}: the key alone, as on MongoDB)
    keep = [tops.pop(pk[0].name, 1)] if len(pk) == 1 else []
    if inclusion:  # (a dotted path selects its whole top-level column)
        cols = [t.c[name] for name in tops if name in t.c]
    else:
        cols = [c for c in t.c if c.name not in tops]
    drop = [c.name for c in pk if c not in cols] if len(pk) > 1 else [] if keep[0] else [pk[0].name]
    return [*pk, *[c for c in cols if c not in pk]], drop


#: Lookups of up to this many keys run on the driver (a vector search's rows); one SQL text is
#: kept per statement and key count, so larger ones, of many different counts, are not.
_LOOKUP_KEYS = 100


def _small(filter: Any, depth: int = 0) -> bool:
    """Whether a filter holds no list of values (only ``$and``/``$or`` of small filters) and is
    shallow: one worth keeping its SQL text for, under a key made from its repr."""
    if depth > 8:
        return False
    if isinstance(filter, dict):
        return len(filter) <= 16 and all(
            all(_small(f, depth + 1) for f in v)
            if k in ('$and', '$or') and isinstance(v, list)
            else _small(v, depth + 1)
            for k, v in filter.items()
        )
    return not isinstance(filter, (list, tuple, set, frozenset, bytes, bytearray))


def _binary_safe(column_type: Any) -> bool:
    """Whether psycopg reads a column of this type as the same Python value in binary format
    (an enum or another type it does not know comes back as bytes there, as text otherwise)."""
    if isinstance(column_type, sa.Enum):
        return False
    return isinstance(column_type, (sa.String, sa.Integer, sa.LargeBinary, sa.Float, sa.Boolean))


def _processed(rows: Sequence[Sequence[Any]], processors: Sequence[Any]) -> Sequence[Sequence[Any]]:
    """Driver rows with each column's result processing (as SQLAlchemy's types do it) applied."""
    if not any(processors) or not rows:
        return rows
    columns = [
        list(values) if p is None else [p(v) for v in values] for p, values in zip(processors, zip(*rows))
    ]
    return list(zip(*columns))


def _same_kind(a: sa.Column[Any], b: sa.Column[Any]) -> bool:
    """Whether two key columns hold values of one Python type (so that a join on them is valid)."""
    try:
        return a.type.python_type is b.type.python_type
    except NotImplementedError:
        return False
