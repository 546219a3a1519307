"""How values, queries, jobs and errors travel between the client and the server, as JSON.

- An :class:`~superduperdb.base.document.Encodable` travels in the self-describing form
  ``{'_content': {'encoder': name, 'version': v, 'bytes': <base64>}}`` (a reference not yet
  downloaded: ``'uri'`` instead of ``'bytes'``); raw bytes as the same with ``'encoder': None``.
- A numpy array (a vector in ``like``, a model output without an encoder) becomes a list;
  a numpy scalar a number; a ``datetime`` ``{'_datetime': iso}``; a MongoDB ``ObjectId``
  ``{'_oid': hex}`` (so ids read from a find work in the next query's filter).
- A query is its ``to_dict()`` form with those values encoded.
- An error is ``{'error': {'type': class name, 'message': text}}``.

>>> to_json({'a': [1, b'x']})
{'a': [1, {'_content': {'encoder': None, 'version': None, 'bytes': 'eA=='}}]}
>>> to_json({'when': datetime.datetime(2024, 1, 2)})
{'when': {'_datetime': '2024-01-02T00:00:00'}}
>>> from_json(_) == {'when': datetime.datetime(2024, 1, 2)}
True
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime
import inspect
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from superduperdb.base import exceptions
from superduperdb.base.document import Document, Encodable
from superduperdb.base.exceptions import EncodingError, SuperDuperError
from superduperdb.query.filters import check_filter_values, max_depth
from superduperdb.server import errors

if TYPE_CHECKING:
    from superduperdb.components.encoder import BaseEncoder
    from superduperdb.jobs.job import Job

CONTENT = '_content'
DATETIME = '_datetime'
OBJECT_ID = '_oid'

Register = Callable[[Any], 'BaseEncoder']
Lookup = Callable[[str, 'int | None'], 'BaseEncoder']


# ----- values -----------------------------------------------------------------------
def to_json(value: Any, register: Register | None = None) -> Any:
    """``value`` as JSON-able data; ``register`` gives the (versioned) encoder of an Encodable."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, dict):
        return {str(k): to_json(v, register) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v, register) for v in value]
    if isinstance(value, Encodable):
        encoder: Any = register(value.encoder) if register is not None else value.encoder
        content: dict[str, Any] = {
            'encoder': encoder.identifier,
            'version': getattr(encoder, 'version', None),
        }
        if value.pending:
            content['uri'] = value.uri
        else:
            content['bytes'] = base64.b64encode(encoder.encode(value.x)).decode('ascii')
        return {CONTENT: content}
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = base64.b64encode(bytes(value)).decode('ascii')
        return {CONTENT: {'encoder': None, 'version': None, 'bytes': data}}
    if isinstance(value, datetime.datetime):
        return {DATETIME: value.isoformat()}
    if type(value).__module__ == 'numpy' and hasattr(value, 'tolist'):
        return value.tolist()  # arrays to (nested) lists, scalars to numbers
    if hasattr(value, 'detach') and hasattr(value, 'tolist'):  # a torch tensor
        return value.detach().cpu().tolist()
    if type(value).__module__ == 'bson.objectid':
        return {OBJECT_ID: str(value)}
    return str(value)  # Decimal, UUID ...


