"""Artifact stores: the heavy parts of components (weights, pickled functions).

Artifacts are content-addressed: the key is the SHA-256 of the bytes, so
saving the same bytes twice stores them once and a key never goes stale. A key is
64 lowercase hex digits and nothing else: keys come from stored records, which
another program sharing the database could forge, so a path (``/etc/passwd``,
``../x``) is refused before any store is asked (docs/security.md).

Every read checks the bytes against their key: bytes swapped for another artifact's, or cut
short, raise :class:`~superduperdb.base.exceptions.ArtifactCorrupted` (naming the key, the
component being loaded and the store) before anything unpickles them.

>>> import tempfile
>>> store = FileSystemArtifactStore(tempfile.mkdtemp())
>>> key = store.put(b'weights')
>>> store.get(key)
b'weights'
>>> store._write(key, b'weigh')  # cut short behind the store's back
>>> store.get(key, component='model/clf/0')
Traceback (most recent call last):
...
superduperdb.base.exceptions.ArtifactCorrupted: Artifact ... of model/clf/0 in filesystem: ...
"""

from __future__ import annotations

import abc
import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from superduperdb.base._deps import require
from superduperdb.base.exceptions import ArtifactCorrupted, ComponentError, ConfigError
from superduperdb.base.masking import mask_secrets

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

    def get(self, key: str, *, component: str | None = None) -> bytes:
        """The bytes stored under ``key``, checked against it (one hash per read: cheap next
        to unpickling). ``component`` (``type_id/identifier/version``) names what is being
        loaded, for the error when they do not match."""
        data = self._read(check_key(key))
        actual = hashlib.sha256(data).hexdigest()
        if actual != key:
            what = f'{component} ' if component else ''
            raise ArtifactCorrupted(
                f'Artifact {key} of {what or "a component "}in {self.describe()} does not match its hash '
                f'(its {len(data)} bytes hash to {actual[:12]}...): it was changed, swapped or cut short '
                'after it was stored, and is not loaded. Restore the artifact store from a backup, or '
                'add the component again with db.add().',
                key=key,
                component=component,
                store=self.describe(),
            )
        return data

    @abc.abstractmethod
    def _read(self, key: str) -> bytes:
        """The bytes under ``key`` (a checked key) as stored, unchecked."""

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
        try:
            with os.fdopen(fd, 'wb') as f:
                f.write(data)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def _read(self, key: str) -> bytes:
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


class FsspecArtifactStore(ArtifactStore):
    """Files under an fsspec URL (``s3://bucket/prefix``, ``gs://...``, ``memory://...``)."""

    def __init__(self, url: str) -> None:
        fsspec = require('fsspec', extra='s3', what=f'The artifact store {url!r}')
        if url.split('://', 1)[0] in ('s3', 's3a'):
            require('s3fs', extra='s3', what=f'The artifact store {url!r}')
        self.url = url.rstrip('/')
        self.fs, self.root = fsspec.core.url_to_fs(self.url)

    def _path(self, key: str) -> str:
        check_key(key)
        return f'{self.root}/{key[:2]}/{key}'

    def _write(self, key: str, data: bytes) -> None:
        path = self._path(key)
        self.fs.makedirs(path.rsplit('/', 1)[0], exist_ok=True)
        self.fs.pipe_file(path, data)

    def _read(self, key: str) -> bytes:
        try:
            return bytes(self.fs.cat_file(self._path(key)))
        except FileNotFoundError as exc:
            raise ComponentError(
                f'Artifact {key} is missing from {mask_secrets(self.url)}. Point '
                'SUPERDUPERDB_ARTIFACT_STORE at the store that holds it.'
            ) from exc

    def exists(self, key: str) -> bool:
        return bool(self.fs.exists(self._path(key)))

    def delete(self, key: str) -> None:
        path = self._path(key)
        if self.fs.exists(path):
            self.fs.rm_file(path)

    def describe(self) -> str:
        return f'fsspec: {mask_secrets(self.url)}'


