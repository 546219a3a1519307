"""Compile Mongo-style filters and sorts to SQLAlchemy Core, with MongoDB's answers.

Every condition compiles to a two-valued SQL expression (never NULL), so ``NOT``,
``$nor`` and ``$not`` keep Mongo's meaning under SQL's three-valued logic. Values are
always bound parameters and column names come only from ``table.c``; nothing from a
filter is ever formatted into SQL text.

Semantics, as on MongoDB (missing, NULL and JSON ``null`` are all "missing"):

- ``$eq None`` / ``$exists False`` match missing fields. ``$ne``, ``$nin`` and ``$not``
  are exact negations (of ``$eq``, ``$in`` and their condition), so they match missing
  fields unless what they negate does. ``$gte``/``$lte`` None are ``$eq`` None;
  ``$gt``/``$lt`` None match nothing.
- Comparisons are type-bracketed: a value only matches fields holding the same kind
  (numbers, strings, bools, bytes). ``{'price': 'x'}`` on a numeric column matches
  nothing and ``{'price': {'$ne': 'x'}}`` matches every row, as on MongoDB.
- An unknown column, or a dotted path into a non-JSON column, is a missing field.
- ``a.b.0`` where ``a`` is a JSON column extracts with the dialect's JSON functions;
  numeric parts index arrays. A JSON column filtered without a sub-path is read as a
  path with no parts (a scalar JSON value compares, an object never equals a scalar).
- Comparing with a whole document or list raises :class:`QueryError`.
- Strings compare bytewise on MySQL/MariaDB (not by a case-insensitive collation);
  elsewhere by the database's collation (bytewise on SQLite, DuckDB, ``C`` locales).

>>> import sqlalchemy as sa
>>> t = sa.Table('t', sa.MetaData(), sa.Column('a', sa.Integer), sa.Column('j', sa.JSON))
>>> print(compile_filter(t, {'a': {'$ne': 1}, 'nope': None}, 'sqlite'))
NOT (t.a IS NOT NULL AND t.a = :param_1)
"""

from __future__ import annotations

import decimal
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from superduperdb.backends.sql import keys as row_keys
from superduperdb.base import folds
from superduperdb.base.exceptions import QueryError
from superduperdb.query.filters import check_field_path, is_operator_dict, validate_filter

_COMPARISONS: dict[str, Callable[[Any, Any], Any]] = {
    '$gt': operator.gt,
    '$gte': operator.ge,
    '$lt': operator.lt,
    '$lte': operator.le,
}


def _names(number: str, string: str, boolean: str, upper: bool = False) -> dict[str, tuple[str, ...]]:
    names = {'number': number, 'str': string, 'bool': boolean}
    names.update(null='null', object='object', array='array')
    return {k: tuple((v.upper() if upper else v).split(',')) for k, v in names.items()}


#: What each dialect's JSON type function calls each kind of JSON value.
_JSON_TYPES = {
    'sqlite': _names('integer,real', 'text', 'true,false'),
    'postgresql': _names('number', 'string', 'boolean'),
    'mysql': _names('integer,unsigned integer,double,decimal', 'string', 'boolean', upper=True),
    'duckdb': _names('bigint,ubigint,hugeint,uhugeint,double', 'varchar', 'boolean', upper=True),
    'clickhousedb': {
        **_names('Int64,UInt64,Double', 'String', 'Bool'),
        'null': ('Null',),
        'object': ('Object',),
        'array': ('Array',),
    },
}
#: Mongo's sort order of kinds (missing and null sort first).
_SORT_RANK = ('number', 'str', 'object', 'array', 'bool')


@dataclass(frozen=True)
class _Field:
    """How a filter reads one field of a row."""

    #: The filter key, for error messages.
    path: str
    #: True when the field is missing or null; never NULL itself.
    missing: sa.ColumnElement[bool]
    #: The field's value as a kind ('number', 'str', ...): NULL when missing or of
    #: another kind; None when the field can never hold that kind.
    value: Callable[[str], sa.ColumnElement[Any] | None]
    nullable: bool = True


def compile_filter(table: sa.Table, flt: dict[str, Any] | None, dialect: str) -> sa.ColumnElement[bool]:
    """A ``WHERE`` clause for ``table`` selecting the rows that MongoDB would match."""
    validate_filter(flt)
    return _compile(table, flt or {}, _dialect(dialect))