def from_json(value: Any, lookup: Lookup | None = None, *, strict: bool = False, _depth: int = 0) -> Any:
    """The inverse of :func:`to_json`: ``_content`` values become Encodables (through ``lookup``).

    Without ``lookup``, ``_content`` values other than raw bytes are left as they are. Values
    nest at most ``limits.max_depth`` levels. ``strict`` (the server, on requests): a dict holding
    ``_content`` must be exactly ``{'_content': {...}}``, so a request cannot leave a
    half-encoded value in the database for a later read to decode.
    """
    if _depth > max_depth():
        raise EncodingError(
            f'A value is nested more than {max_depth()} levels deep (limits.max_depth); flatten it.'
        )
    if isinstance(value, list):
        return [from_json(v, lookup, strict=strict, _depth=_depth + 1) for v in value]
    if not isinstance(value, dict):
        return value
    if len(value) == 1 and isinstance(value.get(DATETIME), str):
        try:
            return datetime.datetime.fromisoformat(value[DATETIME])
        except ValueError as exc:
            raise EncodingError(f'Not an ISO date-time: {value[DATETIME]!r}.') from exc
    if len(value) == 1 and isinstance(value.get(OBJECT_ID), str):
        return _object_id(value[OBJECT_ID])
    content = value.get(CONTENT)
    if len(value) == 1 and isinstance(content, dict):
        return _decode_content(content, value, lookup)
    if strict and CONTENT in value:
        raise EncodingError(
            '"_content" marks an encoded value: {"_content": {"encoder": name, "bytes": base64}} '
            'and nothing else beside it. Rename the field if it is plain data.'
        )
    return {k: from_json(v, lookup, strict=strict, _depth=_depth + 1) for k, v in value.items()}


def _object_id(text: str) -> Any:
    try:
        import bson
    except ImportError:  # no MongoDB driver here: nothing could use the id but as text
        return text
    try:
        return bson.ObjectId(text)
    except (bson.errors.InvalidId, TypeError) as exc:
        raise EncodingError(f'Not a MongoDB ObjectId: {text!r} (24 hex digits).') from exc


def _decode_content(content: dict[str, Any], whole: dict[str, Any], lookup: Lookup | None) -> Any:
    name, version = content.get('encoder'), content.get('version')
    if name is not None and not isinstance(name, str):
        raise EncodingError(f'"_content" names its encoder with a string, got {name!r}.')
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
        raise EncodingError(f'"_content" gives the encoder version as an int, got {version!r}.')
    data = None
    if 'bytes' in content:
        try:
            data = base64.b64decode(content['bytes'], validate=True)
        except (binascii.Error, TypeError, ValueError) as exc:
            raise EncodingError('"_content" bytes must be base64 text.') from exc
    if name is None:
        if data is None:
            raise EncodingError('"_content" without an encoder holds "bytes" (base64).')
        return data
    if lookup is None:
        return whole
    encoder = lookup(name, version)
    if data is None:
        uri = content.get('uri')
        if not isinstance(uri, str):
            raise EncodingError('"_content" holds "bytes" (base64) or a "uri".')
        return encoder(uri=uri)
    try:
        return Encodable(encoder, encoder.decode(data))
    except SuperDuperError:
        raise
    except Exception as exc:  # the bytes were not what the encoder expects
        raise EncodingError(
            f'Could not decode a value with encoder {name!r}: {type(exc).__name__}: {exc}.'
        ) from exc


def document_from_json(value: Any, lookup: Lookup) -> Document:
    decoded = from_json(value, lookup)
    return Document(decoded) if isinstance(decoded, dict) else decoded


# ----- queries ----------------------------------------------------------------------
def query_to_json(q: Any, register: Register) -> dict[str, Any]:
    """A query object's ``to_dict()`` with its documents, updates and like value encoded."""
    data = q.to_dict()
    for part in ('documents', 'update', 'filter'):
        if part in data:
            data[part] = to_json(data[part], register)
    if 'like' in data:
        data['like'] = {**data['like'], 'value': to_json(data['like']['value'], register)}
    return data


def query_from_json(data: Any, lookup: Lookup) -> Any:
    """A validated query object from :func:`query_to_json` output."""
    from superduperdb.base.exceptions import QueryError
    from superduperdb.query.objects import any_query_from_dict

    if not isinstance(data, dict):
        raise QueryError('A query is a JSON object like {"kind": "find", "table": "docs", "filter": {}}.')
    data = dict(data)
    for part in ('documents', 'update'):
        if part in data:
            data[part] = from_json(data[part], lookup, strict=True)
    if 'filter' in data:
        data['filter'] = from_json(data['filter'], strict=True)
        check_filter_values(data['filter'])
    if isinstance(data.get('like'), dict):
        data['like'] = {**data['like'], 'value': from_json(data['like'].get('value'), lookup, strict=True)}
    _no_encoded_paths(data.get('update'))
    return any_query_from_dict(data)