class DatabaseArtifactStore(ArtifactStore):
    """Artifacts in the ``_superduper_artifacts`` table of a database (any backend).

    Every process that opens the database sees them: the default for server databases.
    An artifact larger than a chunk is stored as numbered chunk rows plus a small manifest
    row under its key, written last, so a reader never sees a half-written artifact. A chunk
    is :attr:`CHUNK` bytes (under MongoDB's 16 MB document limit), or less where the database
    takes less in one statement: on MariaDB/MySQL a row must fit the server's
    ``max_allowed_packet`` (16 MiB by default), and PyMySQL sends bytes as hex, twice their
    size, so there chunks are a little under 8 MiB (read once per process, see
    ``SQLBackend.size_limit``). Chunks of :attr:`CHUNK` bytes are ``<key>.1``, ``<key>.2``,
    ... (manifest ``superduperdb-artifact-chunks:<n>``); chunks of another size ``s`` are
    ``<key>.s.1``, ... (manifest ``...:<n>:<s>``), so chunks left by a failed write of
    another size are never taken for this one's.
    """

    TABLE = '_superduper_artifacts'
    CHUNK = 8 * 1024 * 1024
    _MANIFEST = b'superduperdb-artifact-chunks:'

    def __init__(self, backend: DataBackend) -> None:
        self.backend = backend
        self._made = False  # the table: made on the first write, not on connecting

    def _has_table(self, *, create: bool = False) -> bool:
        if not self._made:
            if create:
                self.backend.create_table(self.TABLE, {'_id': 'str', 'data': 'bytes'})
                self._made = True
            else:
                self._made = self.backend.has_table(self.TABLE)
        return self._made

    def chunk_size(self) -> int:
        """The bytes of one chunk row on this database (see the class docstring)."""
        limit = self.backend.size_limit()
        return self.CHUNK if limit is None else min(self.CHUNK, max(1024, limit.largest_bytes()))

    def _chunk_ids(self, key: str, n: int, size: int) -> list[str]:
        infix = '' if size == self.CHUNK else f'{size}.'
        return [f'{key}.{infix}{i}' for i in range(1, n + 1)]

    def _write(self, key: str, data: bytes) -> None:
        self._has_table(create=True)
        size = self.chunk_size()
        if len(data) > size:
            parts = [data[i : i + size] for i in range(0, len(data), size)]
            ids = self._chunk_ids(key, len(parts), size)
            present = set(self.backend.keys(self.TABLE, {'_id': {'$in': ids}}))
            for chunk_id, part in zip(ids, parts, strict=True):
                if chunk_id not in present:  # one chunk per statement: packets stay small
                    self._insert_once(chunk_id, part)
            data = self._MANIFEST + str(len(parts)).encode()
            if size != self.CHUNK:
                data += b':' + str(size).encode()
        self._insert_once(key, data)

    def _insert_once(self, row_id: str, data: bytes) -> None:
        try:
            self.backend.insert(self.TABLE, [{'_id': row_id, 'data': data}], new_columns=False)
        except Exception:
            # content-addressed: another process storing the same bytes got there first
            if not self.backend.count(self.TABLE, {'_id': row_id}):
                raise

    def _chunks(self, data: bytes, key: str) -> list[str]:
        """The ids of the chunk rows ``data`` (the row under ``key``) stands for; [] if it is the artifact."""
        if data.startswith(self._MANIFEST) and hashlib.sha256(data).hexdigest() != key:
            n, _, size = data[len(self._MANIFEST) :].partition(b':')
            return self._chunk_ids(key, int(n), int(size) if size else self.CHUNK)
        return []

    def _read(self, key: str) -> bytes:
        chunks = self.backend.find(self.TABLE, {'_id': key}, limit=1) if self._has_table() else ()
        for chunk in chunks:
            data = bytes(chunk[0]['data'])
            ids = self._chunks(data, key)
            n = len(ids)
            if not n:
                return data
            parts = {
                row['_id']: bytes(row['data'])
                for rows in self.backend.find(self.TABLE, {'_id': {'$in': ids}}, chunk_size=8)
                for row in rows
            }
            if len(parts) != n:
                raise ComponentError(
                    f'Artifact {key} in the database artifact store is incomplete ({len(parts)} of '
                    f'{n} chunks). Add the component again with db.add().'
                )
            return b''.join(parts[i] for i in ids)  # get() checks the whole against its key
        raise ComponentError(f'Artifact {key} is missing from the database artifact store.')

    def exists(self, key: str) -> bool:
        check_key(key)
        return self._has_table() and self.backend.count(self.TABLE, {'_id': key}) > 0

    def delete(self, key: str) -> None:
        check_key(key)
        if not self._has_table():
            return
        for chunk in self.backend.find(self.TABLE, {'_id': key}, limit=1):
            ids = self._chunks(bytes(chunk[0]['data']), key)
            if ids:
                self.backend.delete(self.TABLE, {'_id': {'$in': ids}}, many=True)
        self.backend.delete(self.TABLE, {'_id': key}, many=False)

    def describe(self) -> str:
        return f'database: {self.TABLE} in {self.backend.describe()}'


