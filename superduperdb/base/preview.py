"""Values as a browser can show them: the JSON the dashboard draws its tables from.

A document's values stay JSON (numbers, text, lists, dicts), cut to a readable size; values
a browser cannot read from their bytes are summarised (the same summaries as the notebook
HTML of :mod:`superduperdb.base.html`):

- an image: ``{'_image': <PNG thumbnail as a data: URL>, 'title': '640x480 RGB'}``;
- an array or tensor: ``{'_array': 'float32 (384,) [0.1, ...]'}``;
- an audio clip: ``{'_audio': <16-bit WAV as a data: URL>, 'title': '1.5 s at 16000 Hz'}``
  (its first :data:`AUDIO_SECONDS`, mono, at most :data:`AUDIO_RATE` Hz);
- bytes: ``{'_bytes': n}``; a reference not downloaded yet: ``{'_pending': uri}``.

Those shapes are the server's own and cannot be forged by data: a mapping from the data
(a JSON value, a dict in a row or a model's output) is always sent wrapped, as
``{'_data': {...}}``, so a row holding ``{"_image": "data:image/png;base64,...", "title":
"Session expired: ..."}`` arrives as ``{'_data': {'_image': ..., 'title': ...}}`` and the
dashboard shows it as text. Every mapping in a value position is therefore one this module
made: a preview, or the ``_data`` wrapper. :func:`preview_document` previews a whole document
(its fields and the ``_outputs`` of each key and model).

>>> import numpy as np
>>> preview_document({'v': np.arange(3.0), 'b': b'xyz', 'd': {'_image': 'data:x'}})
{'v': {'_array': 'float64 (3,) [0., 1., 2.]'}, 'b': {'_bytes': 3}, 'd': {'_data': {'_image': 'data:x'}}}
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from typing import Any

from superduperdb.base.html import array_summary, thumbnail_url

#: the longer side of an image thumbnail, in pixels
THUMBNAIL = 96
#: the stretch of an audio clip sent for playing, in seconds (mono, at most AUDIO_RATE Hz:
#: about 80 KB a clip, so a page of 50 rows stays a few MB)
AUDIO_SECONDS = 5.0
AUDIO_RATE = 8000
_TEXT = 2000  # characters of a string sent
_ITEMS = 20  # items of a list sent
#: the key wrapping a mapping that came from the data (see the module docstring)
DATA = '_data'
_OUTPUTS = '_outputs'


def preview_document(document: Mapping[str, Any]) -> dict[str, Any]:
    """A document in the display form: each field's value through :func:`preview`, and its
    ``_outputs`` (``{key: {model: output}}``, structure the server made) with each output
    through :func:`preview`."""
    shown: dict[str, Any] = {}
    for k, v in document.items():
        if k == _OUTPUTS and isinstance(v, Mapping) and all(isinstance(m, Mapping) for m in v.values()):
            shown[k] = {str(key): {str(m): preview(o) for m, o in outs.items()} for key, outs in v.items()}
        else:
            shown[str(k)] = preview(v)
    return shown


def preview(value: Any) -> Any:
    """``value`` (any value in a document) in the display form above; a mapping from the data
    comes wrapped, ``{'_data': {...}}``, so it can never pass for a preview."""
    from superduperdb.base.document import Encodable

    if isinstance(value, Encodable):
        if value.pending:
            return {'_pending': value.uri}
        return preview(value.x)
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return value if len(value) <= _TEXT else value[:_TEXT] + f'… ({len(value)} characters)'
    if isinstance(value, Mapping):
        return {DATA: {str(k): preview(v) for k, v in value.items()}}
    if isinstance(value, (list, tuple)):
        shown = [preview(v) for v in value[:_ITEMS]]
        return shown + [f'… ({len(value)} items)'] if len(value) > _ITEMS else shown
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {'_bytes': len(bytes(value))}
    module = type(value).__module__
    if module.startswith('PIL.') and hasattr(value, 'thumbnail'):
        return _image(value)
    if (
        hasattr(value, 'shape')
        and hasattr(value, 'dtype')
        and (module == 'numpy' or module.startswith('torch'))
    ):
        if getattr(value, 'ndim', 1) == 0:
            return value.item()
        return {'_array': array_summary(value)}
    if hasattr(value, 'samples') and hasattr(value, 'sample_rate'):
        return _audio(value)
    if module == 'numpy' and hasattr(value, 'item'):  # a numpy scalar
        return value.item()
    if hasattr(value, 'isoformat'):  # dates and times
        return value.isoformat()
    return str(value)  # ObjectIds, decimals, UUIDs


def _image(image: Any) -> dict[str, Any]:
    """A thumbnail of any image Pillow holds: shrunk first (never a copy of a large image),
    and measurements (modes ``I``, ``F``, ``I;16``: values beyond 0-255) stretched to grey."""
    w, h = image.size
    scale = min(1.0, THUMBNAIL / max(w, h, 1))
    gap = None if image.mode.startswith('I;16') else 2.0  # Pillow cannot reduce() those
    small = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), reducing_gap=gap)
    if small.mode in ('I', 'F') or small.mode.startswith('I;'):
        small = _stretched(small)
    elif small.mode == 'La':  # premultiplied alpha: Pillow converts it to LA only
        small = small.convert('LA')
    url, _ = thumbnail_url(small, THUMBNAIL)
    return {'_image': url, 'title': f'{w}x{h} {image.mode}'}


def _stretched(image: Any) -> Any:
    """A grey image of ``image``'s values, its lowest black and its highest white."""
    import numpy as np
    import PIL.Image

    values = np.nan_to_num(np.asarray(image, dtype='float64'), nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    span = high - low or 1.0
    return PIL.Image.fromarray(((values - low) * (255 / span)).astype('uint8'), mode='L')


def _audio(clip: Any) -> dict[str, Any]:
    """The start of a clip as a mono 16-bit WAV; samples of any integer or float type (a clip
    whose samples are neither is shown by its summary)."""
    import wave

    import numpy as np

    samples = np.asarray(clip.samples)
    rate = int(clip.sample_rate)
    if samples.dtype.kind not in 'iuf' or samples.ndim not in (1, 2) or rate <= 0:
        return {'_array': array_summary(samples), 'title': f'audio at {rate} Hz'}
    stride = -(-rate // AUDIO_RATE)  # ceil: a whole number of samples skipped
    kept = samples[: int(AUDIO_SECONDS * rate) : stride]
    mono = _unit(kept)
    if mono.ndim == 2:  # (frames, channels): their mean
        mono = mono.mean(axis=1) if mono.shape[1] else np.zeros(len(mono))
    pcm = (np.clip(np.nan_to_num(mono), -1.0, 1.0) * 32767).astype('<i2')
    buffer = io.BytesIO()
    with wave.open(buffer, 'wb') as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(max(1, rate // stride))
        out.writeframes(pcm.tobytes())
    data = base64.b64encode(buffer.getvalue()).decode()
    seconds = len(samples) / rate
    return {'_audio': f'data:audio/wav;base64,{data}', 'title': f'{seconds:.1f} s at {rate} Hz'}


def _unit(samples: Any) -> Any:
    """Samples as float64 in [-1, 1]: integers by their full range (unsigned ones centred)."""
    values = samples.astype('float64')
    if samples.dtype.kind in 'iu':
        half = float(2 ** (8 * samples.dtype.itemsize - 1))
        values = (values - half if samples.dtype.kind == 'u' else values) / half
    return values
