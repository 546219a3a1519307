"""Encoders: turn values the database cannot hold natively into bytes and back.

Calling an encoder wraps a value for storage:

>>> from superduperdb import Encoder
>>> upper = Encoder('upper', encode=lambda s: s.upper().encode(), decode=lambda b: b.decode())
>>> upper('hi').encode()
b'HI'

Built-in families live in :mod:`superduperdb.encoders` (numpy ``array``,
torch ``tensor``, pillow ``pil_image``, ``audio``, ``pickle``). Their
parameters are plain JSON, so another process rebuilds them from the metadata
store with nothing pickled; a user-defined :class:`Encoder` stores its two
functions in the artifact store.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from superduperdb.base.document import Encodable
from superduperdb.base.exceptions import EncodingError
from superduperdb.components.component import Component, artifact


@dataclass(kw_only=True)
class BaseEncoder(Component):
    """What every encoder does: ``encode(x) -> bytes``, ``decode(bytes) -> x``."""

    type_id: ClassVar[str] = 'encoder'

    def encode(self, x: Any) -> bytes:
        raise NotImplementedError

    def decode(self, b: bytes) -> Any:
        raise NotImplementedError

    def check(self, x: Any) -> Any:
        """Validate (and possibly normalize) a value before it is wrapped."""
        return x

    def __call__(self, x: Any = None, *, uri: str | None = None) -> Encodable:
        """Wrap a value for storage, or (``uri=``) a reference to data a download job will fetch."""
        if uri is None:
            return Encodable(self, self.check(x))
        if x is not None:
            raise EncodingError(f'{self.identifier}(...) takes a value or uri=, not both.')
        from superduperdb.base.references import check_uri

        return Encodable(self, uri=check_uri(uri))


@dataclass(kw_only=True)
class Encoder(BaseEncoder):
    """An encoder from two user functions, stored pickled in the artifact store."""

    encode: Callable[[Any], bytes] | None = artifact()  # type: ignore[assignment]
    decode: Callable[[bytes], Any] | None = artifact()  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if not callable(self.encode) or not callable(self.decode):
            raise EncodingError(
                f'Encoder {self.identifier!r} needs both encode= and decode= functions, '
                'for example Encoder("name", encode=pickle.dumps, decode=pickle.loads).'
            )
