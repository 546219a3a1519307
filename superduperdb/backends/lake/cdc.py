"""Change capture on a lake: new files landing in a table, found by listing it.

Another program (a Spark job, a pipeline writing Parquet to the bucket) adds rows to a lake
table by adding files. The position of each followed table is its last handled listing,
persisted as ``db.metadata.position('cdc:<table>')``: ``{file path: [size, etag or mtime]}``.
A file that is new, or whose size or etag changed, has its keys read (that file only) and
handed over as inserted rows; the position is saved after they are handled, so a crash
hands them over again (predict skips inputs it has already seen). Files removed (and rows
rewritten away) are found by the reconcile, which drops the outputs of rows gone.

Delta and Iceberg tables: their version is the position; a new version is caught up by the
reconcile (incremental predict over the table).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from superduperdb.backends.changes import ChangeSource
from superduperdb.base.exceptions import ChangesNotHandled

if TYPE_CHECKING:
    from superduperdb.backends.lake.backend import LakeBackend


class LakeFiles(ChangeSource):
    """Follows lake tables by their file listings (see the module docstring)."""

    reconciles: ClassVar[bool] = True

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._positions: dict[str, dict[str, Any]] = {}

    @property
    def backend(self) -> LakeBackend:
        return self.db.databackend  # type: ignore[return-value]

    def _listing(self, table: str) -> dict[str, Any]:
        from superduperdb.backends.lake import formats

        kind = formats.kind_of(self.backend.storage, table)
        if kind is None:
            return {}
        if kind != 'parquet':
            return {'': formats.version_of(self.backend.storage, table, kind)}
        return {f.path: f.key() for f in self.backend.storage.files(table)}

    def follow(self, tables: Sequence[str]) -> list[str]:
        fresh = []
        for table in tables:
            if table in self._positions or not self.backend.has_table(table):
                continue
            stored = self.db.metadata.position(_name(table))
            if stored is None:
                listing = self._listing(table)
                self._save(table, listing)
                fresh.append(table)
            else:
                listing = json.loads(stored)
            self._positions[table] = listing
        return fresh

    def _save(self, table: str, listing: dict[str, Any]) -> None:
        self.db.metadata.set_position(_name(table), json.dumps(listing, sort_keys=True))

    def _new_files(self, table: str) -> tuple[dict[str, Any], list[str], bool]:
        """The listing now, the files new or changed since the position, whether any went."""
        seen = self._positions.get(table, {})
        now = self._listing(table)
        new = [path for path, key in now.items() if seen.get(path) != key]
        gone = any(path not in now for path in seen)
        return now, new, gone

    def drain(self, tables: Sequence[str], batch_size: int) -> None:
        import logging

        logger = logging.getLogger(__name__)
        for table in tables:
            if table not in self._positions or self.stop.is_set():
                continue
            now, new, gone = self._new_files(table)
            if not new and not gone:
                continue
            handled = dict(self._positions[table])
            if '' in now:  # a Delta/Iceberg table: a new version is caught up by the reconcile
                self._positions[table] = now
                self._save(table, now)
                continue
            for path in new:  # file by file: the position moves after each is handled
                own = (table, path) in self.backend.own_files  # its jobs were started by the write
                keys = [] if own else self.backend.keys_in_files(table, [path])
                for lo in range(0, len(keys), batch_size):
                    try:
                        self.handle(table, inserted=keys[lo : lo + batch_size])
                    except ChangesNotHandled as exc:
                        logger.warning('change capture: %s; the reconcile retries these rows', exc.args[0])
                handled[path] = now[path]
                self._positions[table] = handled
                self._save(table, handled)
            if gone:  # rows removed with their files: the reconcile drops their outputs
                self._positions[table] = now
                self._save(table, now)

    def backlog(self, tables: Sequence[str]) -> dict[str, int]:
        found = {}
        for table in tables:
            if table not in self._positions:
                stored = self.db.metadata.position(_name(table))
                if stored is None:
                    found[table] = 0
                    continue
                self._positions[table] = json.loads(stored)
            _, new, _ = self._new_files(table)
            found[table] = len(self.backend.keys_in_files(table, [p for p in new if p])) if new else 0
        return found

    def all_keys(self, table: str, chunk_size: int) -> Iterator[list[Any]]:
        keys = self.backend.keys(table, {})
        for lo in range(0, len(keys), chunk_size):
            yield keys[lo : lo + chunk_size]

    def existing(self, table: str, keys: Sequence[Any]) -> set[Any]:
        pk = self.backend.primary_key(table)
        return set(self.backend.keys(table, {pk: {'$in': list(keys)}}))


def _name(table: str) -> str:
    return f'cdc:{table}'
