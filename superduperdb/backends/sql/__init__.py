"""The SQL backend: data access (``backend.py``), filters compiled to SQL (``compiler.py``),
column types and the value policy (``schema.py``), change capture (``cdc.py``).

The query objects users import as ``superduperdb.datalayer.sql.Table`` live in
:mod:`superduperdb.query.objects`.
"""
