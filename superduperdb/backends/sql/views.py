"""Readable SQL views of model outputs, for psql, BI tools and datasette.

Outputs live in tables named ``_superduper_out_<hash>`` (see
:mod:`superduperdb.store.outputs`). Next to each, when it is created, a view named
``<table>__<key>__<model>`` joins it to its source table, one row per row that has an
output::

    <primary key> | <key> (the input) | output | model_version

Only those columns: the row's primary key (each column of a composite one), the input's
top-level column (``meta`` for the key ``meta.text``; each column of a watcher over several
keys), the output and its version. A view that read every column of the source table would
tie all of them to it: PostgreSQL refuses another program's ``ALTER TABLE ... DROP COLUMN``
(or ``ALTER COLUMN ... TYPE``) of any column a view reads, and SQLite, MariaDB and DuckDB
break the view instead. Changing the type of the key or input column itself on PostgreSQL
still needs the view dropped first (``DROP VIEW``, then ``db.outputs.views(create=True)``).
Views made by versions that selected every column are remade by
``db.outputs.views(create=True)``.

Names: when the table, key and model are plain names (letters, digits and single
underscores; no ``__``, no leading or trailing ``_``) and the whole fits in 63 characters,
the view is ``<table>__<key>__<model>``. Otherwise, or when that name is already taken by a
table or view of someone else, each part is reduced to letters, digits and ``_``, cut to
fit, and ``__<8 hex digits>`` of a hash of the three parts is added:
``reviews__meta_text__v1_5__e8f6f7d2``. Either way a name belongs to one (table, key,
model). The view is dropped with its output table (``db.drop_table``).

The views are read-only: SQLite, DuckDB and PostgreSQL do not write through a join view,
and on MariaDB/MySQL the output columns are expressions (``coalesce(output)``), which those
databases never write through. The query API refuses them like superduperdb's own tables.

Scalar outputs keep their column type (integer, float, text, boolean). On PostgreSQL a
float32 vector output (``array('float32', n)``) shows as ``real[]``, decoded by the SQL
function ``_superduper_float4s(bytea)``; elsewhere, and for other encoded outputs, the
column holds the stored bytes (a numpy vector: its raw little-endian values,
``numpy.frombuffer(value, dtype=...)``).
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from superduperdb.backends.sql import keys as row_keys

if TYPE_CHECKING:
    from superduperdb.backends.sql.backend import SQLBackend

logger = logging.getLogger(__name__)

_PLAIN = re.compile(r'^[A-Za-z0-9]+(_[A-Za-z0-9]+)*$')
_MAX = 63  # PostgreSQL's identifier limit (MySQL: 64)
_FLOAT32 = re.compile(r'^numpy\.float32\[\d+\]$')  # a 1-D float32 vector encoder

#: PostgreSQL: a float32 vector's raw little-endian bytes as ``real[]`` (IEEE 754 by hand:
#: PostgreSQL has no cast from bytea to float). Made in superduperdb's schema.
_FLOAT4S = """
CREATE OR REPLACE FUNCTION _superduper_float4s(b bytea) RETURNS real[]
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $sd$
DECLARE
  found real[] := '{}';
  bits bigint;
  e int;
  m bigint;
  v double precision;
BEGIN
  FOR i IN 0 .. length(b) / 4 - 1 LOOP
    bits := get_byte(b, 4 * i)::bigint | (get_byte(b, 4 * i + 1)::bigint << 8)
      | (get_byte(b, 4 * i + 2)::bigint << 16) | (get_byte(b, 4 * i + 3)::bigint << 24);
    e := ((bits >> 23) & 255)::int;
    m := bits & 8388607;
    IF e = 255 THEN
      v := CASE WHEN m = 0 THEN 'Infinity'::float8 ELSE 'NaN'::float8 END;
    ELSIF e = 0 THEN
      v := m * power(2::float8, -149);  -- float8: numeric powers round subnormals to 0
    ELSE
      v := (1 + m / 8388608::float8) * power(2::float8, e - 127);
    END IF;
    IF (bits >> 31) = 1 THEN
      v := -v;
    END IF;
    found := found || v::real;
  END LOOP;
  RETURN found;