def _compile(table: sa.Table, flt: dict[str, Any], dialect: str) -> sa.ColumnElement[bool]:
    clauses: list[sa.ColumnElement[bool]] = []
    for key, cond in flt.items():
        if key in ('$and', '$or', '$nor'):
            subs = [_compile(table, sub, dialect) for sub in cond]
            clause = sa.and_(*subs) if key == '$and' else sa.or_(*subs)
            clauses.append(sa.not_(clause) if key == '$nor' else clause)
        elif key == row_keys.ROW_KEY and row_keys.is_composite(table):  # the whole composite key
            clauses.append(row_keys.condition(table, cond))
        else:
            clauses.append(_condition(_field(table, key, dialect), cond))
    return sa.and_(*clauses) if clauses else sa.true()


def compile_sort(
    table: sa.Table, sort_by: Sequence[tuple[str, int]], dialect: str
) -> list[sa.ColumnElement[Any]]:
    """``ORDER BY`` terms in Mongo's order: missing/null first ascending, last descending.

    A JSON path sorts numbers < strings < objects < arrays < bools, as MongoDB does;
    an unknown column adds no term (every row ties).
    """
    dialect = _dialect(dialect)
    terms: list[sa.ColumnElement[Any]] = []
    for path, direction in sort_by:
        check_field_path(path)
        if direction not in (1, -1):
            raise QueryError(f'Sort direction for {path!r} must be 1 or -1, got {direction!r}.')
        for key in _sort_keys(table, path, dialect):
            term = key.asc() if direction == 1 else key.desc()
            if dialect != 'mysql':  # MySQL already sorts NULLs so, and has no NULLS FIRST
                term = term.nulls_first() if direction == 1 else term.nulls_last()
            terms.append(term)
    return terms


def field_expr(table: sa.Table, path: str, dialect: str, like: object = None) -> sa.ColumnElement[Any] | None:
    """The SQL expression reading ``path``; None if its top-level column does not exist.

    A plain column is returned as is. A path into a JSON column is extracted and, with
    ``like``, cast to the SQL type of that Python value (NULL where the JSON value is of
    another kind); without ``like`` it reads as text. A dotted path into a non-JSON
    column is never there: None.
    """
    check_field_path(path)
    dialect = _dialect(dialect)
    name, *parts = path.split('.')
    col = table.c.get(name)
    if col is None or _column_kind(col) != 'json':
        return None if col is None or parts else col
    if not parts and like is None:
        return col
    field = _json_field(col, path, dialect)
    if like is None:
        return sa.case((sa.not_(field.missing), _json_extract(col, parts, dialect)[1]))
    return field.value(_kind(like, path))


def _dialect(name: str) -> str:
    return 'mysql' if name == 'mariadb' else name


def _kind(value: object, path: str) -> str:
    if isinstance(value, bool):
        return 'bool'
    if isinstance(value, (int, float, decimal.Decimal)):
        return 'number'
    if isinstance(value, str):
        return 'str'
    if isinstance(value, (bytes, bytearray)):
        return 'bytes'
    if isinstance(value, (dict, list, tuple)):
        raise QueryError(
            f'Field {path!r}: comparing with a whole document or list ({value!r}) is not '
            'supported on SQL databases; filter on its parts with dotted paths ("meta.brand").'
        )
    return 'other'


def _column_kind(col: sa.ColumnElement[Any]) -> str:
    for types, kind in (
        (sa.Boolean, 'bool'),
        ((sa.Integer, sa.Numeric, sa.Float), 'number'),  # Float is no Numeric in 2.1
        (sa.String, 'str'),
        (sa.LargeBinary, 'bytes'),
        (sa.JSON, 'json'),
    ):
        if isinstance(col.type, types):
            return kind
    return 'other'


