"""MongoDB backend (pymongo; mongomock for tests). Re-exports the query objects.

The import path the seed's examples use; the MongoDB backend itself lives in
:mod:`superduperdb.backends.mongodb`.

>>> from superduperdb.datalayer.mongodb import Collection
>>> Collection('docs').find({'a': 1})
Find(table='docs', filter={'a': 1})
"""

from superduperdb.query.objects import Collection, Table

__all__ = ['Collection', 'Table']
