"""Turning documents into what a backend stores, and stored rows back into documents.

Two layouts, chosen by the backend:

- self-describing (MongoDB, and nested values everywhere): an encoded value is
  ``{'_content': {'encoder': name, 'version': v, 'bytes': ...}}``;
- column encoders (top-level values on SQL): the column holds the raw bytes and
  the metadata store maps the column to its encoder.

Nothing here renders data as text (no repr of values on this hot path).
"""

from __future__ import annotations

import base64
import datetime
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from superduperdb.base import references
from superduperdb.base.batches import StackedRows
from superduperdb.base.document import Document, Encodable
from superduperdb.base.exceptions import EncodingError, InvalidName, InvalidValue
from superduperdb.components.encoder import BaseEncoder
from superduperdb.query.filters import check_scalar, max_depth

CONTENT = '_content'
_FIELD_NAME = re.compile(r'^[A-Za-z_][A-Za-z0-9_\-]{0,62}$')
_PLAIN = (str, int, float, bool, type(None), datetime.datetime)

Register = Callable[[Any], BaseEncoder]
Lookup = Callable[[str, int | None], BaseEncoder]


def encode_documents(
    documents: Sequence[dict[str, Any]],
    *,
    self_describing: bool,
    register: Register,
    dotted_keys: bool = False,
) -> tuple[list[dict[str, Any]], dict[str, BaseEncoder]]:
    """``(rows, column_encoders)``: documents ready for the backend.

    ``register`` makes sure an encoder is known to the database and returns the
    registered (versioned) encoder. ``column_encoders`` maps each top-level key
    holding encoded values to its encoder (empty when self-describing).
    ``dotted_keys`` accepts paths like ``meta.size`` (the keys of a ``$set``).
    """
    registered: dict[int, BaseEncoder] = {}
    columns: dict[str, BaseEncoder] = {}

    def known(encoder: Any) -> BaseEncoder:
        key = id(encoder)
        if key not in registered:
            registered[key] = register(encoder)
        return registered[key]

    rows: list[dict[str, Any]] = []
    valid: set[str] = set()
    try:
        for doc in documents:
            row: dict[str, Any] = {}
            for key, value in doc.items():
                if key not in valid:
                    _check_key(key, dotted_keys)
                    valid.add(key)
                if isinstance(value, Encodable) and not self_describing:
                    encoder = known(value.encoder)
                    previous = columns.setdefault(key, encoder)
                    if previous.identifier != encoder.identifier:
                        raise EncodingError(
                            f'Field {key!r} holds values of two encoders in one insert: '
                            f'{previous.identifier!r} and {encoder.identifier!r}. A SQL column has one '
                            'encoder; store the other values in another field.'
                        )
                    if value.uri is not None and value.x is None:  # value.pending, spelled out for mypy
                        row[key] = references.to_stored(value.uri)
                    else:
                        row[key] = _stored(encoder, value)
                else:
                    row[key] = _encode_nested(value, key, self_describing, known, 1)
            rows.append(row)
    except InvalidValue as exc:
        exc.row = len(rows)  # the document being encoded
        raise
    return rows, columns


def _check_key(key: Any, dotted: bool) -> None:
    parts = key.split('.') if dotted and isinstance(key, str) else [key]
    if not all(isinstance(p, str) and _FIELD_NAME.fullmatch(p) for p in parts):
        raise InvalidName(
            f'Invalid field name {key!r}: use letters, digits, "_" or "-", starting with '
            'a letter or "_" (it becomes a column name on SQL databases).',
            name=str(key),
        )


