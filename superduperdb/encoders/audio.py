"""Audio: samples (a numpy array, one column per channel) and a sample rate.

Samples are integers or floats (``int8`` to ``int64``, ``uint8`` to ``uint64``, ``float16``
to ``float64``), shaped ``(frames,)`` or ``(frames, channels)``. Stored as the sample rate
followed by the samples in ``.npy`` format; decoding reads the ``.npy`` header first and
refuses what it declares before allocating: another dtype, a size over
``limits.max_value_bytes``, or a size other than the bytes that follow.

>>> import numpy as np
>>> from superduperdb.encoders.audio import Audio, audio
>>> clip = Audio(np.zeros((8, 2), dtype='float32'), 16000)
>>> audio.decode(audio.encode(clip)) == clip
True
"""

from __future__ import annotations

import io
import numbers
import struct
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from superduperdb.base.exceptions import EncodingError
from superduperdb.base.limits import check_bytes
from superduperdb.components.encoder import BaseEncoder


@dataclass(frozen=True, eq=False)
class Audio:
    """A clip: ``samples`` shaped ``(frames,)`` or ``(frames, channels)``."""

    samples: np.ndarray
    sample_rate: int

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Audio):
            return NotImplemented
        return (
            self.sample_rate == other.sample_rate
            and self.samples.dtype == other.samples.dtype
            and np.array_equal(self.samples, other.samples)
        )

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate


_HEADER = struct.Struct('<I')  # sample rate, then the samples in .npy format
_MAX_RATE = 2**32 - 1
#: numpy dtype kinds of samples: signed and unsigned integers, floats
_KINDS = 'iuf'


@dataclass(kw_only=True)
class AudioEncoder(BaseEncoder):
    """Stores an :class:`Audio` clip losslessly, whatever its sample type."""

    runs_code: ClassVar[bool] = False  # reads plain data only

    def check(self, x: Any) -> Audio:
        if isinstance(x, tuple) and len(x) == 2:
            x = Audio(np.asarray(x[0]), int(x[1]))
        if not isinstance(x, Audio) or not isinstance(x.samples, np.ndarray):
            raise EncodingError(
                f'Encoder {self.identifier!r} takes Audio(samples, sample_rate) or a '
                f'(numpy array, sample rate) tuple, got {type(x).__name__}.'
            )
        self._check_samples(x.samples.dtype, x.samples.shape)
        rate = x.sample_rate
        if isinstance(rate, bool) or not isinstance(rate, numbers.Integral) or not 0 < rate <= _MAX_RATE:
            raise EncodingError(
                f'Encoder {self.identifier!r}: the sample rate is a whole number of Hz from 1 to '
                f'{_MAX_RATE}; got {rate!r}.'
            )
        return x if type(rate) is int else Audio(x.samples, int(rate))

    def _check_samples(self, dtype: np.dtype[Any], shape: tuple[int, ...]) -> int:
        """The bytes of samples of ``dtype`` and ``shape``, if they are a clip's (else refused)."""
        if dtype.kind not in _KINDS or dtype.itemsize > 8:
            raise EncodingError(
                f'Encoder {self.identifier!r}: samples are integers or floats of at most 64 bits; '
                f'got dtype {dtype}. Convert with samples.astype("float32").'
            )
        if len(shape) not in (1, 2) or min(shape) < 0 or (len(shape) == 2 and shape[1] < 1):
            raise EncodingError(
                f'Encoder {self.identifier!r}: samples must be 1-d or 2-d (frames, channels) with '
                f'at least one channel; got shape {tuple(shape)}.'
            )
        n = dtype.itemsize
        for d in shape:
            n *= d
        check_bytes(n, 'An audio clip')
        return n

    def encode(self, x: Any) -> bytes:
        clip = self.check(x)
        buffer = io.BytesIO()
        buffer.write(_HEADER.pack(clip.sample_rate))
        np.save(buffer, clip.samples, allow_pickle=False)
        return buffer.getvalue()

    def decode(self, b: bytes) -> Audio:
        if len(b) < _HEADER.size:
            raise EncodingError(f'Encoder {self.identifier!r}: {len(b)} bytes are not an audio clip.')
        (rate,) = _HEADER.unpack_from(b)
        stream = io.BytesIO(b)
        stream.seek(_HEADER.size)
        dtype, shape, fortran = self._read_header(stream)
        size = self._check_samples(dtype, shape)
        data = memoryview(b)[stream.tell() :]
        if len(data) != size:
            raise EncodingError(
                f'Encoder {self.identifier!r}: the header declares {size} bytes of samples '
                f'({dtype}, shape {shape}), but {len(data)} follow.'
            )
        flat = np.frombuffer(data, dtype=dtype).copy()  # its own memory, writable
        samples = flat.reshape(shape[::-1]).T if fortran else flat.reshape(shape)
        return self.check(Audio(samples, rate))

    def _read_header(self, stream: io.BytesIO) -> tuple[np.dtype[Any], tuple[int, ...], bool]:
        """The samples' dtype, shape and order, as the ``.npy`` header declares them."""
        from numpy.lib import format as npy

        try:
            version = npy.read_magic(stream)
            if version == (1, 0):
                shape, fortran, dtype = npy.read_array_header_1_0(stream)
            elif version == (2, 0):
                shape, fortran, dtype = npy.read_array_header_2_0(stream)
            else:
                raise ValueError(f'.npy format version {version} is not read')
        except Exception as exc:  # numpy's parser raises many kinds (ValueError, TokenError, ...)
            raise EncodingError(
                f'Encoder {self.identifier!r}: not an audio clip (sample rate, then .npy samples): {exc}.'
            ) from exc
        return dtype, tuple(shape), bool(fortran)


audio = AudioEncoder('audio')