def _literal(value: Any, kind: str, x: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    types: dict[str, sa.types.TypeEngine[Any]] = {
        'bool': sa.Boolean(),
        'str': sa.String(),
        'bytes': sa.LargeBinary(),
    }
    type_: sa.types.TypeEngine[Any]
    if kind == 'number':
        type_ = sa.BigInteger() if isinstance(value, int) else sa.Double()
        type_ = sa.Numeric() if isinstance(value, decimal.Decimal) else type_
    else:
        type_ = types.get(kind, x.type)  # 'other': as the column reads it
    return sa.literal(value, type_)


def _binary(expr: sa.ColumnElement[Any], dialect: str) -> sa.ColumnElement[Any]:
    """Compare strings bytewise on MySQL, whose usual collations ignore case and padding."""
    return sa.cast(expr, sa.LargeBinary()) if dialect == 'mysql' else expr


def _field(table: sa.Table, path: str, dialect: str) -> _Field:
    name, *parts = path.split('.')
    col = table.c.get(name)
    if col is None and path == folds.FOLD:  # every row's fold, from its key (no column)
        return _fold_field(table, dialect)
    if col is None or (parts and _column_kind(col) != 'json'):
        return _Field(path, sa.true(), lambda kind: None)  # never there: always missing
    col_kind = _column_kind(col)
    if col_kind == 'json':
        return _json_field(col, path, dialect)

    def value(kind: str) -> sa.ColumnElement[Any] | None:
        if col_kind not in ('other', kind):
            return None
        return _binary(col, dialect) if kind == 'str' else col

    missing = col.is_(None) if col.nullable else sa.false()
    return _Field(path, missing, value, nullable=bool(col.nullable))


#: MD5 as lowercase hex text, by dialect; SQLite's is registered on each connection
#: (backends/connect.py), DuckDB, PostgreSQL and MySQL/MariaDB have their own.
_MD5 = {'sqlite': 'superduper_md5'}


def _fold_field(table: sa.Table, dialect: str) -> _Field:
    """``_fold`` of a table without such a column: ``'valid'`` where the key's hash is below
    the configured fraction, else ``'train'`` (:mod:`superduperdb.base.folds`), computed by the
    database in the WHERE clause so a filter on it reads no more rows than any other."""
    key = list(table.primary_key.columns) or [c for c in (table.c.get('_id'),) if c is not None]
    if not key:
        raise QueryError(
            f'Table {table.name!r} has no primary key, so its rows have no _fold. Add a _fold column '
            "('train' or 'valid') to filter on your own split, or give the table a primary key."
        )
    text: sa.ColumnElement[Any] = sa.cast(key[0], sa.String())
    for part in key[1:]:
        text = text + sa.literal(folds.SEPARATOR, sa.String()) + sa.cast(part, sa.String())
    digest = sa.func.substr(getattr(sa.func, _MD5.get(dialect, 'md5'))(text), 1, folds.DIGITS)
    fold = sa.case((digest < sa.literal(folds.threshold(), sa.String()), folds.VALID), else_=folds.TRAIN)

    def value(kind: str) -> sa.ColumnElement[Any] | None:
        return _binary(fold, dialect) if kind == 'str' else None

    return _Field(folds.FOLD, sa.false(), value, nullable=False)


def _json_extract(
    col: sa.ColumnElement[Any], parts: list[str], dialect: str
) -> tuple[sa.ColumnElement[str], sa.ColumnElement[Any]]:
    """The JSON type name and the scalar value (text, or native on SQLite) at ``parts``."""
    if dialect == 'postgresql':
        from sqlalchemy.dialects import postgresql  # not imported for other databases (~60 ms)

        path = sa.literal(parts, postgresql.ARRAY(sa.Text()))
        typeof = sa.func.jsonb_typeof if isinstance(col.type, postgresql.JSONB) else sa.func.json_typeof
        return typeof(col.op('#>')(path)), col.op('#>>', return_type=sa.Text())(path)
    if dialect not in _JSON_TYPES:
        raise QueryError(f'Filtering inside JSON columns is not supported on {dialect!r}.')
    if dialect == 'clickhousedb':  # JSONType(col, 'a', 1): keys by name, array items from 1
        args = [sa.literal(int(p) + 1) if p.isdigit() else sa.literal(p, sa.String()) for p in parts]
        ch_type: sa.ColumnElement[str] = sa.func.toString(sa.func.JSONType(col, *args))
        raw = sa.case(
            (ch_type == 'String', sa.func.JSONExtractString(col, *args)),
            else_=sa.func.JSONExtractRaw(col, *args),
        )
        return ch_type, raw
    json_path = _json_path(parts)
    if dialect == 'mysql':
        extracted = sa.func.json_extract(col, json_path)
        jtype: sa.ColumnElement[str] = sa.func.json_type(extracted)
        # MySQL reads a scalar as a one-item array ('$.x[0]' is x); MongoDB does not.
        arrays = [
            sa.func.json_type(sa.func.json_extract(col, _json_path(parts[:i]))) == 'ARRAY'
            for i, part in enumerate(parts)
            if part.isdigit()
        ]
        if arrays:
            jtype = sa.case((sa.and_(*arrays), jtype))
        return jtype, sa.func.json_unquote(extracted)
    text = sa.func.json_extract if dialect == 'sqlite' else sa.func.json_extract_string
    return sa.func.json_type(col, json_path), text(col, json_path)


def _json_path(parts: list[str]) -> sa.ColumnElement[str]:
    """A bound '$."a"[0]' path; parts are checked names or digits (no quotes)."""
    return sa.literal('$' + ''.join(f'[{p}]' if p.isdigit() else f'."{p}"' for p in parts), sa.String())


def _json_field(col: sa.ColumnElement[Any], path: str, dialect: str) -> _Field:
    jtype, jtext = _json_extract(col, path.split('.')[1:], dialect)
    names = _JSON_TYPES[dialect]

    def value(kind: str) -> sa.ColumnElement[Any] | None:
        if kind not in ('number', 'str', 'bool'):
            return None
        typed: sa.ColumnElement[Any]
        if kind == 'number':
            typed = sa.cast(jtext, sa.Double())
        elif kind == 'str':
            typed = _binary(jtext, dialect)
        else:  # SQLite's json_extract gives 1/0 for booleans; its json_type says which
            typed = jtype == 'true' if dialect == 'sqlite' else jtext == 'true'
        return sa.case((jtype.in_(names[kind]), typed))

    return _Field(path, sa.or_(jtype.is_(None), jtype.in_(names['null'])), value)


def _condition(field: _Field, cond: Any) -> sa.ColumnElement[bool]:
    if not is_operator_dict(cond):
        return _eq(field, cond)
    return sa.and_(*(_operator(field, op, arg) for op, arg in cond.items()))


def _operator(field: _Field, op: str, arg: Any) -> sa.ColumnElement[bool]:
    if op == '$eq':
        return _eq(field, arg)
    if op == '$ne':
        return sa.not_(_eq(field, arg))
    if op == '$in':
        return _in(field, arg)
    if op == '$nin':
        return sa.not_(_in(field, arg))
    if op == '$exists':
        return sa.not_(field.missing) if arg else field.missing
    if op == '$not':
        return sa.not_(_condition(field, arg))
    if arg is None:  # MongoDB: $gte/$lte null are $eq null; $gt/$lt null match nothing
        return field.missing if op in ('$gte', '$lte') else sa.false()
    kind = _kind(arg, field.path)
    x = field.value(kind)
    if x is None:
        return sa.false()
    return _present(field, x, _COMPARISONS[op](x, _literal(arg, kind, x)))


def _present(field: _Field, x: sa.ColumnElement[Any], cond: Any) -> sa.ColumnElement[bool]:
    """``cond``, made FALSE instead of NULL where ``x`` is NULL."""
    return sa.and_(x.is_not(None), cond) if field.nullable else cond


def _eq(field: _Field, value: Any) -> sa.ColumnElement[bool]:
    if value is None:
        return field.missing
    return _in(field, [value])


def _in(field: _Field, values: Sequence[Any]) -> sa.ColumnElement[bool]:
    clauses = [field.missing] if any(v is None for v in values) else []
    by_kind: dict[str, list[Any]] = {}
    for v in values:
        if v is not None:
            by_kind.setdefault(_kind(v, field.path), []).append(v)
    for kind, group in by_kind.items():
        x = field.value(kind)
        if x is not None:
            if len(group) == 1:
                match = x == _literal(group[0], kind, x)
            else:
                # one expanding parameter for the whole list: a 1000-id $in compiles once
                type_ = _literal(max(group, key=lambda v: isinstance(v, float)), kind, x).type
                match = x.in_(sa.bindparam(None, list(group), expanding=True, type_=type_))
            clauses.append(_present(field, x, match))
    return sa.or_(*clauses) if clauses else sa.false()


def _sort_keys(table: sa.Table, path: str, dialect: str) -> list[sa.ColumnElement[Any]]:
    if path == row_keys.ROW_KEY and row_keys.is_composite(table):
        return list(row_keys.key_columns(table))
    name, *parts = path.split('.')
    col = table.c.get(name)
    kind = None if col is None else _column_kind(col)
    if col is None or (parts and kind != 'json'):
        return []  # never there: every row ties
    if kind != 'json':
        return [_binary(col, dialect) if kind == 'str' else col]
    jtype, _ = _json_extract(col, parts, dialect)
    names = _JSON_TYPES[dialect]
    field = _json_field(col, path, dialect)
    rank = sa.case(*((jtype.in_(names[k]), i) for i, k in enumerate(_SORT_RANK, 1)), else_=0)
    keys = [field.value(k) for k in ('number', 'str', 'bool')]
    return [rank, *(k for k in keys if k is not None)]
