"""Where a lake's files are: listing tables and files, writing and removing files.

One fsspec filesystem for every root (the local disk included), so a local folder and a
bucket behave the same. Object storage needs its fsspec package (``s3fs`` for ``s3://``:
``pip install 'superduperdb[s3]'``); credentials and endpoints come from the usual places
(for S3: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL``, ...).
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from superduperdb.base._deps import require
from superduperdb.base.exceptions import ConfigError, MissingDependencyError

#: The folder inside a lake's root that holds superduperdb's own files (metadata, artifacts).
INTERNAL = '_superduper'
#: fsspec packages, by protocol, and the extra that installs each
_PACKAGES = {'s3': ('s3fs', 's3'), 's3a': ('s3fs', 's3')}


@dataclass(frozen=True)
class DataFile:
    """One data file of a table, as listed now: what change capture compares between listings."""

    path: str  # relative to the table's folder
    size: int
    version: str  # the etag in object storage, the modification time on a disk

    def key(self) -> list[Any]:
        return [self.size, self.version]


class LakeStorage:
    """The lake root ``url`` (``file:///dir``, ``s3://bucket/prefix``, or a plain path)."""

    def __init__(self, url: str) -> None:
        fsspec = require('fsspec', extra='lake', what=f'The lake {url!r}')
        protocol = url.split('://', 1)[0].lower() if '://' in url else 'file'
        package = _PACKAGES.get(protocol)
        if package is not None:  # other protocols: fsspec names their package when it is missing
            require(package[0], extra=package[1], what=f'The lake {url!r}')
        try:
            self.fs, root = fsspec.core.url_to_fs(url)
        except (ImportError, ValueError) as exc:
            if isinstance(exc, MissingDependencyError):
                raise
            raise ConfigError(
                f'Cannot open the lake {url!r}: {exc}. Use a folder (file:///data/lake) or an '
                'object-storage URL whose fsspec package is installed (s3://bucket/lake needs '
                "pip install 'superduperdb[s3]')."
            ) from exc
        self.protocol = 'file' if protocol in ('file', 'local') else protocol
        self.local = self.protocol == 'file'
        if self.local:
            root = str(Path(root).expanduser().resolve())
        self.root = root.rstrip('/')
        self.url = f'file://{self.root}' if self.local else f'{self.protocol}://{self.root}'

    def __repr__(self) -> str:
        return f'LakeStorage({self.url!r})'

    # ----- paths -------------------------------------------------------------------
    def path(self, *parts: str) -> str:
        """The filesystem path of ``parts`` under the root (no protocol)."""
        return '/'.join([self.root, *parts])

    def uri(self, *parts: str) -> str:
        """The URL of ``parts`` under the root, as another engine opens it."""
        path = self.path(*parts)
        return path if self.local else f'{self.protocol}://{path}'

    def ensure_root(self) -> None:
        if self.local:
            self.fs.makedirs(self.root, exist_ok=True)
        elif not self.fs.exists(self.root.split('/')[0]):
            raise ConfigError(
                f'The bucket of the lake {self.url!r} does not exist or cannot be reached. Create it '
                '(aws s3 mb s3://bucket), or check AWS_ENDPOINT_URL and the credentials.'
            )

    # ----- listing -----------------------------------------------------------------
    def table_folders(self) -> list[str]:
        """Names of the folders directly under the root (superduperdb's own folder left out)."""
        try:
            entries = self.fs.ls(self.root, detail=True, refresh=True)
        except FileNotFoundError:
            return []
        names = []
        for entry in entries:
            if entry.get('type') != 'directory':
                continue
            name = entry['name'].rstrip('/').rsplit('/', 1)[-1]
            if name != INTERNAL and not name.startswith('.'):
                names.append(name)
        return sorted(names)

    def exists(self, *parts: str) -> bool:
        return bool(self.fs.exists(self.path(*parts)))

    def files(self, table: str) -> list[DataFile]:
        """The Parquet files of ``table``'s folder (partition folders included), by path."""
        base = self.path(table)
        try:
            found = self.fs.find(base, detail=True, withdirs=False)
        except FileNotFoundError:
            return []
        files = []
        for name, info in found.items():
            rel = name[len(base) :].lstrip('/')
            if not rel.endswith('.parquet') or any(p.startswith(('.', '_')) for p in rel.split('/')):
                continue  # hidden, temporary (.part-...) and bookkeeping files (_SUCCESS, _delta_log)
            version = info.get('ETag') or info.get('etag') or info.get('mtime') or info.get('LastModified')
            if hasattr(version, 'timestamp'):
                version = version.timestamp()
            files.append(DataFile(rel, int(info.get('size') or 0), str(version)))
        return sorted(files, key=lambda f: f.path)

    # ----- writing -----------------------------------------------------------------
    def new_file_name(self) -> str:
        """A file name that sorts after the names made before it (time first)."""
        return f'part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet'

    def write_parquet(self, table: str, data: Any, name: str | None = None) -> str:
        """Write the Arrow table ``data`` as a new file of ``table``; its name. Readers never see
        a partial file: on a disk it is written under a hidden name and renamed, and an object
        store shows an object only once its upload is complete."""
        import pyarrow.parquet as pq

        name = name or self.new_file_name()
        target = f'{self.path(table)}/{name}'
        folder, base = target.rsplit('/', 1)
        if self.local:
            os.makedirs(folder, exist_ok=True)
            partial = f'{folder}/.{base}.{uuid.uuid4().hex[:6]}.tmp'
            pq.write_table(data, partial, compression='zstd')
            os.replace(partial, target)
        else:
            with self.fs.open(target, 'wb') as f:
                pq.write_table(data, f, compression='zstd')
        return name

    def remove(self, table: str, name: str) -> None:
        self.fs.rm_file(self.path(table, name))

    def remove_table(self, table: str) -> None:
        if self.fs.exists(self.path(table)):
            self.fs.rm(self.path(table), recursive=True)

    def metadata_path(self) -> str | None:
        """The SQLite metadata file for this lake by default: inside the root on a disk; for
        object storage, a local file per lake under ``~/.cache/superduperdb/lakes`` (set
        ``metadata_store`` to a database URI to share one between machines)."""
        if self.local:
            return str(Path(self.root) / INTERNAL / 'metadata.db')
        digest = hashlib.sha256(self.url.encode()).hexdigest()[:16]
        cache = Path(os.environ.get('XDG_CACHE_HOME') or Path.home() / '.cache')
        return str(cache / 'superduperdb' / 'lakes' / digest / 'metadata.db')
