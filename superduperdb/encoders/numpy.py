"""numpy arrays of a fixed dtype and shape, stored as their raw bytes.

>>> import numpy as np
>>> enc = array('float32', (2,))
>>> enc.identifier
'numpy.float32[2]'
>>> enc.decode(enc.encode(np.ones(2, dtype='float32')))
array([1., 1.], dtype=float32)
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from superduperdb.base.exceptions import EncodingError
from superduperdb.base.limits import check_bytes
from superduperdb.components.encoder import BaseEncoder


@dataclass(kw_only=True)
class ArrayEncoder(BaseEncoder):
    """Encoder for ``numpy.ndarray`` values of one dtype and shape."""

    runs_code: ClassVar[bool] = False  # reads plain data only

    def fixed_width(self) -> int | None:
        """Bytes per value: the raw bytes of the fixed shape. Subclasses may decode differently,
        so only the array encoder itself counts."""
        if type(self) is not ArrayEncoder:
            return None
        n = 1
        for d in self.shape:
            n *= d
        return n * self._dtype.itemsize or None

    dtype: str
    shape: list[int]

    @functools.cached_property
    def _dtype(self) -> np.dtype[Any]:
        return _storable(self.dtype)

    def check(self, x: Any) -> np.ndarray:
        if type(x) is np.ndarray and x.dtype == self._dtype and x.shape == tuple(self.shape):
            return x  # the common case, checked cheaply
        if not isinstance(x, np.ndarray):
            raise EncodingError(
                f'Encoder {self.identifier!r} takes a numpy array, got {type(x).__name__}. '
                'Convert it with numpy.asarray(value, dtype=...) first.'
            )
        if x.dtype != self._dtype:
            raise EncodingError(
                f'Encoder {self.identifier!r} takes dtype {self.dtype}, got {x.dtype}. '
                f'Convert with value.astype({self.dtype!r}) or use array({str(x.dtype)!r}, ...).'
            )
        if tuple(x.shape) != tuple(self.shape):
            raise EncodingError(
                f'Encoder {self.identifier!r} takes shape {tuple(self.shape)}, got '
                f'{tuple(x.shape)}. Use array({self.dtype!r}, {tuple(x.shape)}) for this shape.'
            )
        return x

    def encode(self, x: np.ndarray) -> bytes:
        return np.ascontiguousarray(self.check(x)).tobytes()

    def to_stored_many(self, values: Sequence[Any]) -> list[bytes]:
        """Each array's bytes; the batch checked in one pass (a model's outputs: rows of one dtype
        and shape), no call per value. Anything else is encoded one by one, with its error."""
        if type(self) is ArrayEncoder:  # a subclass may encode otherwise
            dtype, shape = self._dtype, tuple(self.shape)
            if all(type(x) is np.ndarray and x.dtype == dtype and x.shape == shape for x in values):
                return [x.tobytes() for x in values]  # C order, whatever the array's own layout
        return super().to_stored_many(values)

    def decode(self, b: bytes) -> np.ndarray:
        size = value_bytes(self.identifier, self._dtype, self.shape)
        if len(b) != size:
            raise EncodingError(
                f'Encoder {self.identifier!r} reads {size} bytes ({self.dtype}, shape '
                f'{tuple(self.shape)}); got {len(b)}.'
            )
        flat = np.frombuffer(b, dtype=self._dtype)
        if self._dtype.kind == 'U':
            _check_code_points(self.identifier, b, self._dtype)
        return flat if len(self.shape) == 1 else flat.reshape(self.shape)


def _check_code_points(identifier: str, b: bytes, dtype: np.dtype[Any]) -> None:
    """Text arrays hold Unicode code points: numbers past U+10FFFF or surrogates are no
    characters (numpy fails on them when it makes a str, deep inside a preview)."""
    points = np.frombuffer(b, dtype=dtype.byteorder.replace('|', '=') + 'u4')
    if ((points > 0x10FFFF) | ((points >= 0xD800) & (points <= 0xDFFF))).any():
        raise EncodingError(
            f'Encoder {identifier!r}: the bytes hold numbers that are no Unicode characters '
            '(past U+10FFFF, or surrogates); they were not written by this encoder.'
        )


def value_bytes(identifier: str, dtype: np.dtype[Any], shape: list[int]) -> int:
    """The bytes of one value of ``dtype`` and ``shape`` (checked against
    ``limits.max_value_bytes``); shapes from a stored config are checked here too."""
    if not all(type(d) is int and d >= 0 for d in shape):
        raise EncodingError(f'Encoder {identifier!r}: shape {shape!r} is not a list of non-negative ints.')
    n = dtype.itemsize
    for d in shape:
        n *= d
    check_bytes(n, f'A value of encoder {identifier!r}')
    return n


def _storable(dtype: Any) -> np.dtype[Any]:
    """``dtype`` as a numpy dtype whose raw bytes are the data (no Python object pointers)."""
    try:
        found = np.dtype(dtype)
    except (TypeError, ValueError, SyntaxError) as exc:
        raise EncodingError(f'array(): {dtype!r} is not a numpy dtype ({exc}).') from exc
    if found.hasobject:
        raise EncodingError(
            f'array(): dtype {found} holds pointers to Python objects, not the data: its bytes '
            'mean nothing once read back. Use a numeric or fixed-width string dtype (e.g. '
            "'float32', 'U16'), or pickle(value) from superduperdb.encoders.pickle."
        )
    if found.itemsize == 0 or found.subdtype is not None or found.fields is not None:
        raise EncodingError(
            f'array(): dtype {found} is not one plain element that holds data (it is zero-width, an '
            "array itself, or a record of fields): use e.g. 'float32' or 'U16', a wider shape, or "
            'one array per field.'
        )
    return found


def _name(dtype: np.dtype[Any]) -> str:
    """The text that names ``dtype`` again: its name (``float32``) where that is numpy's name
    for it, else its code with byte order (``<U4``, ``>f4``)."""
    try:
        same = np.dtype(dtype.name) == dtype
    except TypeError:  # 'str128' names no dtype
        same = False
    return dtype.name if same else dtype.str


def array(dtype: str | np.dtype[Any] | type, shape: int | tuple[int, ...] | list[int]) -> ArrayEncoder:
    """An encoder for numpy arrays of ``dtype`` and ``shape``.

    >>> array('float32', 384).identifier
    'numpy.float32[384]'
    """
    dtype_name = _name(_storable(dtype))
    if isinstance(shape, int):
        shape = (shape,)
    dims = [int(d) for d in shape]
    if any(d < 0 for d in dims):
        raise EncodingError(f'array(): shape {tuple(dims)} has a negative dimension.')
    identifier = f'numpy.{dtype_name}[{",".join(map(str, dims))}]'
    return ArrayEncoder(identifier, dtype=dtype_name, shape=dims)
