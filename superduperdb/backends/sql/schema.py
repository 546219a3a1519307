"""SQL column types: inferred from documents for new tables, reflected for existing ones.

Also the write-time side of the value policy (docs/concepts.md, "Values"): a column has one
type, and a value that would not come back as it was written is refused before anything is
written (:func:`check_values`).
"""

from __future__ import annotations

import datetime
import decimal
import functools
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles

from superduperdb.base.exceptions import InvalidValue, QueryError

UTC = datetime.UTC
#: the column comment that marks a MySQL/MariaDB DATETIME(6) column as holding UTC instants
INSTANT_COMMENT = 'superduperdb: UTC instant'


class Instant(sa.types.TypeDecorator[datetime.datetime]):
    """A point in time: written as UTC, read back as an aware datetime in UTC.

    The type of every datetime column superduperdb creates. PostgreSQL and DuckDB store it
    as ``TIMESTAMP WITH TIME ZONE``; SQLite (``TIMESTAMP``) and MySQL/MariaDB
    (``DATETIME(6)`` with the comment :data:`INSTANT_COMMENT`) have no time zones, so the
    UTC time is stored and the zone put back on reading. A naive value in a filter is
    taken as UTC (as MongoDB does); naive values are refused on writes (:func:`check_values`).
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine[Any]:
        if dialect.name in ('mysql', 'mariadb'):
            from sqlalchemy.dialects import mysql

            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(sa.DateTime(timezone=True))

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> Any:
        if not isinstance(value, datetime.datetime):
            return value
        value = value.replace(tzinfo=UTC) if value.utcoffset() is None else value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name in ('sqlite', 'mysql', 'mariadb') else value

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> Any:
        if not isinstance(value, datetime.datetime):
            return value
        return value.replace(tzinfo=UTC) if value.utcoffset() is None else value.astimezone(UTC)


@compiles(Instant, 'sqlite')
def _instant_on_sqlite(type_: Instant, compiler: Any, **kw: Any) -> str:
    return 'TIMESTAMP'  # stored like DATETIME; the name tells a reflected instant column apart


def is_instant_column(column: sa.Column[Any], dialect: str) -> bool:
    """Whether a reflected column holds instants (read as :class:`Instant`)."""
    kind = column.type
    if dialect == 'sqlite':
        return isinstance(kind, sa.TIMESTAMP)
    if dialect == 'mysql':
        return isinstance(kind, sa.DateTime) and column.comment == INSTANT_COMMENT
    return isinstance(kind, sa.DateTime) and bool(kind.timezone)


def mark_instants(table: sa.Table, dialect: str) -> None:
    """Read reflected instant columns through :class:`Instant`."""
    for column in table.c:
        if not isinstance(column.type, Instant) and is_instant_column(column, dialect):
            column.type = Instant()


# MariaDB/MySQL: BLOB and TEXT cap at 64 KB, FLOAT is single precision. LONGBLOB and LONGTEXT
# there, named by compile hooks rather than with_variant(mysql.LONGBLOB()): the MySQL dialect
# package is then imported only by those who use it (~30 ms of every start otherwise).
class _Bytes(sa.LargeBinary):
    pass


class _Text(sa.Text):
    pass


@compiles(_Bytes, 'mysql')
@compiles(_Bytes, 'mariadb')
def _long_blob(type_: _Bytes, compiler: Any, **kw: Any) -> str:
    return 'LONGBLOB'


@compiles(_Text, 'mysql')
@compiles(_Text, 'mariadb')
def _long_text(type_: _Text, compiler: Any, **kw: Any) -> str:
    return 'LONGTEXT'


_BYTES = _Bytes()
_TEXT = _Text()

_BY_NAME: dict[str, sa.types.TypeEngine[Any]] = {
    'str': _TEXT,
    'int': sa.BigInteger(),
    'float': sa.Double(),
    'bool': sa.Boolean(),
    'bytes': _BYTES,
    'json': sa.JSON(),
    'datetime': Instant(),
}


def sql_type(name: str) -> sa.types.TypeEngine[Any]:
    return _BY_NAME[name]


def column(name: str, kind: str) -> sa.Column[Any]:
    """A new column for values of type ``kind`` (a name from :func:`type_name_of`)."""
    comment = INSTANT_COMMENT if kind == 'datetime' else None  # MySQL keeps it; read by mark_instants
    return sa.Column(name, sql_type(kind), comment=comment)


def type_name_of(value: Any) -> str | None:
    """The column type name a Python value needs, or None for None."""
    if value is None:
        return None
    if isinstance(value, bool):
        return 'bool'
    if isinstance(value, int):
        return 'int'
    if isinstance(value, float):
        return 'float'
    if isinstance(value, str):
        return 'str'
    if isinstance(value, (bytes, bytearray, memoryview)):
        return 'bytes'
    if isinstance(value, datetime.datetime):
        return 'datetime'
    if isinstance(value, (dict, list)):
        return 'json'
    raise QueryError(f'Cannot store a {type(value).__name__} in a SQL column.')


def infer_columns(documents: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[str, str]:
    """Column type names for ``keys``, from the first non-null value of each.

    A column whose values are all null becomes JSON, which can hold any later value.
    """
    found: dict[str, str] = {}
    for key in keys:
        for doc in documents:
            name = type_name_of(doc.get(key))
            if name is not None:
                found[key] = name
                break
        else:
            found[key] = 'json'
    return found


def primary_key_column(name: str, sample: Any) -> sa.Column[Any]:
    if isinstance(sample, int) and not isinstance(sample, bool):
        return sa.Column(name, sa.BigInteger(), primary_key=True, autoincrement=False)
    return sa.Column(name, sa.String(255), primary_key=True)


_DUCKDB_TYPES: dict[str, sa.types.TypeEngine[Any]] = {
    'BIGINT': sa.BigInteger(),
    'INTEGER': sa.Integer(),
    'SMALLINT': sa.SmallInteger(),
    'TINYINT': sa.SmallInteger(),
    'HUGEINT': sa.BigInteger(),
    'UBIGINT': sa.BigInteger(),
    'UINTEGER': sa.BigInteger(),
    'DOUBLE': sa.Double(),
    'FLOAT': sa.Float(),
    'REAL': sa.Float(),
    'BOOLEAN': sa.Boolean(),
    'VARCHAR': sa.Text(),
    'TEXT': sa.Text(),
    'BLOB': sa.LargeBinary(),
    'JSON': sa.JSON(),
    'DATE': sa.Date(),
    'TIMESTAMP': sa.DateTime(),
    'TIMESTAMP WITH TIME ZONE': sa.DateTime(timezone=True),
}


def quote_keywords(engine: sa.Engine) -> None:
    """Quote every name DuckDB's parser could take for a keyword, in every statement made for
    ``engine`` (table creation, inserts, filters, sorts, projections, views).

    SQLAlchemy quotes the names its dialect lists as reserved; duckdb-engine lists only
    DuckDB's fully reserved keywords, so fields named ``at``, ``asof``, ``positional``,
    ``semi`` or ``anti`` (keywords of joins and functions) made statements DuckDB cannot
    parse. The list comes from the DuckDB library in use (``duckdb_keywords()``), so a later
    version's new keywords are quoted too.
    """
    preparer = engine.dialect.identifier_preparer
    # an instance set: duckdb-engine's is PostgreSQL's own, shared by every engine
    preparer.reserved_words = set(preparer.reserved_words) | _duckdb_keywords()
    preparer._strings.clear()  # names quoted (or not) before


@functools.cache
def _duckdb_keywords() -> frozenset[str]:
    """DuckDB's keywords other than those it takes as names everywhere (``unreserved``)."""
    import duckdb  # the engine's own library: installed with it

    con = duckdb.connect()
    try:
        found = con.execute(
            "SELECT keyword_name FROM duckdb_keywords() WHERE keyword_category <> 'unreserved'"
        ).fetchall()
    finally:
        con.close()
    return frozenset(name.lower() for (name,) in found)