#: Backends whose database is a server every process reaches the same way.
_FILE_BACKENDS = ('sqlite', 'duckdb')


def default_artifact_uri(backend: DataBackend) -> str:
    """Where artifacts go when ``CFG.artifact_store`` is not set.

    A database server (PostgreSQL, MySQL/MariaDB, MongoDB) or an in-memory database: in
    the database itself (``database``). A SQLite/DuckDB file: the directory
    ``<file>.artifacts`` beside it (absolute, so it holds for every working directory).
    """
    path = database_file(backend)
    return 'database' if path is None else f'filesystem://{path}.artifacts'


def database_file(backend: DataBackend) -> Path | None:
    """The absolute path of a SQLite/DuckDB database file; None for servers and in-memory databases."""
    if backend.name in _FILE_BACKENDS:
        database = None if backend.engine is None else backend.engine.url.database
        if database and database != ':memory:' and not database.startswith('file::memory'):
            return Path(database).expanduser().resolve()
    return None


def resolve_artifact_uri(configured: str | None, backend: DataBackend) -> str:
    """The artifact store URI in effect: ``configured`` made absolute, or the default for ``backend``.

    >>> resolve_artifact_uri('/srv/artifacts', None)
    'filesystem:///srv/artifacts'
    >>> resolve_artifact_uri('s3://bucket/models', None)
    's3://bucket/models'
    """
    if configured is None or configured == '':
        return default_artifact_uri(backend)
    if configured == 'database' or _is_fsspec_url(configured):
        return configured
    path = configured.removeprefix('filesystem://').removeprefix('file://')
    return 'filesystem://' + str(Path(path).expanduser().resolve())


def _is_fsspec_url(uri: str) -> bool:
    scheme = uri.split('://', 1)[0] if '://' in uri else ''
    if not scheme or scheme in ('filesystem', 'file'):
        return False
    return re.fullmatch(r'[a-z][a-z0-9+.-]*', scheme) is not None


def artifact_store_from_uri(uri: str | None, backend: DataBackend) -> ArtifactStore:
    """An artifact store: ``database`` (the metadata database), a directory (a path or
    ``filesystem://<dir>``), or an fsspec URL (``s3://bucket/prefix``); None: the default
    for ``backend`` (see :func:`default_artifact_uri`)."""
    uri = resolve_artifact_uri(uri, backend)
    if uri == 'database':
        return DatabaseArtifactStore(backend)
    if uri.startswith('filesystem://'):
        return FileSystemArtifactStore(uri.removeprefix('filesystem://'))
    if _is_fsspec_url(uri):
        return FsspecArtifactStore(uri)
    raise ConfigError(
        f'Unknown artifact store {uri!r}: use "database", a directory, or an fsspec URL such as '
        '"s3://bucket/prefix".'
    )