def _no_encoded_paths(update: Any) -> None:
    """An update from a request may not write inside an encoded value (``x._content...``)."""
    if not isinstance(update, dict):
        return
    for fields in update.values():
        if isinstance(fields, dict):
            for key in fields:
                if isinstance(key, str) and CONTENT in key.split('.'):
                    raise EncodingError(
                        f'Update path {key!r} reaches inside an encoded value; set the whole field '
                        'with {"_content": {...}} instead.'
                    )


# ----- jobs -------------------------------------------------------------------------
def job_to_json(job: Job, log_offset: int = 0) -> dict[str, Any]:
    """A job record as JSON; ``log`` from character ``log_offset`` on, ``log_size`` the whole length."""
    data: dict[str, Any] = {}
    for f in dataclasses.fields(job):
        if f.name not in ('db', 'client'):
            data[f.name] = getattr(job, f.name)
    data['args'] = json.loads(json.dumps(job.args, default=str))
    data['result'] = json.loads(json.dumps(job.result, default=str))
    data['log'] = job.log[max(0, log_offset) :]
    data['log_size'] = len(job.log)  # offsets count the stored log; what is sent is masked
    from superduperdb.base.masking import mask_secrets  # a traceback quoting a URI

    for name in ('error', 'log'):
        if isinstance(data.get(name), str):
            data[name] = mask_secrets(data[name])
    return data


# ----- errors -----------------------------------------------------------------------
#: HTTP status of each error class (the first that matches, so subclasses come first).
STATUS: tuple[tuple[type[SuperDuperError], int], ...] = (
    (errors.Unauthorized, 401),
    (errors.Forbidden, 403),
    (errors.RequestTooLarge, 413),
    (errors.CursorNotFound, 404),
    (errors.Overloaded, 503),
    (errors.IdempotencyKeyReused, 422),
    (errors.IdempotencyKeyInUse, 409),
    (exceptions.ComponentNotFound, 404),
    (exceptions.JobNotFound, 404),
    (exceptions.ComponentNotAllowed, 403),
    (exceptions.ComponentInUse, 409),
    (exceptions.ArtifactCorrupted, 500),  # the server's own store is damaged, not the request
    (exceptions.ConnectionFailed, 503),
    (exceptions.WriteFailed, 400),
    (exceptions.BackendError, 502),
    (exceptions.ServiceError, 502),
    (exceptions.MissingDependencyError, 501),
    (exceptions.JobFailed, 500),
    (errors.ServerError, 500),
)


def status_of(exc: SuperDuperError) -> int:
    for cls, status in STATUS:
        if isinstance(exc, cls):
            return status
    return 400  # QueryError, EncodingError, ConfigError, ComponentError: the request was wrong


def error_body(type_name: str, message: str) -> dict[str, Any]:
    from superduperdb.base.masking import mask_secrets  # every error a client sees, whatever its source

    return {'error': {'type': type_name, 'message': mask_secrets(message)}}


def _error_classes() -> dict[str, type[SuperDuperError]]:
    found: dict[str, type[SuperDuperError]] = {}
    for module in (exceptions, errors):
        for name, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, SuperDuperError):
                found[name] = obj
    return found


def error_from_json(status: int, body: Any) -> SuperDuperError:
    """The server's error as the same SuperDuperError class, with the server's message."""
    error = body.get('error') if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return errors.ServerError(f'The server answered HTTP {status} without an error message.')
    message = str(error.get('message', ''))
    cls = _error_classes().get(str(error.get('type')))
    if cls is None:  # a validation or routing error of the web framework
        cls = errors.ServerError if status >= 500 else exceptions.QueryError
        message = f'{error.get("type")}: {message}'
    exc = cls.__new__(cls)
    Exception.__init__(exc, message)
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if param.kind is inspect.Parameter.KEYWORD_ONLY:  # fields the server did not send
            setattr(exc, name, None)
    return exc