def reflect_duckdb(conn: sa.Connection, metadata: sa.MetaData, name: str) -> sa.Table | None:
    """Reflect a DuckDB table from information_schema.

    duckdb-engine's reflection queries pg_catalog tables that DuckDB lacks
    under SQLAlchemy >= 2.0.45, so read DuckDB's own catalog instead.
    """
    rows = conn.execute(
        sa.text(
            'SELECT column_name, data_type FROM information_schema.columns '
            'WHERE table_name = :name AND table_schema = current_schema() ORDER BY ordinal_position'
        ),
        {'name': name},
    ).all()
    if not rows:
        return None
    keys = conn.execute(
        sa.text(
            'SELECT constraint_column_names FROM duckdb_constraints() '
            "WHERE table_name = :name AND constraint_type = 'PRIMARY KEY'"
        ),
        {'name': name},
    ).all()
    primary = set(keys[0][0]) if keys else set()
    columns = []
    for column_name, data_type in rows:
        base = data_type.split('(')[0].upper()
        column_type = _DUCKDB_TYPES.get(base, sa.Text())
        if base.startswith('DECIMAL'):
            column_type = sa.Numeric()
        columns.append(sa.Column(column_name, column_type, primary_key=column_name in primary))
    return sa.Table(name, metadata, *columns)


