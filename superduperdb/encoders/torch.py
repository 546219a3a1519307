"""torch tensors of a fixed dtype and shape (needs the ``torch`` extra).

torch is imported only when a tensor is encoded or decoded.

>>> from superduperdb.encoders.torch import tensor
>>> tensor('float32', (2, 3)).identifier
'torch.float32[2,3]'
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from superduperdb.base._deps import require
from superduperdb.base.exceptions import EncodingError
from superduperdb.components.encoder import BaseEncoder

_TORCH_DTYPES = ('float16', 'float32', 'float64', 'int8', 'int16', 'int32', 'int64', 'uint8', 'bool')


def _torch() -> Any:
    return require('torch', extra='torch', what='The tensor encoder')


@dataclass(kw_only=True)
class TensorEncoder(BaseEncoder):
    """Encoder for ``torch.Tensor`` values of one dtype and shape (stored on CPU)."""

    runs_code: ClassVar[bool] = False  # reads plain data only

    dtype: str
    shape: list[int]

    def check(self, x: Any) -> Any:
        torch = _torch()
        if not isinstance(x, torch.Tensor):
            raise EncodingError(
                f'Encoder {self.identifier!r} takes a torch.Tensor, got {type(x).__name__}. '
                'Convert with torch.as_tensor(value).'
            )
        if x.dtype != getattr(torch, self.dtype):
            raise EncodingError(
                f'Encoder {self.identifier!r} takes dtype torch.{self.dtype}, got {x.dtype}. '
                f'Convert with value.to(torch.{self.dtype}).'
            )
        if tuple(x.shape) != tuple(self.shape):
            raise EncodingError(
                f'Encoder {self.identifier!r} takes shape {tuple(self.shape)}, got '
                f'{tuple(x.shape)}. Use tensor({self.dtype!r}, {tuple(x.shape)}) for this shape.'
            )
        return x

    def encode(self, x: Any) -> bytes:
        return self.check(x).detach().cpu().contiguous().numpy().tobytes()

    def decode(self, b: bytes) -> Any:
        from superduperdb.encoders.numpy import value_bytes

        torch = _torch()
        if self.dtype not in _TORCH_DTYPES:  # a config stored by another process
            raise EncodingError(f'Encoder {self.identifier!r}: dtype {self.dtype!r} is not supported.')
        size = value_bytes(self.identifier, np.dtype(self.dtype), self.shape)
        if len(b) != size:
            raise EncodingError(
                f'Encoder {self.identifier!r} reads {size} bytes ({self.dtype}, shape '
                f'{tuple(self.shape)}); got {len(b)}.'
            )
        flat = np.frombuffer(b, dtype=self.dtype).reshape(self.shape)
        return torch.from_numpy(flat.copy())


def tensor(dtype: Any, shape: int | tuple[int, ...] | list[int]) -> TensorEncoder:
    """An encoder for torch tensors of ``dtype`` (``'float32'`` or ``torch.float32``) and ``shape``."""
    name = str(dtype).removeprefix('torch.')
    if name not in _TORCH_DTYPES:
        raise EncodingError(
            f'tensor(): dtype {dtype!r} is not supported; use one of {", ".join(_TORCH_DTYPES)}.'
        )
    if isinstance(shape, int):
        shape = (shape,)
    dims = [int(d) for d in shape]
    return TensorEncoder(f'torch.{name}[{",".join(map(str, dims))}]', dtype=name, shape=dims)
