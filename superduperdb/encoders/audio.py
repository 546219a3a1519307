"""Audio: samples (a numpy array, one column per channel) and a sample rate.

>>> import numpy as np
>>> from superduperdb.encoders.audio import Audio, audio
>>> clip = Audio(np.zeros((8, 2), dtype='float32'), 16000)
>>> audio.decode(audio.encode(clip)) == clip
True
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from superduperdb.base.exceptions import EncodingError
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


@dataclass(kw_only=True)
class AudioEncoder(BaseEncoder):
    """Stores an :class:`Audio` clip losslessly, whatever its dtype."""

    def check(self, x: Any) -> Audio:
        if isinstance(x, tuple) and len(x) == 2:
            x = Audio(np.asarray(x[0]), int(x[1]))
        if not isinstance(x, Audio) or not isinstance(x.samples, np.ndarray):
            raise EncodingError(
                f'Encoder {self.identifier!r} takes Audio(samples, sample_rate) or a '
                f'(numpy array, sample rate) tuple, got {type(x).__name__}.'
            )
        if x.samples.ndim not in (1, 2) or x.sample_rate <= 0:
            raise EncodingError(
                f'Encoder {self.identifier!r}: samples must be 1-d or 2-d (frames, channels) '
                f'and the sample rate positive; got shape {x.samples.shape}, rate {x.sample_rate}.'
            )
        return x

    def encode(self, x: Any) -> bytes:
        clip = self.check(x)
        buffer = io.BytesIO()
        buffer.write(_HEADER.pack(clip.sample_rate))
        np.save(buffer, clip.samples, allow_pickle=False)
        return buffer.getvalue()

    def decode(self, b: bytes) -> Audio:
        (rate,) = _HEADER.unpack_from(b)
        samples = np.load(io.BytesIO(b[_HEADER.size :]), allow_pickle=False)
        return Audio(samples, rate)


audio = AudioEncoder('audio')