#: what a reflected column's description passes on to its Column, as SQLAlchemy's reflection does
_COLUMN_KEYWORDS = ('nullable', 'autoincrement', 'comment', 'info', 'key')


def reflect_lean(
    conn: sa.Connection, metadata: sa.MetaData, bare: str, in_schema: str | None
) -> sa.Table | None:
    """A table's columns (with the types the dialect reflects) and its primary key, all that
    superduperdb's code reads of a table, in 2 queries (``Table(autoload_with=)`` reads indexes,
    foreign keys, constraints, comments and options too: 12 queries on PostgreSQL, ~5 ms each
    time a process first touches a table, ~10 ms on SQLite, whose constraints are parsed from
    the table's SQL; ``create_index`` creates its index with ``checkfirst``).
    None if it does not exist; raises NotImplementedError for a column it does not build as
    SQLAlchemy would (a computed or identity column, a server default): the caller reflects
    the whole table then."""
    inspector = sa.inspect(conn)
    try:
        described = inspector.get_columns(bare, schema=in_schema)
    except sa.exc.NoSuchTableError:
        return None
    if not described:
        return None
    key = set(inspector.get_pk_constraint(bare, schema=in_schema).get('constrained_columns') or ())
    columns = []
    for d in cast(list[dict[str, Any]], described):  # which keys are there depends on the dialect
        if d.get('computed') or d.get('identity') or d.get('default') is not None:
            raise NotImplementedError(f'column {d["name"]!r} of {bare!r} is not a plain column')
        kwargs = {k: d[k] for k in _COLUMN_KEYWORDS if k in d}
        columns.append(sa.Column(d['name'], d['type'], primary_key=d['name'] in key, **kwargs))
    return sa.Table(bare, metadata, *columns, schema=in_schema)


# ----- the value policy: what each column type takes ---------------------------------------
_BYTES_TYPES = frozenset({bytes, bytearray, memoryview})
_NO_CHECK = None


def _accepted(column_type: sa.types.TypeEngine[Any]) -> frozenset[type] | None:
    """The Python types a column stores so that they read back equal, or None: not checked."""
    if isinstance(column_type, sa.Boolean):
        return frozenset({bool})
    if isinstance(column_type, sa.Integer):
        return frozenset({int})
    if isinstance(column_type, sa.Float):
        return frozenset({float, int})  # an int is widened exactly (up to 2**53)
    if isinstance(column_type, sa.Numeric):
        return frozenset({decimal.Decimal, int, float})
    if isinstance(column_type, (sa.String, sa.Enum)):
        return frozenset({str})
    if isinstance(column_type, sa.LargeBinary):
        return _BYTES_TYPES
    if isinstance(column_type, (Instant, sa.DateTime)):
        return frozenset({datetime.datetime})
    if isinstance(column_type, sa.Date):
        return frozenset({datetime.date})
    if isinstance(column_type, sa.Time):
        return frozenset({datetime.time})
    if isinstance(column_type, sa.Uuid):
        return frozenset({uuid.UUID, str})
    return _NO_CHECK  # JSON takes any JSON value; other types as the driver does


