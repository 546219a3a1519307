"""Removing superduperdb from a database: everything it made, nothing of the user's data.

``db.drop_superduperdb()`` (``superduperdb uninstall`` on the command line) removes, and lists:

- its tables and collections (``_superduper_*``: components, jobs, outputs, the change-capture
  queue, artifacts stored in the database...);
- the readable output views over them (``<table>__<key>__<model>``) and, on PostgreSQL, the
  change-capture triggers on the user's tables, its functions, and its schema when empty;
- on MongoDB, the ``_outputs`` field it wrote into the user's documents;
- the artifacts of its components (models, encoders) and LanceDB index files it made.

Tables that superduperdb created because data was inserted into a new name hold the user's data:
they are kept, and listed as kept. The next write installs superduperdb again, empty.

>>> from superduperdb import Collection, superduper
>>> db = superduper('sqlite:///:memory:')
>>> _ = db.execute(Collection('notes').insert_one({'text': 'hi'}))
>>> report = db.drop_superduperdb()
>>> 'table _superduper_components' in report.removed, report.kept
(True, ['table notes (made by an insert: your data)'])
>>> db.execute(Collection('notes').count())
1
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from superduperdb.base.config import CFG
from superduperdb.base.seal import KEY_RECORD
from superduperdb.store.artifacts import FileSystemArtifactStore
from superduperdb.vector_search.indexes import default_vectors_path

if TYPE_CHECKING:
    from superduperdb.datalayer.datalayer import Datalayer

logger = logging.getLogger(__name__)

#: Names of superduperdb's own tables, collections, functions and triggers start with this.
PREFIX = '_superduper'


@dataclass
class Uninstalled:
    """What :func:`drop_superduperdb` removed, and what it left because it is the user's."""

    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f'removed {len(self.removed)}:'] + [f'  {what}' for what in self.removed]
        if not self.removed:
            lines = ['nothing of superduperdb was here']
        if self.kept:
            lines += [f'kept {len(self.kept)}:'] + [f'  {what}' for what in self.kept]
        return '\n'.join(lines)


def drop_superduperdb(db: Datalayer) -> Uninstalled:
    """Remove every object superduperdb made in ``db``'s databases (see the module docstring)."""
    done = Uninstalled()
    records = db.metadata.all_components()
    made_tables = db.metadata.created_tables()
    outputs = db.metadata.all_outputs()
    seal_key = db.metadata.position(KEY_RECORD)  # the key values of code-running encoders are sealed with
    keys = sorted(
        {key for r in records for key in r['artifacts'].values()} | ({seal_key} if seal_key else set())
    )
    done.removed += _vector_files(db, records)
    if db.databackend.self_describing:  # MongoDB: outputs inside the user's documents
        for table in sorted({o['table_name'] for o in outputs}):
            n = db.databackend.unset_field(table, '_outputs')  # type: ignore[attr-defined]
            if n:
                done.removed.append(f'field _outputs of {n} documents in {table}')
    for key in sorted(keys):  # before the tables: the artifact store may be one of them
        db.artifact_store.delete(key)
    if keys:
        done.removed.append(f'{len(keys)} artifacts in {db.artifact_store.describe()}')
    if isinstance(db.artifact_store, FileSystemArtifactStore) and _remove_empty(db.artifact_store.root):
        done.removed.append(f'folder {db.artifact_store.root}')
    backends = [db.databackend]
    if db.metadata.backend is not db.databackend:
        backends.append(db.metadata.backend)
    for backend in backends:
        done.removed += backend.drop_own_objects(PREFIX)
    ours = {o['_id'] for o in outputs}
    done.kept += [
        f'table {t} (made by an insert: your data)'
        for t in made_tables
        if t not in ours and not t.startswith(PREFIX)
    ]
    own_metadata = db.databackend.default_metadata_store()
    if own_metadata is not None and CFG.metadata_store is None:  # a lake's own metadata file
        done.removed += _remove_metadata_file(db, own_metadata)
    db.metadata.forget_installation()
    db.forget_caches()
    logger.info('superduperdb removed from %s: %d objects', db.databackend.describe(), len(done.removed))
    return done


def _vector_files(db: Datalayer, records: list[dict[str, Any]]) -> list[str]:
    """LanceDB files of the vector indexes (local folders; an index on object storage is listed)."""
    removed = []
    indexes = {
        r['identifier']: r['config']['params'].get('engine')
        for r in records
        if r['type_id'] == 'vector_index'
    }
    for identifier, engine in sorted(indexes.items()):  # (from the records: no model is loaded)
        where = db.vectors.files_of(identifier, engine)
        if where is None:
            continue
        if '://' in where:
            removed.append(f'(not removed: LanceDB index files at {where}; delete them yourself)')
        elif Path(where).exists():
            shutil.rmtree(where)
            Path(where).with_suffix('.lock').unlink(missing_ok=True)
            removed.append(f'LanceDB index files {where}')
    own = Path(default_vectors_path(db.databackend))  # the folder superduperdb made for them
    if _remove_empty(own):
        removed.append(f'folder {own}')
    return removed


def _remove_empty(root: Path) -> bool:
    """Remove ``root`` when it holds nothing but empty folders (an artifact store emptied);
    whether it did."""
    if not root.is_dir() or any(p.is_file() or p.is_symlink() for p in root.rglob('*')):
        return False
    shutil.rmtree(root)
    return True


def _remove_metadata_file(db: Datalayer, uri: str) -> list[str]:
    """Delete a lake's metadata database (``<lake>/_superduper/metadata.db``), and its folder
    when nothing else is left in it; the next write makes them again."""
    from superduperdb.backends.deferred import FileOnFirstWrite
    from superduperdb.backends.uri import backend_from
    from superduperdb.store.metadata import MetadataStore

    path = Path(uri.removeprefix('sqlite:///'))
    if not path.exists():
        return []
    db.metadata.backend.close()
    for name in (path, Path(f'{path}-wal'), Path(f'{path}-shm'), Path(f'{path}-journal')):
        name.unlink(missing_ok=True)
    db.metadata = MetadataStore(FileOnFirstWrite(uri, backend_from))  # type: ignore[arg-type]
    removed = [f'file {path}']
    if _remove_empty(path.parent):
        removed.append(f'folder {path.parent}')
    return removed
