"""Artifact stores: the heavy parts of components (weights, pickled functions).

Artifacts are content-addressed: the key is the SHA-256 of the bytes, so
saving the same bytes twice stores them once and a key never goes stale. A key is
64 lowercase hex digits and nothing else: keys come from stored records, which
another program sharing the database could forge, so a path (``/etc/passwd``,
``../x``) is refused before any store is asked (docs/security.md).

>>> import tempfile
>>> store = FileSystemArtifactStore(tempfile.mkdtemp())
>>> key = store.put(b'weights')
>>> store.get(key)
b'weights'
"""

from __future__ import annotations

import abc
import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from superduperdb.base.exceptions import ComponentError, ConfigError

if TYPE_CHECKING:
    from superduperdb.backends.base import DataBackend


_KEY = re.compile(r'^[0-9a-f]{64}$')


def check_key(key: object) -> str:
    """``key`` if it is a content hash (64 lowercase hex digits), else ComponentError.

    >>> check_key('../etc/passwd')
    Traceback (most recent call last):
    ...
    superduperdb.base.exceptions.ComponentError: Artifact key '../etc/passwd' is not a content hash ...
    """
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise ComponentError(
            f'Artifact key {key!r} is not a content hash (64 hex digits): the component record '
            'is corrupt or was forged. Add the component again with db.add().'
        )
    return key


class ArtifactStore(abc.ABC):
    """Stores bytes under the hash of their content."""

    def put(self, data: bytes) -> str:
        key = hashlib.sha256(data).hexdigest()
        if not self.exists(key):
            self._write(key, data)
        return key

    @abc.abstractmethod
    def get(self, key: str) -> bytes: ...

    @abc.abstractmethod
    def exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    def delete(self, key: str) -> None: ...

    @abc.abstractmethod
    def _write(self, key: str, data: bytes) -> None: ...

    def describe(self) -> str:
        return type(self).__name__


class FileSystemArtifactStore(ArtifactStore):
    """Files under a directory, one per artifact, written atomically."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        check_key(key)
        path = self.root / key[:2] / key
        root = self.root.resolve()
        if not path.resolve().is_relative_to(root):  # a link inside the store pointing out
            raise ComponentError(f'Artifact {key} resolves outside the artifact store {root}.')
        return path

    def _write(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix='.tmp-')
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
        os.replace(tmp, path)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise ComponentError(
                f'Artifact {key} is missing from {self.root}. Was the artifact store moved? '
                'Point SUPERDUPERDB_ARTIFACT_STORE at the directory that holds it.'
            ) from exc

    def exists(self, key: str) -> bool:
        return self._path(key).exists()

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def describe(self) -> str:
        return f'filesystem: {self.root.resolve()}'


class DatabaseArtifactStore(ArtifactStore):
    """Artifacts in the ``_superduper_artifacts`` table of a database (any backend)."""

    TABLE = '_superduper_artifacts'

    def __init__(self, backend: DataBackend) -> None:
        self.backend = backend
        backend.create_table(self.TABLE, {'_id': 'str', 'data': 'bytes'})

    def _write(self, key: str, data: bytes) -> None:
        self.backend.insert(self.TABLE, [{'_id': key, 'data': data}], new_columns=False)

    def get(self, key: str) -> bytes:
        check_key(key)
        for chunk in self.backend.find(self.TABLE, {'_id': key}, limit=1):
            return bytes(chunk[0]['data'])
        raise ComponentError(f'Artifact {key} is missing from the database artifact store.')

    def exists(self, key: str) -> bool:
        check_key(key)
        return self.backend.count(self.TABLE, {'_id': key}) > 0

    def delete(self, key: str) -> None:
        check_key(key)
        self.backend.delete(self.TABLE, {'_id': key}, many=False)

    def describe(self) -> str:
        return f'database: {self.TABLE} in {self.backend.describe()}'


def artifact_store_from_uri(uri: str, backend: DataBackend) -> ArtifactStore:
    """``filesystem://<dir>`` or ``database`` (the metadata database)."""
    if uri.startswith('filesystem://'):
        return FileSystemArtifactStore(uri.removeprefix('filesystem://'))
    if uri == 'database':
        return DatabaseArtifactStore(backend)
    raise ConfigError(f'Unknown artifact store {uri!r}: use "filesystem://<directory>" or "database".')