END $sd$
"""


def readable_name(table: str, key: str, model: str) -> str:
    """``<table>__<key>__<model>`` when the parts are plain names and it fits, else :func:`hashed_name`.

    >>> readable_name('reviews', 'text', 'words')
    'reviews__text__words'
    >>> readable_name('reviews', 'meta.text', 'v1.5')
    'reviews__meta_text__v1_5__e8f6f7d2'
    """
    name = f'{table}__{key}__{model}'
    if all(_PLAIN.match(part) for part in (table, key, model)) and len(name) <= _MAX:
        return name
    return hashed_name(table, key, model)


def hashed_name(table: str, key: str, model: str) -> str:
    """The readable parts, reduced to ``[A-Za-z0-9_]`` and cut to fit, and ``__<hash>``."""
    digest = hashlib.sha1(f'{table}\x00{key}\x00{model}'.encode()).hexdigest()[:8]
    parts = [re.sub(r'[^A-Za-z0-9]+', '_', part).strip('_') or 'x' for part in (table, key, model)]
    return f'{"__".join(parts)[: _MAX - 10]}__{digest}'


def create_output_view(
    backend: SQLBackend, table: str, key: str, model: str, out: str, *, encoder: str | None = None
) -> str | None:
    """Create the view of output table ``out``; returns its name (None if it could not be made).

    ``encoder``: the identifier of the outputs' encoder, if any (``numpy.float32[384]``: on
    PostgreSQL the view shows ``real[]`` arrays). A view is a convenience: failing to make
    one is logged, never raised.
    """
    try:
        with backend.engine.begin() as conn:
            found = relations(conn, backend.dialect)
            existing = [name for name, sql in found.items() if sql is not None and out in sql]
            vectors = backend.dialect == 'postgresql' and encoder is not None and _FLOAT32.match(encoder)
            if existing:
                name = existing[0]
                outdated = backend.dialect == 'mysql' and not _read_only(found[name])  # made before 2026-12
                if outdated or not _shows_only(backend, name, table, key, out):
                    if vectors:
                        conn.execute(sa.text(_FLOAT4S))
                    create = _create_view(backend, name, table, key, out, vectors=bool(vectors))
                    _remake(backend, conn, name, create)
                return name
            name = readable_name(table, key, model)
            if name in found:
                name = hashed_name(table, key, model)
                if name in found:
                    logger.warning(
                        'No view for the outputs of %s on %s.%s: %r is taken.', model, table, key, name
                    )
                    return None
            if vectors:
                conn.execute(sa.text(_FLOAT4S))
            conn.execute(sa.text(_create_view(backend, name, table, key, out, vectors=bool(vectors))))
            return name
    except (sa.exc.SQLAlchemyError, KeyError) as exc:
        logger.warning('Could not create a view for the outputs of %s on %s.%s: %s', model, table, key, exc)
        return None


def output_views(backend: SQLBackend, out: str) -> list[str]:
    """The names of the views that read output table ``out``."""
    with backend.engine.connect() as conn:
        return sorted(name for name, sql in relations(conn, backend.dialect).items() if sql and out in sql)


def drop_output_views(backend: SQLBackend, out: str) -> None:
    """Drop the views of output table ``out`` (before the table: PostgreSQL insists)."""
    views = output_views(backend, out)
    if not views:
        return
    quote = backend.engine.dialect.identifier_preparer.quote
    with backend.engine.begin() as conn:
        for name in views:
            conn.execute(sa.text(f'DROP VIEW IF EXISTS {quote(name)}'))


def _shows_only(backend: SQLBackend, name: str, table: str, key: str, out: str) -> bool:
    """Whether view ``name`` shows exactly the columns it should (older versions showed the
    whole row, which ties every column of the table to the view)."""
    try:
        wanted = [c.name for c in _view_select(backend, table, key, out, vectors=False).selected_columns]
        with backend.engine.connect() as conn:  # its own connection: a broken view fails here
            found = conn.exec_driver_sql(
                f'SELECT * FROM {backend.engine.dialect.identifier_preparer.quote(name)} WHERE 1 = 0'
            )
            shown = [d[0] for d in found.cursor.description]
            found.close()
    except (sa.exc.SQLAlchemyError, KeyError):  # a column it reads was dropped: remade
        return False
    return sorted(shown) == sorted(wanted)


def _remake(backend: SQLBackend, conn: sa.Connection, name: str, create: str) -> None:
    """Replace view ``name`` (dropped first: PostgreSQL cannot drop a view's columns in place)."""
    quoted = backend.engine.dialect.identifier_preparer.quote(name)
    conn.execute(sa.text(f'DROP VIEW IF EXISTS {quoted}'))
    conn.execute(sa.text(create))


def shown_columns(backend: SQLBackend, table: str, source: sa.Table, key: str) -> list[sa.Column[Any]]:
    """The source table's columns a view shows: the primary key's and the input's.

    ``key`` is the watcher's key as stored with its outputs: ``text``, ``meta.text`` (a path
    into the column ``meta``), or ``a,b`` (a watcher over several keys). A key that names no
    column of the table (a query's key) adds none.
    """
    shown = list(row_keys.key_columns(source)) if row_keys.is_composite(source) else []
    if not shown:
        shown = [source.c[backend.primary_key(table)]]
    for part in key.split(','):
        top = part.split('.')[0]
        if top in source.c and source.c[top] not in shown:
            shown.append(source.c[top])
    return shown


def _create_view(
    backend: SQLBackend, name: str, table: str, key: str, out: str, *, vectors: bool = False
) -> str:
    select = _view_select(backend, table, key, out, vectors=vectors)
    body = select.compile(dialect=backend.engine.dialect, compile_kwargs={'literal_binds': True})
    quoted = backend.engine.dialect.identifier_preparer.quote(name)
    create = 'CREATE VIEW IF NOT EXISTS' if backend.dialect == 'sqlite' else 'CREATE OR REPLACE VIEW'
    return f'{create} {quoted} AS {body}'


def _view_select(backend: SQLBackend, table: str, key: str, out: str, *, vectors: bool) -> sa.Select[Any]:
    source, outputs = backend.table(table), backend.table(out)
    if source is None or outputs is None:
        raise KeyError(f'{table if source is None else out} does not exist')
    columns: list[Any] = shown_columns(backend, table, source, key)
    taken = {c.name for c in columns}
    for stored, label in (('output', 'output'), ('_version', 'model_version')):
        while label in taken:  # the table has a column of that name already
            label = f'_{label}'
        taken.add(label)
        value: Any = outputs.c[stored]
        if vectors and stored == 'output':  # float32 vectors as real[], readable by any client
            value = sa.func._superduper_float4s(value, type_=sa.ARRAY(sa.REAL))
        elif backend.dialect == 'mysql':
            # MariaDB/MySQL update a join view's plain columns in the underlying tables: an
            # expression column is read-only, so no write through the view reaches the outputs
            value = sa.func.coalesce(value, type_=value.type)
        columns.append(value.label(label))
    return sa.select(*columns).select_from(source.join(outputs, _joined(backend, table, source, outputs)))


def _read_only(definition: str | None) -> bool:
    """Whether a MariaDB/MySQL view definition shows the outputs as read-only expressions."""
    return definition is not None and 'coalesce(' in definition.lower()


def _joined(backend: SQLBackend, table: str, source: sa.Table, outputs: sa.Table) -> Any:
    """Each output row with its source row: by the key, or by the items of a composite key's
    text (``'[1,"a"]'``, see :mod:`superduperdb.backends.sql.keys`)."""
    key = outputs.c['_id']
    if not row_keys.is_composite(source):
        return key == source.c[backend.primary_key(table)]
    terms = []
    for i, column in enumerate(row_keys.key_columns(source)):
        path = f'$[{i}]'
        if backend.dialect == 'sqlite':  # json_extract gives integers as integers
            terms.append(sa.func.json_extract(key, path) == column)
            continue
        if backend.dialect == 'postgresql':
            from sqlalchemy.dialects import postgresql  # only here: ~60 ms to import

            item: Any = sa.cast(key, postgresql.JSONB).op('->>')(i)
        elif backend.dialect == 'duckdb':
            item = sa.func.json_extract_string(key, path)
        else:  # mysql / mariadb
            item = sa.func.json_unquote(sa.func.json_extract(key, path))
        terms.append(item == sa.cast(column, sa.String))
    return sa.and_(*terms)


def relations(conn: sa.Connection, dialect: str) -> dict[str, str | None]:
    """Tables and views of the current schema/database: ``{name: view definition, or None}``."""
    if dialect == 'sqlite':
        query = (
            "SELECT name, CASE WHEN type = 'view' THEN sql END FROM sqlite_master "
            "WHERE type IN ('table', 'view')"
        )
    elif dialect == 'duckdb':
        query = (
            'SELECT table_name, NULL FROM duckdb_tables() WHERE schema_name = current_schema() '
            'UNION ALL SELECT view_name, sql FROM duckdb_views() '
            'WHERE NOT internal AND schema_name = current_schema()'
        )
    elif dialect == 'postgresql':
        query = (
            "SELECT c.relname, CASE WHEN c.relkind IN ('v', 'm') THEN pg_get_viewdef(c.oid) END "
            'FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace '
            "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm', 'f')"
        )
    else:  # mysql / mariadb
        query = (
            'SELECT t.table_name, v.view_definition FROM information_schema.tables t '
            'LEFT JOIN information_schema.views v '
            'ON v.table_schema = t.table_schema AND v.table_name = t.table_name '
            'WHERE t.table_schema = DATABASE()'
        )
    return {str(name): (None if sql is None else str(sql)) for name, sql in conn.execute(sa.text(query))}
