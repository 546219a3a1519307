"""MongoDB backend (pymongo; mongomock for tests). Re-exports the query objects.

>>> from superduperdb.datalayer.mongodb import Collection
>>> Collection('docs').find({'a': 1})
Find(table='docs', filter={'a': 1})
"""

from superduperdb.datalayer.query import Collection, Table

__all__ = ['Collection', 'Table']
