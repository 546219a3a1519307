"""Documents: the rows/records that go in and out of the database.

A :class:`Document` is a ``dict``. Values that the database cannot hold
natively (images, arrays, tensors ...) are wrapped in an :class:`Encodable`,
which pairs the Python object with the encoder that turns it into bytes:

>>> from superduperdb.encoders.numpy import array
>>> import numpy as np
>>> doc = Document({'x': array('float32', (3,))(np.zeros(3, dtype='float32'))})
>>> doc['x'].x.shape
(3,)
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from typing import Any, Protocol

from superduperdb.base import forks

#: The field model outputs are read from: ``doc['_outputs'][key][model]`` (and on MongoDB
#: stored under, inside the document).
OUTPUTS = '_outputs'


class SupportsEncoding(Protocol):
    identifier: str

    def encode(self, x: Any) -> bytes: ...

    def decode(self, b: bytes) -> Any: ...


class Encodable:
    """A Python value together with the encoder that serializes it.

    ``.x`` is the value. The repr never renders the value: documents with large
    arrays stay cheap to log and print.

    A value may also be a *reference* to data elsewhere (``uri``: ``file://``,
    ``https://``, ``s3://`` ...), made with ``encoder(uri=...)``: the database
    stores the reference, a download job fetches the bytes and stores them in
    its place. Until then ``.x`` is None.

    ``data``: ``x`` already encoded by ``encoder`` (the server encodes a request's values
    before it takes its write lock); storing the value writes these bytes instead of encoding
    ``x`` again, so they must stay ``x``'s: set it only on a value nobody changes afterwards.
    """

    __slots__ = ('data', 'encoder', 'uri', 'x')

    def __init__(
        self, encoder: SupportsEncoding, x: Any = None, *, uri: str | None = None, data: bytes | None = None
    ) -> None:
        self.encoder = encoder
        self.x = x
        self.uri = uri
        self.data = data

    @property
    def pending(self) -> bool:
        """True for a reference whose data has not been downloaded yet."""
        return self.x is None and self.uri is not None

    def encode(self) -> bytes:
        if self.pending:
            from superduperdb.base.exceptions import EncodingError

            raise EncodingError(f'The data at {self.uri} has not been downloaded yet; nothing to encode.')
        return self.encoder.encode(self.x)

    def __repr__(self) -> str:
        if self.pending:
            return f'Encodable({self.encoder.identifier!r}, uri={self.uri!r})'
        return f'Encodable({self.encoder.identifier!r}, <{type(self.x).__name__}>)'

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Encodable):
            return NotImplemented
        if self.pending or other.pending:
            return self.encoder.identifier == other.encoder.identifier and (self.uri, self.x) == (
                other.uri,
                other.x,
            )
        return self.encoder.identifier == other.encoder.identifier and self.encode() == other.encode()

    __hash__ = None  # type: ignore[assignment]


class Document(dict):
    """A record: a dict whose values may include :class:`Encodable` values.

    >>> Document({'a': 1}).unpack()
    {'a': 1}
    """

    def unpack(self) -> dict[str, Any]:
        """A plain dict with every Encodable replaced by its Python value."""
        return _unpack(self)

    def encodables(self) -> Iterator[tuple[str, Encodable]]:
        """Every Encodable in the document with its dotted path."""
        yield from _walk_encodables(self, '')

    @property
    def outputs(self) -> dict[str, Any]:
        """Model outputs read back with the row: ``{key: {model: output}}``."""
        return self.get('_outputs', {})

    def __repr__(self) -> str:
        return f'Document({dict.__repr__(self)})'

    def _repr_html_(self) -> str:  # notebooks: images as thumbnails, arrays summarised
        from superduperdb.base.html import document_html

        return document_html(self)


def _unpack(value: Any) -> Any:
    if isinstance(value, Encodable):
        return value.x
    if isinstance(value, dict):
        return {k: _unpack(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unpack(v) for v in value]
    return value


def _walk_encodables(value: Any, prefix: str) -> Iterator[tuple[str, Encodable]]:
    if isinstance(value, Encodable):
        yield prefix, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _walk_encodables(v, f'{prefix}.{k}' if prefix else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk_encodables(v, f'{prefix}.{i}')


_counter = itertools.count(int.from_bytes(os.urandom(3), 'big'))
_process_random = os.urandom(5).hex()


def _reseed() -> None:
    """A fresh random part and counter for this process.

    Runs in every child forked after import (multiprocessing's fork start method, gunicorn
    ``--preload``, Celery prefork): a child that continued its parent's sequence would make
    the same ids as its siblings.
    """
    global _counter, _process_random
    _counter = itertools.count(int.from_bytes(os.urandom(3), 'big'))
    _process_random = os.urandom(5).hex()


forks.in_child(_reseed)


def new_id() -> str:
    """A new 24-hex-digit id, ordered by creation time (MongoDB ObjectId layout: seconds,
    5 random bytes per process, a 3-byte counter).

    >>> len(new_id()), new_id() < new_id()
    (24, True)
    """
    return f'{int(time.time()) & 0xFFFFFFFF:08x}{_process_random}{next(_counter) & 0xFFFFFF:06x}'


def new_ids(n: int) -> list[str]:
    """``n`` new ids, as :func:`new_id` makes them (the clock read once).

    >>> a, b = new_ids(2)
    >>> len(a), a < b, a[:18] == b[:18]
    (24, True, True)
    """
    head = f'{int(time.time()) & 0xFFFFFFFF:08x}{_process_random}'
    counter = _counter
    return [f'{head}{next(counter) & 0xFFFFFF:06x}' for _ in range(n)]
