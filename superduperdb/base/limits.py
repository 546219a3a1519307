"""Bounds on decoded values (``CFG.limits``), checked from a value's header before anything
is allocated.

A few hundred bytes can declare an image of billions of pixels or an array of 10**15
samples; a decoder that believes its header allocates (or loops over) what it declares. So
each encoder reads the sizes a header declares, checks them here, and only then decodes:

>>> from superduperdb import CFG
>>> check_pixels(640, 480, 'An image')
>>> with CFG.override(**{'limits.max_pixels': 1000}):
...     check_pixels(640, 480, 'An image')
Traceback (most recent call last):
...
superduperdb.base.exceptions.EncodingError: An image of 640x480 pixels (0.3 megapixels) is over ...
"""

from __future__ import annotations

from superduperdb.base.config import CFG
from superduperdb.base.exceptions import EncodingError


def check_pixels(width: int, height: int, what: str) -> None:
    """Refuse ``width x height`` pixels over ``limits.max_pixels`` (or not positive)."""
    limit = CFG.limits.max_pixels
    if width <= 0 or height <= 0:
        raise EncodingError(f'{what} declares {width}x{height} pixels; an image has at least one.')
    if width * height > limit:
        raise EncodingError(
            f'{what} of {width}x{height} pixels ({width * height / 1e6:.1f} megapixels) is over '
            f'limits.max_pixels ({limit} pixels). Store a smaller image, or raise the setting on '
            'every process that reads these values.'
        )


def check_bytes(n: int, what: str) -> None:
    """Refuse a value that takes more than ``limits.max_value_bytes`` bytes once decoded."""
    limit = CFG.limits.max_value_bytes
    if n > limit:
        raise EncodingError(
            f'{what} takes {n} bytes decoded, over limits.max_value_bytes ({limit}). Store it in '
            'smaller pieces, or raise the setting on every process that reads these values.'
        )
