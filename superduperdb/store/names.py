"""Names a query uses must exist: a typo is an error with a suggestion, not an empty result.

On SQL databases a table has fixed columns, so a query naming a table or a column that is
not there (``find``, ``find_one``, ``count``, ``update_*``, ``delete_*``: the filter, sort
and projection) is refused with a :class:`~superduperdb.base.exceptions.QueryError` that
says "did you mean". Inserting still creates tables (and, in tables superduperdb made,
columns). The names are checked against the table as reflected once and cached: no query
per call (the table is reflected again only before an error, in case another program just
added the column).

On MongoDB documents have no fixed fields, so queries are not checked; the input key of a
``predict``/``fit`` is (:func:`check_input_keys`): a key no document has is refused before
the run starts, with suggestions from a sample of the keys that documents do have.

>>> from superduperdb import superduper, Collection
>>> db = superduper('sqlite:///:memory:')
>>> _ = db.execute(Collection('people').insert_one({'name': 'Ada', 'age': 36}))
>>> db.execute(Collection('peple').count())
Traceback (most recent call last):
...
superduperdb.base.exceptions.QueryError: Table 'peple' does not exist. Did you mean 'people'? ...
>>> db.execute(Collection('people').find({'nmae': 'Ada'}))  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
superduperdb.base.exceptions.QueryError: Unknown column 'nmae' in the filter on table 'people'. Did...
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from superduperdb.backends.sql.keys import ROW_KEY
from superduperdb.base.exceptions import QueryError
from superduperdb.query import objects as query
from superduperdb.query.filters import is_internal

if TYPE_CHECKING:
    from superduperdb.backends.base import DataBackend

#: Fields every document has, whatever its table's columns: model outputs read back with it.
_ALWAYS = frozenset({'_outputs', '_fold'})  # _fold: derived from the key (base/folds.py)
#: Documents read to suggest keys on a backend without a schema.
_SAMPLE = 100


def suggest(name: str, candidates: Iterable[str]) -> str:
    """`` Did you mean 'x'?`` for the closest of ``candidates``, or ``''``.

    >>> suggest('nmae', ['name', 'age'])
    " Did you mean 'name'?"
    """
    close = difflib.get_close_matches(name, list(candidates), n=2, cutoff=0.6)
    if not close:
        return ''
    return ' Did you mean ' + ' or '.join(repr(c) for c in close) + '?'


def check_query(backend: DataBackend, q: Any) -> None:
    """Refuse a read, update or delete naming a table or column ``backend`` lacks (SQL only)."""
    if not backend.has_schema or isinstance(q, query.Insert):
        return
    if not isinstance(q, query.Query):
        return  # coll.like(...) alone: the vector index says which table it indexes
    if getattr(q, 'similar', None) is not None and backend.columns(q.table) is None:
        return  # likewise
    used: list[tuple[str, str]] = [(f, 'filter') for f in filter_fields(getattr(q, 'filter', None))]
    if isinstance(q, query.Find):
        used += [(path, 'sort') for path, _ in q.sort_by]
        used += [(path, 'projection') for path in q.projection or {}]
    check_columns(backend, q.table, used)


def table_columns(backend: DataBackend, table: str, *, refresh: bool = False) -> list[str]:
    """The columns of ``table``; a QueryError naming the tables there are if it does not exist."""
    columns = backend.columns(table, refresh=refresh)
    if columns is not None:
        if backend.primary_key(table) == ROW_KEY:  # a composite key, read as one field too
            return [*columns, ROW_KEY]
        return columns
    tables = [t for t in backend.list_tables() if not is_internal(t)]
    listed = ', '.join(tables[:20]) + (', ...' if len(tables) > 20 else '') if tables else 'none yet'
    raise QueryError(
        f'Table {table!r} does not exist.{suggest(table, tables)} Tables: {listed}. '
        '(Inserting into a table creates it.)'
    )


def check_columns(backend: DataBackend, table: str, used: list[tuple[str, str]]) -> None:
    """Refuse the first of ``used`` ((field path, where it is used)) whose column ``table`` lacks."""
    columns = table_columns(backend, table)
    missing = [(path, where) for path, where in used if not _known(path, columns)]
    if not missing:
        return
    columns = table_columns(backend, table, refresh=True)  # another program may have added it
    for path, where in missing:
        if not _known(path, columns):
            name = path.split('.')[0]
            raise QueryError(
                f'Unknown column {name!r} in the {where} on table {table!r}.{suggest(name, columns)} '
                f'Columns: {", ".join(columns)}.'
            )


def _known(path: str, columns: list[str]) -> bool:
    name = path.split('.')[0]
    return name in columns or name in _ALWAYS


def filter_fields(flt: dict[str, Any] | None) -> Iterator[str]:
    """The field paths a Mongo-style filter names (through ``$and``/``$or``/``$nor``/``$not``)."""
    for key, cond in (flt or {}).items():
        if key in ('$and', '$or', '$nor'):
            for sub in cond if isinstance(cond, list) else []:
                yield from filter_fields(sub if isinstance(sub, dict) else None)
        elif not key.startswith('$'):
            yield key


def check_input_keys(
    backend: DataBackend,
    table: str,
    keys: Iterable[str],
    *,
    filter: dict[str, Any] | None = None,
    what: str = 'X',
    missing_table_ok: bool = False,
) -> None:
    """Refuse a ``predict``/``fit`` input key no row has, before the run starts.

    SQL: against the table's columns (no query). MongoDB: a key no document has (a query per
    key, stopping at the first document that has it) is refused, with suggestions from a
    sample of the keys documents have; an empty collection is not refused (its documents are
    yet to come).
    """
    keys = [k for k in keys if k != '_base']
    if not keys:
        return
    if backend.has_schema:
        if missing_table_ok and backend.columns(table) is None:
            return
        check_columns(backend, table, [(k, f'{what}= key') for k in keys])
        return
    for key in keys:
        if any(backend.find(table, {key: {'$exists': True}}, projection={'_id': 1}, limit=1, chunk_size=1)):
            continue  # one document has it (a find stops at the first; a count would scan them all)
        seen: dict[str, None] = {}
        for chunk in backend.find(table, filter or {}, limit=_SAMPLE, chunk_size=_SAMPLE):
            for doc in chunk:
                seen.update(dict.fromkeys(_paths(doc)))
        if not seen:
            return  # nothing to compare with yet
        shown = [k for k in seen if '.' not in k][:30]
        raise QueryError(
            f'No document of {table!r} has the key {key!r} ({what}=).{suggest(key, seen)} '
            f'Keys of its documents include: {", ".join(shown)}.'
        )


def _paths(doc: dict[str, Any], prefix: str = '') -> Iterator[str]:
    for key, value in doc.items():
        if key == '_outputs':
            continue
        yield prefix + key
        if isinstance(value, dict) and len(prefix) < 200:
            yield from _paths(value, f'{prefix}{key}.')


def check_row_key(backend: DataBackend, table: str) -> None:
    """Refuse to predict over a SQL table whose key cannot key its outputs, before anything runs.

    Outputs are keyed by the row's whole primary key; a composite key is read as one value
    (``_key``, see :mod:`superduperdb.backends.sql.keys`) when its columns are integers or
    strings. The reflected, cached table: no query.
    """
    t = backend.table(table) if backend.has_schema else None
    if t is not None and len(t.primary_key.columns) > 1:
        from superduperdb.backends.sql.keys import check_composite

        check_composite(t)
