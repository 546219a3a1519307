"""PIL images, stored losslessly as PNG.

>>> import PIL.Image
>>> from superduperdb.encoders.pillow import pil_image
>>> im = PIL.Image.new('RGB', (4, 3), 'red')
>>> pil_image.decode(pil_image.encode(im)).size
(4, 3)
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

from superduperdb.base._deps import require
from superduperdb.base.exceptions import EncodingError
from superduperdb.components.encoder import BaseEncoder


@dataclass(kw_only=True)
class PILImageEncoder(BaseEncoder):
    """Encoder for ``PIL.Image.Image`` values (PNG bytes, any mode PNG holds)."""

    format: str = 'PNG'

    def check(self, x: Any) -> Any:
        image = require('PIL.Image', extra='pillow', what='The pil_image encoder')
        if not isinstance(x, image.Image):
            raise EncodingError(
                f'Encoder {self.identifier!r} takes a PIL.Image.Image, got {type(x).__name__}. '
                'Open files with PIL.Image.open(path).'
            )
        return x

    def encode(self, x: Any) -> bytes:
        buffer = io.BytesIO()
        self.check(x).save(buffer, format=self.format)
        return buffer.getvalue()

    def decode(self, b: bytes) -> Any:
        image = require('PIL.Image', extra='pillow', what='The pil_image encoder')
        im = image.open(io.BytesIO(b))
        im.load()
        return im


pil_image = PILImageEncoder('pil_image')
