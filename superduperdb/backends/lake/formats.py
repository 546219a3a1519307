"""Table formats inside a lake: plain Parquet folders, Delta Lake, Iceberg.

A table's format is told by its folder: ``_delta_log/`` makes it a Delta table (read as an
Arrow dataset of its current version, appended to with ``deltalake``: ``pip install
'superduperdb[delta]'``); ``metadata/*.metadata.json`` an Iceberg table (its current snapshot's
data files, read with ``pyiceberg``: ``pip install 'superduperdb[iceberg]'``); anything else a
folder of Parquet files.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from superduperdb.base._deps import require
from superduperdb.base.exceptions import QueryError

if TYPE_CHECKING:
    from superduperdb.backends.lake.storage import LakeStorage


def kind_of(storage: LakeStorage, table: str) -> str | None:
    """``'delta'``, ``'iceberg'``, ``'parquet'``, or None when there is no such folder."""
    if storage.exists(table, '_delta_log'):
        return 'delta'
    if storage.exists(table, 'metadata') and _iceberg_metadata(storage, table) is not None:
        return 'iceberg'
    if storage.exists(table):
        return 'parquet'
    return None


def storage_options(storage: LakeStorage) -> dict[str, str]:
    """Options for deltalake's object store, from the environment S3 clients read."""
    return object_store_options(storage.url)


def object_store_options(url: str) -> dict[str, str]:
    """Options for the Rust ``object_store`` under deltalake and LanceDB, for an ``s3://`` URL,
    from the variables every S3 client reads (``AWS_ENDPOINT_URL``, the credentials, the region)."""
    if url.split('://', 1)[0] not in ('s3', 's3a'):
        return {}
    options = {}
    for env, key in (
        ('AWS_ENDPOINT_URL', 'AWS_ENDPOINT_URL'),
        ('AWS_ACCESS_KEY_ID', 'AWS_ACCESS_KEY_ID'),
        ('AWS_SECRET_ACCESS_KEY', 'AWS_SECRET_ACCESS_KEY'),
        ('AWS_DEFAULT_REGION', 'AWS_REGION'),
        ('AWS_REGION', 'AWS_REGION'),
    ):
        if os.environ.get(env):
            options[key] = os.environ[env]
    if options.get('AWS_ENDPOINT_URL', '').startswith('http://'):
        options['AWS_ALLOW_HTTP'] = 'true'
    options.setdefault('AWS_S3_ALLOW_UNSAFE_RENAME', 'true')
    return options


# ----- Delta -----------------------------------------------------------------------
def _delta(storage: LakeStorage, table: str) -> Any:
    deltalake = require('deltalake', extra='delta', what=f'The Delta table {table!r}')
    return deltalake.DeltaTable(storage.uri(table), storage_options=storage_options(storage))


def version_of(storage: LakeStorage, table: str, kind: str) -> str:
    """The table's current version (a Delta version, an Iceberg snapshot): reads are cached by it."""
    if kind == 'delta':
        return f'delta:{_delta(storage, table).version()}'
    path = _iceberg_metadata(storage, table)
    return f'iceberg:{path}'


def delta_dataset(storage: LakeStorage, table: str) -> Any:
    """The current version of a Delta table as an Arrow dataset (DuckDB pushes filters into it)."""
    return _delta(storage, table).to_pyarrow_dataset()


def delta_append(storage: LakeStorage, table: str, data: Any, *, new_columns: bool) -> None:
    """Append ``data`` as one Delta commit (creating the table if new)."""
    deltalake = require('deltalake', extra='delta', what=f'Writing the Delta table {table!r}')
    kwargs: dict[str, Any] = {'mode': 'append', 'storage_options': storage_options(storage)}
    if new_columns:
        kwargs['schema_mode'] = 'merge'
    deltalake.write_deltalake(storage.uri(table), data, **kwargs)


def delta_files(storage: LakeStorage, table: str) -> list[str]:
    """The data files of a Delta table's current version (relative to the table)."""
    return [_relative(storage, table, uri) for uri in _delta(storage, table).file_uris()]


# ----- Iceberg ---------------------------------------------------------------------
def _iceberg_metadata(storage: LakeStorage, table: str) -> str | None:
    """The newest ``metadata/*.metadata.json`` of an Iceberg table folder, or None."""
    try:
        # refresh: s3fs keeps listings it made, and a new snapshot's file would stay unseen
        names = storage.fs.ls(storage.path(table, 'metadata'), detail=False, refresh=True)
    except (FileNotFoundError, NotADirectoryError):
        return None
    found = sorted(n for n in names if n.endswith('.metadata.json'))
    if not found:
        return None

    def number(name: str) -> tuple[int, str]:  # 00003-<uuid>.metadata.json, or v3.metadata.json
        stem = name.rsplit('/', 1)[-1]
        digits = stem.split('-', 1)[0].lstrip('v').split('.', 1)[0]
        return (int(digits) if digits.isdigit() else -1, stem)

    newest = max(found, key=number)
    return newest if storage.local else f'{storage.protocol}://{newest}'


def iceberg_files(storage: LakeStorage, table: str) -> list[str]:
    """The data files of an Iceberg table's current snapshot, as DuckDB opens them."""
    require('pyiceberg', extra='iceberg', what=f'The Iceberg table {table!r}')
    from pyiceberg.table import StaticTable

    metadata = _iceberg_metadata(storage, table)
    assert metadata is not None
    if storage.local:
        static = StaticTable.from_metadata(f'file://{metadata}')
    else:
        static = StaticTable.from_metadata(metadata, properties=_iceberg_properties(metadata))
    paths = []
    for task in static.scan().plan_files():
        if task.delete_files:
            raise QueryError(
                f'The Iceberg table {table!r} has row-level delete files, which superduperdb does not '
                'apply yet: compact the table (rewrite_data_files) and read it again.'
            )
        path = task.file.file_path
        paths.append(path.removeprefix('file://') if storage.local else path)
    if not paths:
        raise QueryError(f'The Iceberg table {table!r} has no data files yet.')
    return paths


def _iceberg_properties(url: str) -> dict[str, str]:
    """pyiceberg's FileIO settings for an ``s3://`` URL, from the variables every S3 client reads
    (pyiceberg does not read ``AWS_ENDPOINT_URL`` itself: without it, a local S3-compatible
    server's tables would be looked for on AWS)."""
    options = object_store_options(url)
    properties = {}
    for key, name in (
        ('AWS_ENDPOINT_URL', 's3.endpoint'),
        ('AWS_ACCESS_KEY_ID', 's3.access-key-id'),
        ('AWS_SECRET_ACCESS_KEY', 's3.secret-access-key'),
        ('AWS_REGION', 's3.region'),
    ):
        if key in options:
            properties[name] = options[key]
    return properties


def _relative(storage: LakeStorage, table: str, uri: str) -> str:
    base = storage.uri(table).rstrip('/') + '/'
    uri = uri.removeprefix('file://')
    return uri[len(base) :] if uri.startswith(base) else uri
