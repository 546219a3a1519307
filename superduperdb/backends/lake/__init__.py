"""A data lake as a datalayer: a folder of tables on the local disk or in object storage.

``superduper('file:///data/lake')``, ``superduper('s3://bucket/lake')`` (any fsspec protocol)
open a *lake*: every sub-folder of the root is a table, and a table is one of

- a folder of Parquet files (hive partition folders ``key=value/`` allowed), the default;
- a Delta Lake table (a folder with ``_delta_log/``), read and appended to through ``deltalake``;
- an Iceberg table (a folder with ``metadata/*.metadata.json``), read through ``pyiceberg``.

Reads go through an in-process DuckDB connection over the table's files (projection, filters
and partition pruning pushed down), with the filters compiled by the same compiler as on SQL
databases (:mod:`superduperdb.backends.sql.compiler`), so the answers are the same. Writes
append a new Parquet file (or a Delta commit). superduperdb's own tables in the lake (model
outputs, ``_superduper_out_*``) are Parquet tables like the others, readable by any engine.
The metadata store (components, jobs, change-capture positions) lives in a small SQLite file
``<root>/_superduper/metadata.db`` for local lakes, or wherever ``metadata_store`` says.

Modules: ``storage.py`` (listing and writing files, local or fsspec), ``backend.py``
(:class:`~superduperdb.backends.lake.backend.LakeBackend`), ``formats.py`` (Delta, Iceberg),
``cdc.py`` (change capture by file listing). See docs/lakes.md.
"""
