"""``superduper(x)``: the one entry point that turns what you have into superduperdb objects."""

from __future__ import annotations

from typing import Any

from superduperdb.base.exceptions import ConfigError


def superduper(item: Any = None) -> Any:
    """Wrap ``item``: a database becomes a Datalayer.

    - ``superduper()``: the embedded default (a SQLite file under ``./.superduperdb``);
    - a URI: ``'sqlite:///my.db'``, ``'duckdb:///my.duckdb'``, ``'postgresql://user@host/db'``,
      ``'mysql://user@host/db'``, ``'mongodb://host/db'``, ``'mongomock://name'``;
    - an SQLAlchemy ``Engine``, a ``pymongo`` Database, a mongomock Database.

    >>> db = superduper('sqlite:///:memory:')
    >>> db.databackend.name
    'sqlite'
    """
    if item is None or isinstance(item, str) or _is_database(item):
        from superduperdb.datalayer.connect import connect

        return connect(item)
    raise ConfigError(
        f'superduper() does not know how to wrap a {type(item).__module__}.{type(item).__qualname__}. '
        'It takes a database URI, an SQLAlchemy Engine or a pymongo Database.'
    )


def _is_database(item: Any) -> bool:
    module = type(item).__module__.split('.')[0]
    return module in ('sqlalchemy', 'pymongo', 'mongomock')
