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

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from superduperdb.base.config import CFG
from superduperdb.base.document import Encodable
from superduperdb.base.exceptions import EncodingError, UnsealedValue
from superduperdb.base.seal import MARKER
from superduperdb.components.component import Component, artifact


@dataclass(kw_only=True)
class BaseEncoder(Component):
    """What every encoder does: ``encode(x) -> bytes``, ``decode(bytes) -> x``.

    ``runs_code`` says whether decoding can run code chosen by whoever wrote the bytes
    (pickle, ``torch.load``, a user's function). Only an encoder class that reads plain data
    declares ``runs_code = False`` in its own body; a subclass that overrides ``decode``
    without declaring it again runs code as far as superduperdb knows. Values of encoders
    that run code are stored sealed and decoded only when the seal holds (see
    :mod:`superduperdb.base.seal` and docs/security.md).
    """

    type_id: ClassVar[str] = 'encoder'
    runs_code: ClassVar[bool] = True
    #: the seal of the database this encoder was registered with or loaded from (set by the
    #: Datalayer; only encoders that run code use it)
    seal_: Any = field(default=None, repr=False, compare=False)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if 'decode' in cls.__dict__ and 'runs_code' not in cls.__dict__:
            cls.runs_code = True  # a new decode is not known to read plain data

    def fixed_width(self) -> int | None:
        """Bytes per value when every value is stored as the same number of raw bytes (a column
        that can be decoded a chunk at a time), else None."""
        return None

    def encode(self, x: Any) -> bytes:
        raise NotImplementedError

    def decode(self, b: bytes) -> Any:
        raise NotImplementedError

    def check(self, x: Any) -> Any:
        """Validate (and possibly normalize) a value before it is wrapped."""
        return x

    def to_stored(self, x: Any) -> bytes:
        """``x`` as the bytes a database stores: :meth:`encode`, sealed when decoding runs code."""
        data = self.encode(x)
        return self._seal().close(data) if self.runs_code else data

    def to_stored_many(self, values: Sequence[Any]) -> list[bytes]:
        """:meth:`to_stored` of each of ``values`` (a batch: an encoder may do it faster)."""
        return [self.to_stored(x) for x in values]

    def from_stored(self, data: bytes, where: str) -> Any:
        """A stored value back: :meth:`decode`, after checking the seal when decoding runs code
        (:class:`~superduperdb.base.exceptions.UnsealedValue` when it does not hold)."""
        if self.runs_code:
            data = self._opened(data, where)
        return self.decode(data)

    def _seal(self) -> Any:
        if self.seal_ is None:
            raise EncodingError(
                f'Encoder {self.identifier!r} runs code when it decodes, so its values are stored sealed '
                "with a database's key; this copy was not registered with a database. Store values "
                'through db.execute(...), which registers it.'
            )
        return self.seal_

    def _opened(self, data: bytes, where: str) -> bytes:
        try:
            return bytes(self._seal().open(data, where))
        except UnsealedValue:
            if CFG.components.decode_unsealed_values and not data.startswith(MARKER):
                return data  # stored before seals existed, and the operator says to read it
            raise

    def __call__(self, x: Any = None, *, uri: str | None = None) -> Encodable:
        """Wrap a value for storage, or (``uri=``) a reference to data a download job will fetch."""
        if uri is None:
            return Encodable(self, self.check(x))
        if x is not None:
            raise EncodingError(f'{self.identifier}(...) takes a value or uri=, not both.')
        if self.runs_code:
            raise EncodingError(refused_reference(self))
        from superduperdb.base.references import check_uri

        return Encodable(self, uri=check_uri(uri))


def refused_reference(encoder: BaseEncoder) -> str:
    """Why a data reference (``uri=``) of an encoder that runs code is never fetched."""
    return (
        f'Encoder {encoder.identifier!r} runs code when it decodes, so superduperdb does not fetch '
        'its values from references: whoever controls the address would choose the code. Read the '
        f'data yourself and store the value: {encoder.identifier}(value).'
    )


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
