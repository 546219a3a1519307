"""SQL backend (SQLite, PostgreSQL, MySQL/MariaDB, DuckDB). Re-exports the query objects.

The import path the seed's examples use; the SQL backend itself lives in
:mod:`superduperdb.backends.sql`.

``Table`` and ``Collection`` are the same class: one query language on every backend.

>>> from superduperdb.datalayer.sql import Table
>>> Table('orders').count({'status': 'open'})
Count(table='orders', filter={'status': 'open'})
"""

from superduperdb.query.objects import Collection, Table

__all__ = ['Collection', 'Table']
