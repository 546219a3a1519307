"""The database's errors as superduperdb's, in one place.

Every statement of the SQL backend runs through SQLAlchemy, and a few on the driver's own
cursor (COPY, executemany, lookups by key), so a failure arrives as a SQLAlchemy error or as
the driver's DB-API error. :func:`map_driver_errors` turns either into superduperdb's own
(:class:`~superduperdb.base.exceptions.BackendError`, :class:`WriteFailed`), as httpx's
``map_httpcore_exceptions`` does for httpcore's: the message names what failed and ends with
the database's own words (:func:`reason`), never the statement (it may hold data).

A read or write whose cached table definition another program changed meanwhile raises
:class:`TableChanged`; :func:`again_if_changed` runs such a method once more.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import sqlalchemy as sa

from superduperdb.base.exceptions import BackendError, WriteFailed

_M = TypeVar('_M', bound=Callable[..., Any])

#: Builds superduperdb's error from a message (``'<what failed>: <reason>'``) and the driver's error.
ErrorFor = Callable[[str, Exception], Exception]


class TableChanged(BackendError):
    """A read failed because a table changed under its cached definition (now forgotten)."""


class TableChangedOnWrite(TableChanged, WriteFailed):
    """A write was rolled back because a table changed under its cached definition."""


def again_if_changed(method: _M) -> _M:
    """Run a read or write method once more when a table changed under it
    (:class:`TableChanged`; a write was rolled back): the second run reads the table's
    definition again. A generator is run again only when
    the change shows on its first page, before anything was returned."""
    if inspect.isgeneratorfunction(method):

        @functools.wraps(method)
        def pages(*args: Any, **kwargs: Any) -> Iterator[Any]:
            found = method(*args, **kwargs)
            try:
                first = next(found)
            except StopIteration:
                return
            except TableChanged:
                found = method(*args, **kwargs)
                first = next(found, _NONE)
                if first is _NONE:
                    return
            yield first
            yield from found

        return pages  # type: ignore[return-value]

    @functools.wraps(method)
    def once(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except TableChanged:
            return method(*args, **kwargs)

    return once  # type: ignore[return-value]


_NONE = object()


@contextlib.contextmanager
def map_driver_errors(what: str, to: ErrorFor, *, driver: type[Exception] | None = None) -> Iterator[None]:
    """Raise ``to(f'{what}: {reason}', error)`` from a SQLAlchemy error of the block, and from
    the driver's own ``driver`` errors (its DB-API ``Error``, for statements run on its cursor).

    >>> with map_driver_errors('Query failed', query_failed):
    ...     raise sa.exc.OperationalError('SELECT 1', {}, Exception('server gone\\nat line 1'))
    Traceback (most recent call last):
    ...
    superduperdb.base.exceptions.BackendError: Query failed: server gone
    """
    caught: tuple[type[Exception], ...] = (sa.exc.SQLAlchemyError,)
    if driver is not None:
        caught += (driver,)
    try:
        yield
    except caught as exc:
        raise to(f'{what}: {reason(exc)}', exc) from exc


def query_failed(message: str, exc: Exception) -> BackendError:
    """A statement failed (nothing to roll back, or nothing said about it)."""
    return BackendError(message)


def write_failed(message: str, exc: Exception) -> WriteFailed:
    """A write failed and was rolled back; ``reason``: the database's own words."""
    return WriteFailed(message, reason=reason(exc))


#: SQLSTATEs and MySQL/MariaDB error numbers of a column or table that is not there
_UNDEFINED_STATES = frozenset({'42703', '42P01'})
_UNDEFINED_MYSQL = frozenset({1054, 1146})


def schema_change(exc: BaseException | None) -> str | None:
    """What a failed read says changed under this process's cached statements: ``'plan'``
    (PostgreSQL: a prepared statement whose result columns changed type), ``'definition'``
    (a column or table of a cached table definition is gone), or None. superduperdb's
    statements name only columns read from the table's definition, so a missing column
    means the definition is out of date, not a mistake in the query."""
    orig = getattr(exc, 'orig', None) or exc
    text = str(orig).lower()
    state = getattr(orig, 'sqlstate', None)
    if state == '0A000' and 'cached plan' in text:
        return 'plan'
    if state in _UNDEFINED_STATES:
        return 'definition'
    args = getattr(orig, 'args', ())
    if args and isinstance(args[0], int) and args[0] in _UNDEFINED_MYSQL:
        return 'definition'
    if type(orig).__module__.startswith('sqlite3') and ('no such column' in text or 'no such table' in text):
        return 'definition'
    if type(orig).__name__ in ('BinderException', 'CatalogException') and (
        'not found' in text or 'does not have a column' in text or 'does not exist' in text
    ):  # DuckDB
        return 'definition'
    return None


def reason(exc: Exception) -> str:
    """The driver's own message, without SQLAlchemy's statement dump (it may hold data)."""
    orig = getattr(exc, 'orig', None)
    return str(orig if orig is not None else exc).strip().splitlines()[0]