def check_values(
    table: str,
    columns: dict[str, sa.types.TypeEngine[Any]],
    documents: Sequence[dict[str, Any]],
) -> None:
    """Refuse, before anything is written, a value its column would not give back as it was.

    ``columns`` maps each written field to its column's type (existing, or the one a new
    column will get). Raises :class:`InvalidValue` naming the field, the first such
    document and the fix. Costs one pass over each column's values.
    """
    for name, column_type in columns.items():
        accepted = _accepted(column_type)
        if accepted is None:
            continue
        kinds = {type(doc.get(name)) for doc in documents}
        kinds.discard(type(None))
        if kinds <= accepted:
            if datetime.datetime in kinds:
                _check_time_zones(table, name, column_type, documents)
            continue
        bad = next(kind for kind in kinds if kind not in accepted)
        row = next(i for i, doc in enumerate(documents) if type(doc.get(name)) is bad)
        wanted = ' or '.join(sorted(t.__name__ for t in accepted))
        raise InvalidValue(
            f'Field {name!r} of {table!r} holds a {bad.__name__} (document {row}), but its column '
            f'stores {wanted} values ({column_type.__class__.__name__}); a {bad.__name__} would not '
            f'read back as written, and filters on it would miss. Convert the value (e.g. '
            f'{sorted(accepted, key=lambda t: t.__name__)[0].__name__}(value)), or store it in '
            'another field.',
            field=name,
            row=row,
        )


def _check_time_zones(
    table: str, name: str, column_type: sa.types.TypeEngine[Any], documents: Sequence[dict[str, Any]]
) -> None:
    instants = isinstance(column_type, Instant) or bool(getattr(column_type, 'timezone', False))
    for row, doc in enumerate(documents):
        value = doc.get(name)
        if value is None or (value.utcoffset() is not None) == instants:
            continue
        if instants:
            raise InvalidValue(
                f'Field {name!r} of {table!r} holds a datetime without a time zone (document '
                f'{row}); its column stores points in time (returned in UTC). Give it a zone, '
                'e.g. value.replace(tzinfo=datetime.timezone.utc) or value.astimezone().',
                field=name,
                row=row,
            )
        raise InvalidValue(
            f'Field {name!r} of {table!r} holds a datetime with a time zone (document {row}); its '
            'column (an existing one) stores local times without a zone. Convert it first, '
            'e.g. value.astimezone(zone).replace(tzinfo=None).',
            field=name,
            row=row,
        )


# ----- the sizes a database takes ------------------------------------------------------------
_SIZED = (bytes, bytearray, memoryview, str)
#: the bytes a MySQL string literal escapes with a backslash (PyMySQL's escape_string)
_ESCAPED = (b"'", b'"', b'\\', b'\0', b'\n', b'\r', b'\x1a')
#: room left in a statement for its text and the row's small values (numbers, keys, dates)
HEADROOM = 64 * 1024


@dataclass(frozen=True)
class SizeLimit:
    """The most one row (or one value) may take on a database, as its driver sends it.

    ``bytes_as_hex``: bytes go as hex text, twice their size (PyMySQL); ``escaped_text``:
    strings go as escaped literals (a quote or backslash takes two bytes); ``per_value``: the
    limit holds for each value on its own (PostgreSQL's 1 GB field), not for the whole row.
    """

    limit: int
    what: str
    fix: str
    bytes_as_hex: bool = False
    escaped_text: bool = False
    per_value: bool = False

    def largest_bytes(self) -> int:
        """The most bytes one value of a row may hold (the row's other values being small):
        the size of the chunks a large artifact is stored in."""
        return (self.limit - 2 * HEADROOM) // (2 if self.bytes_as_hex else 1)

    def sent(self, value: Any) -> int:
        """The bytes ``value`` takes in a statement (0 for the small ones: numbers, dates)."""
        if isinstance(value, str):
            encoded = value.encode()
            if not self.escaped_text:
                return len(encoded)
            return len(encoded) + sum(encoded.count(c) for c in _ESCAPED)  # one backslash each
        if isinstance(value, (bytes, bytearray, memoryview)):
            size = value.nbytes if isinstance(value, memoryview) else len(value)
            return size * (2 if self.bytes_as_hex else 1)
        return 0

    def _worst(self, value: Any) -> int:
        """A quick upper bound of :meth:`sent` (no encoding, no scan)."""
        if isinstance(value, str):
            return len(value) * 4 * (2 if self.escaped_text else 1)
        if isinstance(value, memoryview):
            return value.nbytes * (2 if self.bytes_as_hex else 1)
        return len(value) * (2 if self.bytes_as_hex else 1)


_SMALLER = 'Store smaller values (a large file: its path or URL here, the bytes elsewhere)'


