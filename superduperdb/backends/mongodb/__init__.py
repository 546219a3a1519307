"""The MongoDB backend (pymongo; mongomock in tests): data access (``backend.py``) and change
capture through change streams or polling (``cdc.py``).

The query objects users import as ``superduperdb.datalayer.mongodb.Collection`` live in
:mod:`superduperdb.query.objects`.
"""
