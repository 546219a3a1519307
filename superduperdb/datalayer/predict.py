"""Predict and fit over a query: read in chunks, batch through the model, write back.

``predict_over_query`` is incremental and idempotent: each stored output
records the model version and a fingerprint of the exact input, so a rerun
computes only rows that are new, changed, or failed before. A row on which
the model raises does not stop the job: its error goes to the failure ledger
and the rest of the chunk is written. Progress is committed chunk by chunk,
so a crashed predict resumes where it stopped.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from superduperdb.base.document import Document, Encodable
from superduperdb.base.exceptions import ConfigError, MissingDependencyError, QueryError
from superduperdb.datalayer.outputs import OUTPUTS, fingerprint

if TYPE_CHECKING:
    from superduperdb.components.model import Model
    from superduperdb.datalayer.datalayer import Datalayer
    from superduperdb.datalayer.query import Find

logger = logging.getLogger(__name__)

Key = str | tuple[str, ...]


@dataclass
class PredictReport:
    """What a predict over a query did."""

    model: str
    version: int | None
    key: Key
    total: int = 0
    computed: int = 0
    skipped: int = 0
    failed: int = 0
    errors: dict[Any, str] = field(default_factory=dict)  # a sample: source id -> error

    def __str__(self) -> str:
        return (
            f'{self.model} v{self.version} on {self.key!r}: {self.computed} computed, '
            f'{self.skipped} up to date, {self.failed} failed (of {self.total})'
        )


def predict_over_query(
    db: Datalayer,
    model: Model,
    *,
    key: Any,
    select: Find,
    overwrite: bool = False,
    features: dict[str, str],
    chunk_size: int | None = None,
    progress: Callable[[int, int | None], None] | None = None,
) -> PredictReport:
    key = _check_key(key)
    if model.version is None or model.version not in db.metadata.versions(model.type_id, model.identifier):
        db.add(model)  # once added, in-memory state (caches, counters) does not make new versions
    table = select.table
    name = model.identifier
    out = db.outputs.register(table, _key_name(key), name)
    pk = db.databackend.primary_key(table)
    had_failures = bool(db.metadata.failures(out))
    fresh = db.databackend.count(out, {}) == 0  # nothing stored yet: no fingerprints to read
    report = PredictReport(name, model.version, key)
    total = db.databackend.count(table, select.filter) if select.limit_n is None else None
    chunks = db.databackend.find(
        table,
        select.filter,
        projection=_columns_needed(key, features, select),
        sort=select.sort_by,
        limit=select.limit_n,
        skip=select.skip_n,
        chunk_size=chunk_size or db.chunk_size,
    )
    with _progress(total, f'{name} on {_key_name(key)}') as bar:
        for raw in chunks:
            report.total += len(raw)
            prints = [_fingerprint_of(row, key, features) for row in raw]
            stored = {} if fresh else db.outputs.fingerprints(out, [row[pk] for row in raw])
            todo = [
                (row, fp)
                for row, fp in zip(raw, prints)
                if overwrite or stored.get(row[pk]) != (model.version, fp)
            ]
            report.skipped += len(raw) - len(todo)
            if todo:
                docs = db.decode_chunk(table, [row for row, _ in todo], attach=bool(features))
                inputs = [_input_of(doc, key, features) for doc in docs]
                outputs, failures = _run_isolating_failures(model, inputs, [doc[pk] for doc in docs])
                rows = [
                    (doc[pk], _wrap(model, outputs[i]), model.version or 0, fp)
                    for i, (doc, (_, fp)) in enumerate(zip(docs, todo))
                    if i not in failures
                ]
                db.outputs.write(
                    table, _key_name(key), name, out, rows, replace=[r[0] for r in rows if r[0] in stored]
                )
                if failures:
                    db.metadata.record_failures(out, {docs[i][pk]: exc for i, exc in failures.items()})
                    had_failures = True
                    for i, exc in list(failures.items())[:10]:
                        report.errors.setdefault(docs[i][pk], f'{type(exc).__name__}: {exc}')
                if had_failures:
                    db.metadata.clear_failures(out, [r[0] for r in rows])
                report.computed += len(rows)
                report.failed += len(failures)
            bar.update(len(raw))
            if progress is not None:
                progress(report.total, total)
    if report.failed:
        logger.warning('%s; see db.metadata.failures(%r)', report, out)
    return report


def fit_over_query(
    db: Datalayer,
    model: Model,
    *,
    X: Any,
    y: Any,
    select: Find,
    validation_select: Find | None = None,
    **kwargs: Any,
) -> Model:
    """Train ``model`` on the rows of ``select`` and store the trained model as a new version.

    ``validation_select`` picks validation rows, handed to the adapter as
    ``validation=(inputs, targets)`` (for metrics and keep-best in torch training).
    """
    key = _check_key(X)
    features: dict[str, str] = kwargs.pop('features', None) or {}
    inputs, targets = _collect(db, model, select, key, y, features)
    if not inputs:
        raise QueryError(f'fit: {select!r} selects no rows; nothing to train on.')
    if validation_select is not None:
        if 'validation' in kwargs:
            raise QueryError('fit: pass validation_select= or validation=, not both.')
        kwargs['validation'] = _collect(db, model, validation_select, key, y, features)
    metrics = model.fit_arrays(inputs, targets if y is not None else None, **kwargs)
    model.metrics = {**model.metrics, **metrics, 'trained_on': len(inputs)}
    return db.add(model)


def _collect(
    db: Datalayer, model: Model, select: Find, key: Key, y: Any, features: dict[str, str]
) -> tuple[list[Any], list[Any]]:
    """Preprocessed inputs and targets of the rows ``select`` picks, read in chunks."""
    inputs: list[Any] = []
    targets: list[Any] = []
    for docs in db._find(select, attach=bool(features)).chunks():
        for doc in docs:
            inputs.append(_input_of(doc, key, features))
            if y is not None:
                targets.append(_value_at(doc, y))
    if model.preprocess is not None:
        inputs = [model.preprocess(x) for x in inputs]
    return inputs, targets


# ----- helpers ------------------------------------------------------------------
def _check_key(key: Any) -> Key:
    if isinstance(key, list):
        key = tuple(key)
    if isinstance(key, str) or (isinstance(key, tuple) and key and all(isinstance(k, str) for k in key)):
        return key
    raise QueryError(
        f"X must be a key ('text'), a dotted path ('meta.text'), a tuple of keys or '_base', got {key!r}."
    )


def _columns_needed(key: Key, features: dict[str, str], select: Find) -> dict[str, int] | None:
    """Read only the input columns (the key comes anyway): less to fetch and decode."""
    keys = key if isinstance(key, tuple) else (key,)
    if '_base' in keys or select.projection is not None:
        return select.projection
    needed = {k.split('.')[0]: 1 for k in keys if k not in features}
    if features:
        needed[OUTPUTS] = 1  # on MongoDB the features live in the document
    return needed or {'_id': 1}


def _key_name(key: Key) -> str:
    return key if isinstance(key, str) else ','.join(key)


def _value_at(doc: dict[str, Any], path: str, features: dict[str, str] | None = None) -> Any:
    if not features and path in doc:  # a top-level field: the common case
        value = doc[path]
        return value.x if isinstance(value, Encodable) else value
    if features and path in features:
        try:
            value = doc[OUTPUTS][path][features[path]]
        except KeyError as exc:
            raise QueryError(
                f'Row {doc.get("_id")!r} has no output of model {features[path]!r} on {path!r} to use '
                f'as a feature. Run that model first: predict(X={path!r}, ...).'
            ) from exc
    elif path == '_base':
        value = {k: v for k, v in doc.items() if k != OUTPUTS}
    else:
        value = doc
        for part in path.split('.'):
            if isinstance(value, dict):
                value = value.get(part)
            elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            else:
                value = None
            if value is None:
                break
    return Document(value).unpack() if isinstance(value, dict) else _unwrap(value)


def _unwrap(value: Any) -> Any:
    return value.x if isinstance(value, Encodable) else value


def _input_of(doc: dict[str, Any], key: Key, features: dict[str, str]) -> Any:
    if isinstance(key, tuple):
        return tuple(_value_at(doc, k, features) for k in key)
    return _value_at(doc, key, features)


def _fingerprint_of(row: dict[str, Any], key: Key, features: dict[str, str]) -> str:
    if type(key) is str and key in row and key not in features:
        return fingerprint(row[key])
    keys = key if isinstance(key, tuple) else (key,)
    parts: list[Any] = []
    for k in keys:
        if k == '_base':
            parts.append({c: v for c, v in row.items() if c != OUTPUTS})
        elif k in features:
            parts.append(f'feature:{features[k]}')  # outputs change only with their model
        else:
            parts.append(_value_at_raw(row, k))
    return fingerprint(parts)


def _value_at_raw(row: dict[str, Any], path: str) -> Any:
    value: Any = row
    for part in path.split('.'):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _run_isolating_failures(
    model: Model, inputs: Sequence[Any], ids: Sequence[Any]
) -> tuple[list[Any], dict[int, BaseException]]:
    """Outputs for every input; rows that raise are retried alone and reported by index."""
    outputs: list[Any] = [None] * len(inputs)
    failures: dict[int, BaseException] = {}
    step = max(1, model.batch_size)
    for lo in range(0, len(inputs), step):
        batch = list(inputs[lo : lo + step])
        try:
            outputs[lo : lo + len(batch)] = model._run(batch)
            continue
        except Exception:
            logger.debug('batch at %s failed; retrying its rows one by one', lo, exc_info=True)
        for i, x in enumerate(batch, start=lo):
            try:
                (outputs[i],) = model._run([x])
            except (ConfigError, MissingDependencyError):
                raise  # set-up problems fail the job once, not every row
            except Exception as exc:
                failures[i] = exc
    return outputs, failures


def _wrap(model: Model, value: Any) -> Any:
    """Give array-like outputs an encoder; Python scalars, strings, lists and dicts go as they are."""
    if isinstance(value, Encodable):
        return value
    if model.encoder is not None:
        return model.encoder(value)
    module = type(value).__module__
    if module == 'numpy':
        if getattr(value, 'ndim', 0) == 0:
            return value.item()
        from superduperdb.encoders.numpy import array

        return array(value.dtype, value.shape)(value)
    if module.startswith('torch'):
        from superduperdb.encoders.torch import tensor

        return tensor(str(value.dtype), tuple(value.shape))(value.detach().cpu())
    return value


class _progress:
    """A tqdm bar on stderr when it is a terminal; silent otherwise."""

    def __init__(self, total: int | None, desc: str) -> None:
        self.total, self.desc = total, desc

    def __enter__(self) -> Any:
        from tqdm import tqdm

        self.bar = tqdm(total=self.total, desc=self.desc, file=sys.stderr, disable=not sys.stderr.isatty())
        return self.bar

    def __exit__(self, *exc: Any) -> None:
        self.bar.close()
