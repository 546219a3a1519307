"""The encoder registry of a Datalayer: registered encoders, each table's column encoders, and
decoding stored rows with them.

The Datalayer's ``register_encoder``, ``encoder``, ``encoders_of``, ``check_column_encoders``
and ``decode_chunk`` are this registry's methods; it keeps the caches they share (encoders by
name and version, column encoders by table), which ``db.remove('encoder', ...)``,
``db.drop_table`` and ``db.forget_caches`` clear.

>>> from superduperdb import superduper
>>> from superduperdb.encoders.numpy import array
>>> db = superduper('sqlite:///:memory:')
>>> vector = db.register_encoder(array('float32', 3))
>>> db.encoder(vector.identifier) is vector, vector.version
(True, 0)
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from superduperdb.base.document import Document, Encodable
from superduperdb.base.exceptions import ComponentNotFound, EncodingError, InvalidValue, UnknownEncoder
from superduperdb.components.encoder import BaseEncoder
from superduperdb.store import encoding

if TYPE_CHECKING:
    from superduperdb.datalayer.datalayer import Datalayer


class EncoderRegistry:
    """Registered encoders (by name and version) and column encoders (by table) of ``db``,
    read from its metadata store and cached. ``lock``: the Datalayer's, held while registering
    (and while the Datalayer forgets its caches)."""

    def __init__(self, db: Datalayer, lock: threading.RLock) -> None:
        self.db = db
        self.lock = lock
        self.by_name: dict[tuple[str, int | None], BaseEncoder] = {}
        self.by_table: dict[str, ColumnEncoders] = {}

    def forget(self, identifier: str | None = None) -> None:
        """Forget the cached encoders (only those named ``identifier`` if given) and every
        table's column encoders."""
        if identifier is None:
            self.by_name.clear()
        else:
            self.by_name = {k: e for k, e in self.by_name.items() if k[0] != identifier}
        self.by_table.clear()

    def forget_table(self, table: str) -> None:
        """Forget the column encoders of ``table`` (dropped)."""
        self.by_table.pop(table, None)

    def register(self, encoder: BaseEncoder) -> BaseEncoder:
        """The registered version of ``encoder``, adding it to the database if new."""
        key = (encoder.identifier, None)
        with self.lock:
            cached = self.by_name.get(key)
            if cached is not None and cached.to_config() == encoder.to_config():
                return cached
            registered = self.db.add(copy.copy(encoder))
            self._give_seal(registered)
            self.by_name[key] = registered
            self.by_name[(encoder.identifier, registered.version)] = registered
            return registered

    def get(self, identifier: str, version: int | None = None) -> BaseEncoder:
        """A registered encoder by name (and version), loaded from the metadata store."""
        key = (identifier, version)
        if key not in self.by_name:
            try:
                loaded = self.db.load('encoder', identifier, version)
            except ComponentNotFound as exc:
                raise UnknownEncoder(
                    f'Stored data uses encoder {identifier!r}'
                    f'{"" if version is None else f" version {version}"}, which is not registered '
                    f'in this database. Register it with db.add(...) (see db.show("encoder")).',
                    identifier=identifier,
                ) from exc
            assert isinstance(loaded, BaseEncoder)
            self._give_seal(loaded)
            self.by_name[key] = loaded
        return self.by_name[key]

    def _give_seal(self, encoder: BaseEncoder) -> None:
        """Let an encoder that runs code seal and open values with this database's key."""
        if encoder.runs_code and encoder.seal_ is None:
            encoder.seal_ = self.db.seal

    def of(self, table: str, refresh: bool = False) -> Mapping[str, BaseEncoder]:
        """``{column: encoder}`` of ``table``'s encoded columns (cached; ``refresh`` reads again).
        Each encoder is loaded when first looked up: a reader of one column loads no other."""
        if self.db.databackend.self_describing:
            return {}
        if refresh or table not in self.by_table:
            self.by_table[table] = ColumnEncoders(self, self.db.metadata.column_encoders(table))
        return self.by_table[table]

    def refuse_raw_values(
        self,
        table: str,
        documents: Sequence[dict[str, Any]],
        written: dict[str, BaseEncoder],
        *,
        existing: bool = True,
    ) -> None:
        """A column that holds an encoder's bytes takes that encoder's values, not raw bytes.

        The columns are those the table already maps to an encoder and those this write's
        encoded values map (``written``). Bytes of another layout would be written as they are
        and fail every later read (or be unpickled, for an encoder that unpickles).
        """
        encoders = {**(self.of(table) if existing else {}), **written}
        for column, encoder in encoders.items():
            for row, doc in enumerate(documents):
                value = doc.get(column)
                if value is not None and not isinstance(value, Encodable):
                    raise InvalidValue(
                        f'Field {column!r} of {table!r} holds {encoder.identifier!r} values; got a '
                        f'{type(value).__name__} (document {row}). Wrap the value with the encoder: '
                        f'db.load("encoder", {encoder.identifier!r})(value), or use another field.',
                        field=column,
                        row=row,
                    )

    def check_columns(self, table: str, columns: dict[str, BaseEncoder]) -> None:
        """Record the encoders of ``columns`` of ``table`` (refusing one for a column that holds
        values already, which it did not write)."""
        backend = self.db.databackend
        current = self.of(table)
        new = [c for c in columns if current.get(c) is None]
        if new:  # recorded meanwhile by another process? (the cache is read again only here)
            current = self.of(table, refresh=True)
            new = [c for c in columns if current.get(c) is None]
        if new and backend.has_table(table):
            # values already there were not written by this encoder; decoding them with it
            # would misread them (or, for one that unpickles, run what they hold)
            for column in new:
                if backend.count(table, {column: {'$exists': True}}):
                    raise EncodingError(
                        f'Column {table}.{column} already holds values stored without an encoder, '
                        f'so it cannot take {columns[column].identifier!r} values now. Store them in '
                        'another column.'
                    )
        for column, encoder in columns.items():
            existing = current.get(column)
            if existing is None:
                self.db.metadata.set_column_encoder(table, column, encoder.identifier, encoder.version or 0)
            elif existing.identifier != encoder.identifier:
                raise EncodingError(
                    f'Column {table}.{column} holds {existing.identifier!r} values; got a '
                    f'{encoder.identifier!r} value. Use another column, or the same encoder.'
                )
        if new:  # recorded: read back (nothing new, nothing changed: no query per chunk written)
            self.of(table, refresh=True)

    def decode(self, table: str, chunk: list[dict[str, Any]]) -> list[Document]:
        """Stored rows of ``table`` as Documents (their outputs not attached)."""
        columns = self.of(table)
        if chunk and not self.db.databackend.self_describing and _has_unmapped_bytes(chunk[0], columns):
            columns = self.of(table, refresh=True)  # written by another process?
        return encoding.decode_rows(chunk, column_encoders=columns, lookup=self.get)


def _has_unmapped_bytes(row: dict[str, Any], columns: Mapping[str, BaseEncoder]) -> bool:
    return any(isinstance(v, (bytes, memoryview)) and k not in columns for k, v in row.items())


class ColumnEncoders(Mapping[str, BaseEncoder]):
    """One table's ``{column: encoder}``, each encoder loaded from the registry when first looked
    up (a backfill of a text column loaded the table's vector encoder, its module imported)."""

    def __init__(self, registry: EncoderRegistry, named: dict[str, tuple[str, int]]) -> None:
        self.registry, self.named = registry, named
        self.loaded: dict[str, BaseEncoder] = {}

    def __getitem__(self, column: str) -> BaseEncoder:
        encoder = self.loaded.get(column)
        if encoder is None:
            encoder = self.loaded[column] = self.registry.get(*self.named[column])
        return encoder

    def __iter__(self) -> Iterator[str]:
        return iter(self.named)

    def __len__(self) -> int:
        return len(self.named)

    def __contains__(self, column: object) -> bool:
        return column in self.named
