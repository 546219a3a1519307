"""A SQLite metadata database that is made on the first write (see :class:`FileOnFirstWrite`)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from superduperdb.backends.base import DataBackend


def missing_file(uri: str) -> bool:
    """Whether ``uri`` names a SQLite file that does not exist (yet)."""
    path = uri.partition(':///')[2].split('?')[0]
    return uri.startswith('sqlite:///') and bool(path) and not Path(path).expanduser().exists()


class FileOnFirstWrite:
    """A SQLite metadata database whose file does not exist yet (a lake's, in its ``_superduper``
    folder): opened, and so made, when something is first written. Until then it has no tables,
    so that connecting to a lake and looking at it leaves no file behind."""

    name = 'sqlite'

    def __init__(self, uri: str, open: Callable[..., DataBackend]) -> None:
        self._uri, self._open = uri, open
        self._opened: DataBackend | None = None
        self._creations: tuple[str, Any] | None = None
        self._lock = threading.Lock()

    def _backend(self) -> DataBackend:
        with self._lock:
            if self._opened is None:
                self._opened = self._open(self._uri, create=True)
                if self._creations is not None:
                    registry, before = self._creations
                    self._opened.record_creations_in(registry, before=before)
            return self._opened

    def list_tables(self) -> list[str]:
        if self._opened is None and missing_file(self._uri):
            return []
        return self._backend().list_tables()

    def has_table(self, table: str) -> bool:
        return table in self.list_tables()

    def clock(self) -> None:
        return None  # an embedded database: this process's clock

    def record_creations_in(self, registry: str, *, before: Any = None) -> bool:
        self._creations = (registry, before)
        if self._opened is not None:
            return self._opened.record_creations_in(registry, before=before)
        return True  # a SQL database: it records its creations

    def describe(self) -> str:
        return (
            self._backend().describe() if self._opened is not None else f'sqlite: {self._uri} (not made yet)'
        )

    def close(self) -> None:
        if self._opened is not None:
            self._opened.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend(), name)
