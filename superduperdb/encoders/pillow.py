"""PIL images, stored in the format they came in (a JPEG stays a JPEG), else losslessly as PNG.

>>> import PIL.Image
>>> from superduperdb.encoders.pillow import pil_image
>>> im = PIL.Image.new('RGB', (4, 3), 'red')
>>> pil_image.decode(pil_image.encode(im)).size
(4, 3)

An image opened from a file (``PIL.Image.open``: its ``format`` is set) is stored in that
format and decodes to the same class (``JpegImageFile``); a JPEG is saved with its own
quantization tables and subsampling (``quality='keep'``), and one read back from the database
keeps its bytes while its pixels are unchanged, so storing it again loses nothing.
An image made or changed in memory (``convert``, ``resize``, ``new``: no ``format``) is stored
as :attr:`PILImageEncoder.format`, PNG by default.

Decoding reads PNG, JPEG, GIF, BMP, TIFF, WebP and PPM bytes (what cameras, browsers and
download jobs bring), and checks the size in the header against ``limits.max_pixels`` before
any pixel is decoded. What it returns can always be stored again: images in a colour space
PNG cannot hold (a CMYK JPEG, YCbCr or LAB TIFF) are converted to RGB(A), and images of
measurements PNG cannot hold without losing values (mode ``F``, 32-bit ``I``) are refused.
"""

from __future__ import annotations

import functools
import hashlib
import io
from dataclasses import dataclass
from typing import Any, ClassVar

from superduperdb.base._deps import require
from superduperdb.base.config import CFG
from superduperdb.base.exceptions import EncodingError
from superduperdb.base.limits import check_pixels
from superduperdb.components.encoder import BaseEncoder

#: Formats decoded, by Pillow's names. Others are refused: EPS runs Ghostscript, and the rare
#: formats' parsers see little use.
FORMATS = ('PNG', 'JPEG', 'GIF', 'BMP', 'TIFF', 'WEBP', 'PPM')

#: Colour spaces converted when the encoder's format cannot hold them: the conversion is the
#: one saving them would need anyway.
_CONVERT = {
    'CMYK': 'RGB',
    'YCbCr': 'RGB',
    'LAB': 'RGB',
    'HSV': 'RGB',
    'RGBX': 'RGB',
    'RGBa': 'RGBA',
    'La': 'LA',
    'PA': 'RGBA',
}


def _pil() -> Any:
    return require('PIL.Image', extra='pillow', what='The pil_image encoder')


@dataclass(kw_only=True)
class PILImageEncoder(BaseEncoder):
    """Encoder for ``PIL.Image.Image`` values: bytes of the image's own format (one of
    :data:`FORMATS`, where Pillow writes its mode), else of :attr:`format`."""

    runs_code: ClassVar[bool] = False  # reads plain data only

    format: str = 'PNG'

    def check(self, x: Any) -> Any:
        """``x`` in a mode :attr:`format` holds (colour spaces it cannot hold converted)."""
        if not isinstance(x, _pil().Image):
            raise EncodingError(
                f'Encoder {self.identifier!r} takes a PIL.Image.Image, got {type(x).__name__}. '
                'Open files with PIL.Image.open(path).'
            )
        return x if self._own_format(x) is not None else self._storable(x)

    def encode(self, x: Any) -> bytes:
        image = self.check(x)
        own = self._own_format(image)
        if own is not None:
            source = getattr(image, _SOURCE, None)
            if source is not None and source[1] == _pixels_digest(image):
                return bytes(source[0])  # read from these bytes and unchanged: not compressed again
            try:
                return _saved(image, own)
            except Exception:  # its format's writer refuses what its reader took (Pillow's bugs)
                image = self._storable(image.copy())  # a copy has no format: stored as self.format
        try:
            return _saved(image, self.format)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise EncodingError(
                f'Encoder {self.identifier!r} cannot store this {image.mode} image as {self.format}: {exc}.'
            ) from exc

    def decode(self, b: bytes) -> Any:
        pil = _pil()
        try:
            im = pil.open(io.BytesIO(b), formats=_formats())
            width, height = im.size
            check_pixels(width, height, f'An image ({im.format})')
            self._convertible(im.mode)  # refused before its pixels are decoded
            im.load()
        except EncodingError:
            raise
        except (pil.DecompressionBombError, pil.DecompressionBombWarning) as exc:  # Pillow's own guard
            raise EncodingError(
                f'An image is refused: {exc} superduperdb decodes at most limits.max_pixels '
                f'({CFG.limits.max_pixels}) pixels, and Pillow at most PIL.Image.MAX_IMAGE_PIXELS. '
                'Store a smaller image.'
            ) from exc
        except Exception as exc:  # truncated, corrupt or not an image: Pillow raises many kinds
            raise EncodingError(
                f'Encoder {self.identifier!r}: not a readable image ({", ".join(FORMATS)}): '
                f'{type(exc).__name__}: {exc}.'
            ) from exc
        image = im if self._own_format(im) is not None else self._storable(im)
        image.info = _savable_info(image.info, image.mode)
        if image is im and im.format in _LOSSY:  # stored again as it is, unless its pixels change
            setattr(image, _SOURCE, (b, _pixels_digest(image)))
        return image

    def _own_format(self, image: Any) -> str | None:
        """The format ``image`` was read from (a file, stored bytes), when it is one of
        :data:`FORMATS` and holds its mode as :attr:`format` does; else None (made or changed
        in memory). An image :attr:`format` cannot hold as it is (a CMYK JPEG) is converted and
        stored as :attr:`format`, and measurements it cannot hold (mode ``F``) stay refused:
        what is stored is what any reader of this encoder can take."""
        format = getattr(image, 'format', None)
        if format in FORMATS and _can_save(image.mode, format) and _can_save(image.mode, self.format):
            return str(format)
        return None

    def _storable(self, image: Any) -> Any:
        """``image``, or converted to the colour space :attr:`format` holds."""
        target = self._convertible(image.mode)
        return image if target is None else image.convert(target)

    def _convertible(self, mode: str) -> str | None:
        """None when :attr:`format` holds ``mode``, else the mode to convert to (or refused)."""
        if _can_save(mode, self.format):
            return None
        target = _CONVERT.get(mode)
        if target is not None and _can_save(target, self.format):
            return target
        raise EncodingError(
            f'Encoder {self.identifier!r} stores {self.format}, which cannot hold mode {mode!r} images '
            'without losing values. Convert the image first (for example image.convert("I;16") or '
            '.convert("L")), or store its pixels as an array: array(dtype, shape) from '
            'superduperdb.encoders.numpy.'
        )