def size_limit(dialect: str, read: Callable[[Callable[[sa.Connection], Any]], Any]) -> SizeLimit | None:
    """The most one row may take on a database, as its driver sends it; None: no limit known.

    MariaDB/MySQL: the server's ``max_allowed_packet`` (16 MiB by default; PyMySQL sends
    bytes as hex, so a value of 8 MiB does not fit). SQLite: its longest string, BLOB or
    row (``SQLITE_MAX_LENGTH``). PostgreSQL: a field's 1 GB. ``read(run)`` runs
    ``run(connection)`` on one of the database's connections.
    """
    if dialect == 'mysql':
        packet = int(read(lambda conn: conn.execute(sa.text('SELECT @@max_allowed_packet')).scalar_one()))
        return SizeLimit(
            packet,
            what=f"the server's max_allowed_packet ({packet} bytes; bytes are sent as hex, twice their size)",
            fix=(
                f'{_SMALLER}, or raise max_allowed_packet on the server (SET GLOBAL max_allowed_packet '
                '= 1073741824, or max_allowed_packet = 1G under [mysqld] in its configuration) and '
                'restart this process.'
            ),
            bytes_as_hex=True,
            escaped_text=True,
        )
    if dialect == 'sqlite':
        import sqlite3

        def longest(conn: sa.Connection) -> int:
            return int(conn.connection.driver_connection.getlimit(sqlite3.SQLITE_LIMIT_LENGTH))  # type: ignore[union-attr]

        length = int(read(longest))
        return SizeLimit(length, what=f"SQLite's longest row ({length} bytes)", fix=f'{_SMALLER}.')
    if dialect == 'postgresql':
        return SizeLimit(
            1024**3 - 1, what="PostgreSQL's largest field (1 GB)", fix=f'{_SMALLER}.', per_value=True
        )
    return None


def check_sizes(table: str, limit: SizeLimit | None, columns: Mapping[str, Iterable[Any]]) -> None:
    """Refuse, before anything is written, a row the database would not take whole.

    MariaDB/MySQL closes the connection on a statement over ``max_allowed_packet`` ("server
    has gone away", the write lost). ``columns``: each field's values, one per row (see
    :func:`document_columns`). Costs a length per text or bytes value; values are encoded or
    scanned only when a row may be near the limit. JSON values are not counted.
    """
    if limit is None or not columns:
        return
    budget = limit.limit if limit.per_value else limit.limit - HEADROOM
    widest = [_widest(limit, values) for values in columns.values()]
    if (max(widest) if limit.per_value else sum(widest)) <= budget:
        return  # the largest value of each field together would fit: every row does
    names = list(columns)
    for at, row in enumerate(zip(*columns.values())):
        sizes = [limit.sent(value) for value in row]
        if (max(sizes) if limit.per_value else sum(sizes)) > budget:
            size, name = max(zip(sizes, names))
            whole = 'a value' if limit.per_value else 'a row'
            raise InvalidValue(
                f'Field {name!r} of {table!r} (document {at}) is too large for this database: it takes '
                f'{size} bytes as sent, {whole} at most {budget} under {limit.what}. {limit.fix}',
                field=name,
                row=at,
            )


def _widest(limit: SizeLimit, values: Iterable[Any]) -> int:
    """An upper bound of the bytes the largest of ``values`` takes (0: none is text or bytes)."""
    first = next((v for v in values if v is not None), None)
    if not isinstance(first, _SIZED):
        return 0  # numbers, dates, JSON: small (a typed column holds one type: check_values)
    if isinstance(first, memoryview):
        return max((limit._worst(v) for v in values if isinstance(v, _SIZED)), default=0)
    try:  # a column of one type (check_values saw to it): lengths at C speed
        longest = max(map(len, filter(None, values)), default=0)
    except TypeError:  # a JSON column holding text and other values
        return max((limit._worst(v) for v in values if isinstance(v, _SIZED)), default=0)
    return longest * _factor(limit, first)


def _factor(limit: SizeLimit, value: Any) -> int:
    if isinstance(value, str):
        return 4 * (2 if limit.escaped_text else 1)  # UTF-8: at most 4 bytes a character
    return 2 if limit.bytes_as_hex else 1


def document_columns(documents: Sequence[dict[str, Any]], names: Sequence[str]) -> dict[str, list[Any]]:
    """:func:`check_sizes`'s columns of ``documents`` (dicts)."""
    return {name: [doc.get(name) for doc in documents] for name in names}
