"""Seals: stored bytes that superduperdb itself wrote, for someone trusted to run code.

Decoding with an encoder that runs code (``pickle``, a user's ``Encoder``: any encoder whose
class does not declare ``runs_code = False``) runs whatever whoever wrote the bytes chose.
So the one rule (docs/security.md, "The invariant") is enforced where such values are
decoded, not at each way in: superduperdb stores them *sealed* (an HMAC-SHA256 of the bytes
under a key of this database) and decodes only bytes whose seal holds. Bytes that reach a
column some other way (a view an attacker updated, another program, a download of a
reference, a replayed request) carry no valid seal and are refused before the encoder sees
them. Encoders that read plain data (numpy, pillow, audio, torch tensors) are not sealed.

Who gets bytes sealed: every process that writes through a Datalayer. On a server, values
of encoders that run code come only from the operator's processes, or from token holders
when the operator allows them to run code (``server.allow_artifact_upload``); a token holder
cannot register such an encoder otherwise (see ``Component.check_from_request``).

The key: 32 random bytes made by the first process that needs it, kept in the artifact store
(a directory of the operator's by default), found through a record in the metadata store
that holds only its content hash. Reading the database alone does not give the key.

>>> seal = Seal(b'k' * 32)
>>> seal.open(seal.close(b'pickled'), 'f')
b'pickled'
>>> seal.open(b'pickled', 'f')  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
superduperdb.base.exceptions.UnsealedValue: A stored value of 'f' was not written by superduperdb...
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import TYPE_CHECKING

from superduperdb.base.exceptions import UnsealedValue, WriteFailed

if TYPE_CHECKING:
    from superduperdb.store.artifacts import ArtifactStore
    from superduperdb.store.metadata import MetadataStore

#: Sealed bytes: this marker, the 32-byte HMAC-SHA256 of the payload, then the payload.
MARKER = b'\x00sdseal1'
_TAG = 32
#: The metadata record (a row of the positions table) naming the key's artifact.
KEY_RECORD = '_superduper_seal_key'


class Seal:
    """Seals and opens stored bytes with one database's key."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    def __repr__(self) -> str:
        return 'Seal(<key>)'  # never the key

    def close(self, data: bytes) -> bytes:
        """``data`` sealed: what a later :meth:`open` accepts."""
        return MARKER + hmac.new(self._key, data, hashlib.sha256).digest() + data

    def open(self, data: bytes, where: str) -> bytes:
        """The payload of sealed ``data``; :class:`UnsealedValue` if the seal does not hold."""
        head = len(MARKER)
        if data[:head] == MARKER and len(data) >= head + _TAG:
            payload = data[head + _TAG :]
            expected = hmac.new(self._key, payload, hashlib.sha256).digest()
            if hmac.compare_digest(data[head : head + _TAG], expected):
                return payload
        raise UnsealedValue(
            f'A stored value of {where!r} was not written by superduperdb for someone trusted to '
            'run code (its seal is missing or wrong), and decoding it would run code: refused. '
            'Write it again from a trusted process (db.execute(...update...)), or delete it. '
            'Values stored before seals existed (2026-12) can be read once by setting '
            'CFG.components.decode_unsealed_values, and written back sealed.',
            field=where,
        )


def open_or_make(metadata: MetadataStore, artifacts: ArtifactStore) -> Seal:
    """This database's seal: its key read from the artifact store, made on first use.

    Several processes may make one at once: the first record written wins and every
    process reads the key it names (a key made by a loser is left unused).
    """
    pointer = metadata.position(KEY_RECORD)
    if pointer is None:
        made = artifacts.put(secrets.token_bytes(32))
        try:
            metadata.add_position(KEY_RECORD, made)
        except WriteFailed:  # another process wrote its key first: use that one
            pass
        pointer = metadata.position(KEY_RECORD)
        assert pointer is not None
    return Seal(artifacts.get(pointer))