@functools.cache
def _formats() -> tuple[str, ...]:
    """The formats of :data:`FORMATS` this Pillow can read (WebP is an optional part)."""
    pil = _pil()
    pil.init()
    return tuple(f for f in FORMATS if f in pil.OPEN)


#: Formats whose writer loses detail: an image read from them keeps its bytes (see encode).
_LOSSY = frozenset({'JPEG'})
#: The attribute of a decoded image holding (its bytes, the digest of its pixels then).
_SOURCE = '_superduperdb_source'


def _pixels_digest(image: Any) -> bytes:
    return hashlib.blake2b(image.tobytes(), digest_size=16).digest()


def _saved(image: Any, format: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **_save_options(image, format))
    return buffer.getvalue()


def _save_options(image: Any, format: str) -> dict[str, Any]:
    """What saving ``image`` as ``format`` needs to keep what it came with."""
    if format == 'WEBP':
        return {'lossless': True}  # its pixels as they are: not compressed a second time
    if format == 'GIF' and image.mode == 'L':
        # an optimized palette holds only the grays used, and Pillow reads a GIF whose palette
        # is not the full gray ramp as mode P: the value would come back as palette indexes
        return {'optimize': False}
    if format != 'JPEG':
        return {}
    options: dict[str, Any] = {
        'icc_profile': image.info.get('icc_profile'),
        'exif': image.info.get('exif', b''),
    }
    if getattr(image, 'format', None) == 'JPEG' and getattr(image, 'quantization', None):
        # its own tables: re-saving decoded pixels with them loses next to nothing
        options.update(quality='keep', subsampling='keep')
    return {k: v for k, v in options.items() if v is not None}


@functools.cache
def _can_save(mode: str, format: str) -> bool:
    """Whether Pillow writes ``mode`` images as ``format`` (tried once on a 1x1 image)."""
    pil = _pil()
    try:
        pil.new(mode, (1, 1)).save(io.BytesIO(), format=format)
    except Exception:  # an unknown mode, or one the format's writer refuses
        return False
    return True


def _savable_info(info: dict[str, Any], mode: str) -> dict[str, Any]:
    """``info`` without what would make saving the image fail: the writers read
    ``transparency`` and ``icc_profile`` from it, and a file may declare them in any shape."""
    info = dict(info)
    transparency = info.get('transparency')
    if transparency is not None and not _valid_transparency(transparency, mode):
        del info['transparency']
    if 'icc_profile' in info and not isinstance(info['icc_profile'], bytes):
        del info['icc_profile']
    return info


def _valid_transparency(value: Any, mode: str) -> bool:
    if mode == 'P':
        return isinstance(value, (int, bytes))
    if mode in ('1', 'L', 'I', 'I;16'):
        return type(value) is int
    if mode == 'RGB':
        return (
            isinstance(value, (tuple, list))
            and len(value) == 3
            and all(type(v) is int and 0 <= v <= 65535 for v in value)
        )
    return False


pil_image = PILImageEncoder('pil_image')