def _encode_nested(value: Any, path: str, raw_bytes: bool, known: Register, depth: int) -> Any:
    if isinstance(value, _PLAIN):
        if type(value) in (int, str):
            check_scalar(value, path)
        elif isinstance(value, float) and not math.isfinite(value):
            raise _not_finite(value, path)
        return value
    if depth > max_depth():
        raise EncodingError(
            f'Field {path.split(".")[0]!r} is nested more than {max_depth()} levels deep '
            '(limits.max_depth); flatten it, or store it with an encoder.'
        )
    if isinstance(value, Encodable):
        encoder = known(value.encoder)
        if value.pending:
            return {CONTENT: {'encoder': encoder.identifier, 'version': encoder.version, 'uri': value.uri}}
        data = _stored(encoder, value)
        payload = data if raw_bytes else base64.b64encode(data).decode('ascii')
        return {CONTENT: {'encoder': encoder.identifier, 'version': encoder.version, 'bytes': payload}}
    if isinstance(value, dict):
        return {
            check_scalar(str(k), path): _encode_nested(v, f'{path}.{k}', raw_bytes, known, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_encode_nested(v, f'{path}.{i}', raw_bytes, known, depth + 1) for i, v in enumerate(value)]
    if isinstance(value, (bytes, bytearray, memoryview)):
        if raw_bytes or '.' not in path:
            return bytes(value)
        return {CONTENT: {'encoder': None, 'version': None, 'bytes': base64.b64encode(value).decode()}}
    if type(value).__module__ == 'numpy' and hasattr(value, 'item') and getattr(value, 'ndim', 1) == 0:
        return _encode_nested(value.item(), path, raw_bytes, known, depth)  # numpy scalar -> Python
    raise EncodingError(_no_encoder_message(value, path))


def _stored(encoder: BaseEncoder, value: Encodable) -> bytes:
    """The bytes stored for ``value``: those it was encoded to ahead of time (``value.data``,
    see Encodable), unless ``encoder`` seals what it stores; else ``x`` encoded now."""
    if value.data is not None and not encoder.runs_code:
        return value.data
    return encoder.to_stored(value.x)


def _not_finite(value: float, path: str) -> InvalidValue:
    """NaN and infinities: SQLite reads NaN back as NULL, MySQL refuses both, JSON has neither."""
    return InvalidValue(
        f'Field {path!r} holds {value!r}, which not every database stores (SQLite reads NaN back '
        'as NULL, MySQL/MariaDB and JSON refuse NaN and infinities), so it is refused on all of '
        'them. Store None for a missing number, or keep such values inside an array encoder '
        '(array(...) from superduperdb.encoders.numpy stores the bytes exactly).',
        field=path,
    )


def _no_encoder_message(value: Any, path: str) -> str:
    kind = f'{type(value).__module__}.{type(value).__qualname__}'
    hint = 'pickle(value) from superduperdb.encoders.pickle, or an Encoder of your own'
    if kind == 'numpy.ndarray':
        hint = f'array({str(value.dtype)!r}, {tuple(value.shape)})(value) from superduperdb.encoders.numpy'
    elif kind.startswith('torch.'):
        hint = 'tensor(dtype, shape)(value) from superduperdb.encoders.torch'
    elif kind.startswith('PIL.'):
        hint = 'pil_image(value) from superduperdb.encoders.pillow'
    return (
        f'Field {path!r} holds a {kind}, which the database cannot store as it is. '
        f'Wrap it with an encoder: {hint}.'
    )


def decode_rows(
    rows: Sequence[dict[str, Any]],
    *,
    column_encoders: Mapping[str, BaseEncoder],
    lookup: Lookup,
) -> list[Document]:
    """Documents with encoded values turned back into :class:`Encodable` values (the encoders
    of the columns the rows hold: those of columns not read are not loaded)."""
    out = []
    held = set().union(*rows)
    encoded = [(k, column_encoders[k]) for k in column_encoders if k in held]
    for row in rows:
        doc = Document(row)
        for key, encoder in encoded:
            value = row.get(key)
            if value is not None:
                data = value if type(value) is bytes else bytes(value)
                uri = references.from_stored(data)
                doc[key] = (
                    Encodable(encoder, uri=uri) if uri else Encodable(encoder, _decode(encoder, data, key))
                )
        for key, value in row.items():
            if type(value) in (dict, list):
                doc[key] = _decode_nested(value, lookup)
        out.append(doc)
    return out


def _decode_nested(value: Any, lookup: Lookup) -> Any:
    if isinstance(value, dict):
        content = value.get(CONTENT)
        if content is not None and len(value) == 1 and isinstance(content, dict):
            if 'bytes' not in content and content.get('uri'):  # a reference not downloaded yet
                return Encodable(lookup(content['encoder'], content.get('version')), uri=content['uri'])
            data = content['bytes']
            if isinstance(data, str):
                data = base64.b64decode(data)
            if content.get('encoder') is None:
                return bytes(data)
            encoder = lookup(content['encoder'], content.get('version'))
            return Encodable(encoder, _decode(encoder, bytes(data), content['encoder']))
        return {k: _decode_nested(v, lookup) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode_nested(v, lookup) for v in value]
    return value


def _decode(encoder: BaseEncoder, data: bytes, where: str) -> Any:
    try:
        return encoder.from_stored(data, where)
    except EncodingError:
        raise
    except Exception as exc:  # bytes the encoder cannot read: written by something else
        raise EncodingError(
            f'A stored value of {where!r} cannot be decoded by encoder {encoder.identifier!r} '
            f'({type(exc).__name__}); it was not written by that encoder. Overwrite or delete it.'
        ) from exc


def decode_column(encoder: BaseEncoder, values: Sequence[Any]) -> StackedRows | None:
    """The values of a fixed-width column (``encoder.fixed_width()``) decoded at once.

    One ``numpy.frombuffer`` over the joined bytes gives a stacked array; each value
    is a row of it, equal to what ``encoder.decode`` gives. None, when a value is
    missing, has another length or is a reference not downloaded yet: decode those
    rows one by one (:func:`decode_rows`) instead.
    """
    width = encoder.fixed_width()
    if width is None or None in values or set(map(len, values)) - {width}:
        return None
    import numpy as np

    try:
        joined = b''.join(values)
    except TypeError:  # not bytes-like
        return None
    marker = references.MARKER
    if width > len(marker):  # a reference may have this length: look for its marker, all rows at once
        heads = np.frombuffer(joined, dtype=np.uint8).reshape(len(values), width)[:, : len(marker)]
        if (heads == np.frombuffer(marker, dtype=np.uint8)).all(axis=1).any():
            return None
    stacked = np.frombuffer(joined, dtype=encoder._dtype)  # type: ignore[attr-defined]
    return StackedRows(stacked.reshape(len(values), *encoder.shape))  # type: ignore[attr-defined]


def encode_column(encoder: BaseEncoder, values: Sequence[Any]) -> list[bytes] | None:
    """The stored bytes of a batch of arrays for a fixed-width encoder, encoded at once.

    The counterpart of :func:`decode_column`: one ``numpy.stack`` and one ``tobytes``, cut into
    a value per row, each equal to ``encoder.to_stored(value)``. None (encode them one by one,
    which reports the rows that do not fit) unless every value is a numpy array of the
    encoder's dtype and shape and the encoder stores raw bytes.
    """
    width = encoder.fixed_width()
    if width is None or encoder.runs_code or not values:
        return None
    import numpy as np

    if set(map(type, values)) != {np.ndarray}:
        return None
    dtypes = {v.dtype for v in values}
    if dtypes != {encoder._dtype}:  # type: ignore[attr-defined]
        return None
    try:
        stacked = np.stack(values)  # C order: a row's bytes are what ascontiguousarray(value).tobytes() gives
    except ValueError:  # shapes differ
        return None
    if stacked.shape[1:] != tuple(encoder.shape):  # type: ignore[attr-defined]
        return None
    data = stacked.tobytes()
    return [data[at : at + width] for at in range(0, len(data), width)]
