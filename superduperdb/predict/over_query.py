"""Predict and fit over a query: read in chunks, batch through the model, write back.

``predict_over_query`` is incremental and idempotent: each stored output
records the model version and a fingerprint of the exact input, so a rerun
computes only rows that are new, changed, or failed before. A row on which
the model raises, or whose output cannot be encoded or stored, does not stop
the job: its error goes to the failure ledger and the rest of the chunk is
written. Progress is committed chunk by chunk,
so a crashed predict resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from typing import TYPE_CHECKING, Any

from superduperdb.base.document import Encodable
from superduperdb.base.exceptions import ConfigError, MissingDependencyError, QueryError
from superduperdb.predict.readers import (
    Inputs,
    Key,
    check_key,
    fingerprints_now,
    input_of,
    key_name,
    only,
    reader,
    value_at,
)
from superduperdb.predict.usage import share_budget, took
from superduperdb.query.filters import check_user_table
from superduperdb.store import encoding
from superduperdb.store.chunks import chunk_table, store_chunks
from superduperdb.store.names import check_input_keys, check_row_key

if TYPE_CHECKING:
    from superduperdb.components.encoder import BaseEncoder
    from superduperdb.components.model import Model
    from superduperdb.datalayer.datalayer import Datalayer
    from superduperdb.query.objects import Find

logger = logging.getLogger(__name__)

Progress = Callable[[int, int | None], None]  # (rows done so far, total rows or None)


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
    #: outputs not stored because their row's input changed while the model ran: the job of
    #: the newer input stores its own (see Outputs.write_if_current)
    superseded: int = 0
    errors: dict[Any, str] = field(default_factory=dict)  # a sample: source id -> error
    usage: dict[str, Any] | None = None  # an API model's requests, tokens, errors, cost: take_usage

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
    progress: Progress | None = None,
    backoff: bool = False,
    on_usage: Callable[[dict[str, Any]], None] | None = None,
    stored: bool = False,
) -> PredictReport:
    """Run ``model`` over the rows of ``select`` and store its outputs; see the module docstring.

    ``progress`` is called after each chunk with (rows done so far, total rows or
    None when unknown). ``backoff``: rows in the failure ledger are retried only once
    ``cdc.retry_backoff`` seconds, doubled per failure up to ``cdc.retry_max``, have passed
    since they last failed (the change-capture reconcile uses it); otherwise every failed
    row is retried. ``on_usage``: told what an API model used after each chunk (see ``usage``).
    ``stored``: the model was loaded from the metadata store (a job's): no need to look it up.
    """
    key = check_key(key)
    check_user_table(select.table)
    check_row_key(db.databackend, select.table)
    if model.version is None or (
        not stored and model.version not in db.metadata.versions(model.type_id, model.identifier)
    ):
        db.add(model)  # once added, in-memory state (caches, counters) does not make new versions
    table = select.table
    out = db.outputs.register(table, key_name(key), model.identifier)
    shown = progress is not None or _interactive()  # else the total is not worth a count
    total = db.databackend.count(table, select.filter) if select.limit_n is None and shown else None
    run = _Run(db, model, table, key, out, overwrite=overwrite, backoff=backoff)
    share_budget(db, model)  # an API model's rate limits: one budget for every process of db
    size = chunk_size or db.chunk_size
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= 1_000_000:
        raise QueryError(f'chunk_size is a number of rows from 1 to 1000000, got {size!r}.')
    read = reader(db, select, key, features, run.pk, size)
    run.inputs_now = functools.partial(fingerprints_now, read, select, run.pk, size)
    # SQL reads an unsorted selection in key order: a chunk's rows are one range of keys (a
    # lake's rows come in file order; its inputs never change, so they are never read again)
    backend = db.databackend
    run.ranged = backend.has_schema and not backend.append_only and not select.sort_by and run.pk != '_key'
    with _progress(total, f'{model.identifier} on {key_name(key)}', progress) as bar:
        run.on_batch = bar.batch
        for chunk in read(select):
            run.chunk(*chunk)
            bar.update(run.report.total, len(chunk[0]))
            run.report.usage = took(model, run.report.usage, on_usage)
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug('a chunk of %d rows of %r done: %s', len(chunk[0]), table, run.report)
    for _ in range(_RECOMPUTE_ROUNDS):  # rows whose input changed while their output was written
        again, run.withdrawn = run.withdrawn, []
        resync, run.resync = run.resync, []
        if not again and not resync:
            break
        for rows, force in ((again, False), (resync, True)):
            for chunk in read(only(select, run.pk, rows)) if rows else ():
                run.chunk(*chunk, again=True, force=force)
    run.report.superseded += len(run.withdrawn)  # still changing: the jobs of their changes follow
    run.report.usage = took(model, run.report.usage, on_usage)
    if run.report.failed:
        logger.warning('%s; see db.metadata.failures(%r)', run.report, out)
    return run.report


def partition(db: Datalayer, select: Find, parts: int, *, min_rows: int = 1) -> list[Find]:
    """``select`` split into up to ``parts`` selections over consecutive ranges of the primary key.

    Together they select exactly the rows of ``select``, each row in one of them, so predict
    jobs over them (run in parallel on a cluster) compute each output once. Each range gets
    at least ``min_rows`` rows; a selection with a limit, a skip or a sort, or over a table
    with a composite key, stays whole. The boundaries are read from the database: one
    count, and one key per boundary (at its offset in key order).
    """
    backend = db.databackend
    pk = backend.primary_key(select.table)
    if parts <= 1 or select.limit_n is not None or select.skip_n or select.sort_by or pk == '_key':
        return [select]
    total = backend.count(select.table, select.filter)
    parts = min(parts, total // max(1, min_rows))
    if parts <= 1:
        return [select]
    bounds: list[Any] = []
    for i in range(1, parts):
        for chunk in backend.find(
            select.table, select.filter, projection={pk: 1}, sort=[(pk, 1)], skip=i * total // parts, limit=1
        ):
            bounds.extend(row[pk] for row in chunk)
    bounds = list(dict.fromkeys(bounds))  # rows may have gone meanwhile: no empty ranges
    ranges: list[dict[str, Any]] = []
    for lo, hi in zip([None, *bounds], [*bounds, None]):
        condition = {**({'$gte': lo} if lo is not None else {}), **({'$lt': hi} if hi is not None else {})}
        ranges.append({pk: condition})
    return [
        dataclasses.replace(select, filter={'$and': [select.filter, r]} if select.filter else r)
        for r in ranges
    ]


#: how many times a predict computes again, from their new inputs, the rows whose input changed
#: while their outputs were written (each round only those rows; a row changing faster than
#: that is left to the jobs of its changes)
_RECOMPUTE_ROUNDS = 3
#: rows of a chunk up to which their stored fingerprints are read without first looking
#: whether the output table is empty (one query either way)
_FEW = 64


# ----- computing and writing a chunk -----------------------------------------------
class _Run:
    """The state of one predict over a query, and what it does with each chunk."""

    def __init__(
        self,
        db: Datalayer,
        model: Model,
        table: str,
        key: Key,
        out: str,
        *,
        overwrite: bool,
        backoff: bool = False,
    ) -> None:
        self.db, self.model, self.table, self.key, self.out = db, model, table, key, out
        self.overwrite = overwrite
        self.pk = db.databackend.primary_key(table)
        self.report = PredictReport(model.identifier, model.version, key)
        failures = db.metadata.failures(out)
        self.had_failures = bool(failures)
        #: the rows in the failure ledger when the run started (source ids as text): an entry goes
        #: when its row's output is current, whoever stored it (another process, a later job)
        self.ledger = {str(record['source_id']) for record in failures}
        #: ledger rows not due for a retry yet (by source id as text)
        self.waiting = _not_due(failures) if backoff else set()
        #: nothing stored yet: no fingerprints to read (None: not looked, see _stored_for)
        self.fresh: bool | None = None
        self.inputs: Sequence[Any] = ()  # the last chunk's decoded inputs (see chunk)
        self.on_batch: Callable[[int], None] | None = None  # told the size of each batch computed
        #: ``{source id: fingerprint of its input now}``, read at write time (see Outputs.write_if_current)
        self.inputs_now: Callable[..., dict[Any, str]] = lambda ids, **_: {}
        #: rows whose outputs were withdrawn, their input having changed as they were written
        self.withdrawn: list[Any] = []
        #: a chunker's rows whose chunks were stored from an input that changed meanwhile: the
        #: job of the new input may have stored its chunks before these replaced them, so they
        #: are made again from the input as it is now, whatever the stored output says
        self.resync: list[Any] = []
        #: whether a chunk's rows are the range of keys from its first to its last (see fingerprints_now)
        self.ranged = False

    def chunk(
        self,
        ids: list[Any],
        prints: list[str],
        inputs_of: Inputs,
        *,
        again: bool = False,
        force: bool = False,
    ) -> None:
        """Compute and store the outputs of the rows of one chunk that are not current.

        ``again``: the rows were counted already (a second round for rows whose input changed
        while their outputs were written). ``force``: compute them even where their stored
        output is current (a chunker's chunks written from an older input: see _store_chunks).
        """
        db, model, report = self.db, self.model, self.report
        if not again:
            report.total += len(ids)
        stored = self._stored_for(ids, again)
        if self.overwrite or force or not stored:
            todo = list(range(len(ids)))
        else:
            version = model.version
            todo = [i for i, (id_, fp) in enumerate(zip(ids, prints)) if stored.get(id_) != (version, fp)]
        if self.ledger and len(todo) < len(ids):  # current now, so no longer failed
            current = set(range(len(ids))).difference(todo)
            self._clear([ids[i] for i in sorted(current) if str(ids[i]) in self.ledger])
        if self.waiting:
            todo = [i for i in todo if str(ids[i]) not in self.waiting]
        if not again:
            report.skipped += len(ids) - len(todo)
        if not todo:
            return
        everything = len(todo) == len(ids)
        todo_ids = list(ids) if everything else [ids[i] for i in todo]
        # The decoded chunk stays referenced until the next one replaces it: freed at the end of
        # each chunk, its megabytes went back to the OS and were faulted in again for the next
        # (~700 page faults a chunk, a fifth of a fast predict's time on SQLite).
        self.inputs = inputs = inputs_of(todo)
        outputs, failures = _run_isolating_failures(model, inputs, todo_ids, self.on_batch)
        # arrays of one dtype and shape: encoded at once, the writer stores their bytes (SQL: no
        # value object per row); else each output wrapped with its encoder
        at_once = (
            None if failures or model.chunks or db.databackend.self_describing else _at_once(model, outputs)
        )
        encoder, outputs = at_once or (None, _wrap_all(model, outputs, failures))
        version = model.version or 0
        if model.chunks:  # the chunks become rows of the chunk table; each row's output: their keys
            outputs = self._store_chunks(todo_ids, outputs, failures, version)
        if everything and not failures:
            rows = list(zip(todo_ids, outputs, repeat(version), prints))
        else:
            rows = [
                (todo_ids[j], outputs[j], version, prints[i]) for j, i in enumerate(todo) if j not in failures
            ]
        # stored only if the row's input is still the one computed from (a slower job for an older
        # value never replaces a newer output); a row whose output cannot be encoded or stored
        # fails alone, as if its model call had failed
        inputs_now = self.inputs_now
        if self.ranged:
            inputs_now = functools.partial(self.inputs_now, within=(ids[0], ids[-1]))
        written = db.outputs.write_if_current(
            self.table,
            key_name(self.key),
            model.identifier,
            self.out,
            rows,
            inputs=inputs_now,
            replace=[r[0] for r in rows if r[0] in stored] if stored else [],
            encoder=encoder,
        )
        failed: dict[Any, BaseException] = {todo_ids[j]: exc for j, exc in failures.items()}
        if failed and not db.databackend.append_only:
            # a failure on an input changed since is not the row's: the job of its new input runs
            now = inputs_now(list(failed))
            computed_from = dict(zip(ids, prints))
            for row_id in [r for r in failed if now.get(r) != computed_from.get(r)]:
                del failed[row_id]
                report.superseded += 1
        gone = {*written.failed, *written.superseded, *written.withdrawn}
        if gone:
            rows = [r for r in rows if r[0] not in gone]
            failed.update(written.failed)
        if model.chunks:  # chunks stored from an input changed since: made again from the new one
            self.resync.extend(written.superseded)
        else:
            report.superseded += len(written.superseded)
        self.withdrawn.extend(written.withdrawn)
        if failed:
            db.metadata.record_failures(self.out, failed)
            self.had_failures = True
            self.ledger.update(map(str, failed))
            for row_id, exc in list(failed.items())[:10]:
                report.errors.setdefault(row_id, f'{type(exc).__name__}: {exc}')
        if self.had_failures:
            self._clear([r[0] for r in rows])
        report.computed += len(rows)
        report.failed += len(failed)

    def _stored_for(self, ids: list[Any], again: bool) -> dict[Any, tuple[int, str]]:
        """The stored outputs' ``(version, fingerprint)`` of rows ``ids``. Whether the output table
        is empty is looked at once, on the first chunk of more than a few rows: a backfill into
        a new table then reads no fingerprints; a job of a few rows reads theirs in one query,
        which costs what the look would."""
        if not again and self.fresh is None and len(ids) > _FEW:
            self.fresh = _nothing_in(self.db, self.out)
        if self.fresh and not again:
            return {}
        return self.db.outputs.fingerprints(self.out, ids)

    def _store_chunks(
        self, ids: list[Any], outputs: list[Any], failures: dict[int, BaseException], version: int
    ) -> list[Any]:
        """A chunker's outputs go to its chunk table (see :func:`store_chunks`); each row's
        output stored here: the keys of its chunks."""
        name = chunk_table(self.table, key_name(self.key), self.model.identifier)
        return store_chunks(self.db, name, self.model.identifier, ids, outputs, failures, version)

    def _clear(self, source_ids: list[Any]) -> None:
        """Ledger entries of rows whose outputs are current go (one query; none when none)."""
        if source_ids:
            self.db.metadata.clear_failures(self.out, source_ids)
            self.ledger.difference_update(map(str, source_ids))


def _nothing_in(db: Datalayer, table: str) -> bool:
    """Whether ``table`` holds no row: one row looked for, not all counted (a count of a large
    output table cost a predict of one row 46 ms on PostgreSQL)."""
    backend = db.databackend
    if not backend.has_table(table):
        return True
    for rows in backend.find(table, {}, projection={'_id': 1}, limit=1, chunk_size=1):
        return not rows
    return True


def _not_due(failures: list[dict[str, Any]]) -> set[str]:
    """Source ids (as text) of ledger rows whose backoff since their last failure has not passed."""
    from superduperdb.base.config import CFG

    now = time.time()
    waiting = set()
    for record in failures:
        attempts = max(1, int(record.get('attempts') or 1))
        pause = min(CFG.cdc.retry_max, CFG.cdc.retry_backoff * 2 ** (attempts - 1))
        if now < float(record.get('failed_at') or 0.0) + pause:
            waiting.add(str(record['source_id']))
    return waiting


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
    key = check_key(X)
    check_user_table(select.table)
    if validation_select is not None:
        check_user_table(validation_select.table)
    features: dict[str, str] = kwargs.pop('features', None) or {}
    keys = key if isinstance(key, tuple) else (key,)
    for what, checked in (
        ('X', [k for k in keys if k not in features]),
        ('y', [y] if isinstance(y, str) else []),
    ):
        for q in [select] if validation_select is None else [select, validation_select]:
            check_input_keys(db.databackend, q.table, checked, filter=q.filter, what=what)
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
    for docs in db.read(select, attach=bool(features)).chunks():
        for doc in docs:
            inputs.append(input_of(doc, key, features))
            if y is not None:
                targets.append(value_at(doc, y))
    if model.preprocess is not None:
        inputs = [model.preprocess(x) for x in inputs]
    return inputs, targets


# ----- helpers ------------------------------------------------------------------


def _run_isolating_failures(
    model: Model, inputs: Sequence[Any], ids: Sequence[Any], on_batch: Callable[[int], None] | None = None
) -> tuple[list[Any], dict[int, BaseException]]:
    """Outputs for every input; rows that raise are retried alone and reported by index."""
    outputs: list[Any] = [None] * len(inputs)
    failures: dict[int, BaseException] = {}
    step = max(1, model.batch_size)
    for lo in range(0, len(inputs), step):
        # one batch: as it is (a StackedRows keeps its stacked array); slices are lists of their own
        batch = inputs if lo == 0 and len(inputs) <= step else inputs[lo : lo + step]
        try:
            outputs[lo : lo + len(batch)] = model._run(batch)
        except Exception:
            logger.debug('batch at %s failed; retrying its rows one by one', lo, exc_info=True)
            for i, x in enumerate(batch, start=lo):
                try:
                    (outputs[i],) = model._run([x])
                except (ConfigError, MissingDependencyError):
                    raise  # set-up problems fail the job once, not every row
                except Exception as exc:
                    failures[i] = exc
        if on_batch is not None:
            on_batch(len(batch))
    return outputs, failures


_PLAIN = frozenset({int, float, str, bool, type(None)})


def _wrap_all(model: Model, values: list[Any], failures: dict[int, BaseException] | None = None) -> list[Any]:
    """:func:`_wrap` for a batch: plain values as they are, one encoder per dtype and shape.

    ``failures``: rows already failed (skipped); a value that cannot be wrapped joins them.
    """
    if model.encoder is None and _PLAIN.issuperset(map(type, values)):
        return values
    if model.encoder is not None and not failures:  # the batch in one pass (a model's vectors)
        encoder = model.encoder
        try:
            return [v if isinstance(v, Encodable) else encoder(v) for v in values]
        except Exception:  # a value the encoder refuses: row by row below, that row fails alone
            pass
    encoders: dict[Any, Any] = {}
    failures = {} if failures is None else failures
    wrapped: list[Any] = []
    for i, value in enumerate(values):
        if i in failures:
            wrapped.append(None)
            continue
        try:
            wrapped.append(_wrap(model, value, encoders))
        except Exception as exc:  # a value the model's encoder refuses: that row fails, not the chunk
            failures[i] = exc
            wrapped.append(None)
    return wrapped


def _at_once(model: Model, values: list[Any]) -> tuple[BaseEncoder, list[bytes]] | None:
    """``(encoder, stored bytes)`` of a batch of numpy arrays of one dtype and shape, the model's
    encoder's or one made for them as :func:`_wrap` makes it, encoded at once
    (:func:`encoding.encode_column`); None: wrap and encode them one by one."""
    encoder = model.encoder
    if encoder is None:
        first: Any = values[0] if values else None
        if type(first).__name__ != 'ndarray' or type(first).__module__ != 'numpy' or not first.ndim:
            return None
        from superduperdb.encoders.numpy import array

        try:
            encoder = array(first.dtype, first.shape)
        except Exception:  # a dtype with no encoder: each row fails on its own (see _wrap)
            return None
    data = encoding.encode_column(encoder, values)
    return None if data is None else (encoder, data)


def _wrap(model: Model, value: Any, encoders: dict[Any, Any] | None = None) -> Any:
    """Give array-like outputs an encoder; Python scalars, strings, lists and dicts go as they are.

    ``encoders``: the encoders made so far, by (dtype, shape), reused across a batch.
    """
    if isinstance(value, Encodable):
        return value
    if model.encoder is not None:
        return model.encoder(value)
    module = type(value).__module__
    if module == 'numpy' and getattr(value, 'ndim', 0) == 0:
        return value.item()
    if module != 'numpy' and not module.startswith('torch'):
        return value
    encoders = {} if encoders is None else encoders
    spec = (module, str(value.dtype), tuple(value.shape))
    if spec not in encoders:
        if module == 'numpy':
            from superduperdb.encoders.numpy import array

            encoders[spec] = array(value.dtype, value.shape)
        else:
            from superduperdb.encoders.torch import tensor

            encoders[spec] = tensor(str(value.dtype), tuple(value.shape))
    return encoders[spec](value if module == 'numpy' else value.detach().cpu())


def _interactive() -> bool:
    """Whether someone watches: stderr is a terminal, or this runs in a Jupyter kernel."""
    if sys.stderr.isatty():
        return True
    shell = getattr(sys.modules.get('IPython'), 'get_ipython', lambda: None)()
    return type(shell).__name__ == 'ZMQInteractiveShell'  # a notebook (not the terminal IPython)


#: Seconds between two progress reports within a chunk (a job's record is written at most
#: this often: see ``superduperdb.jobs.job.report_progress``).
_BATCH_REPORT_S = 0.25


class _progress:
    """Progress: a bar moved after each batch when someone watches (a terminal or a notebook:
    tqdm.auto draws a widget there), and the caller's callback at the start (0 of the total),
    after each chunk, and within a chunk at most every ``_BATCH_REPORT_S`` seconds: a job's
    record then shows its total at once and moves while a slow model works through a chunk
    of 1000 rows."""

    def __init__(self, total: int | None, desc: str, callback: Progress | None) -> None:
        self.total, self.desc, self.callback = total, desc, callback
        self.bar: Any = None
        self.drawn = 0  # rows the bar shows
        self.seen = 0  # rows done: those of the chunks done and of the batches computed since
        self.reported = time.monotonic()

    def __enter__(self) -> _progress:
        if _interactive():  # tqdm is imported only to draw
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, desc=self.desc, file=sys.stderr)
        if self.callback is not None:
            self.callback(0, self.total)
        return self

    def batch(self, rows: int) -> None:
        """A batch of ``rows`` computed (within a chunk)."""
        if self.bar is not None:
            self.bar.update(rows)
            self.drawn += rows
        self.seen += rows
        if self.callback is not None and time.monotonic() - self.reported >= _BATCH_REPORT_S:
            self.reported = time.monotonic()
            seen = self.seen if self.total is None else min(self.seen, self.total)  # rows computed again
            self.callback(seen, self.total)

    def update(self, done: int, step: int) -> None:
        """A chunk done: ``done`` rows so far (computed, skipped as current, or failed)."""
        if self.bar is not None and done > self.drawn:
            self.bar.update(done - self.drawn)
            self.drawn = done
        self.seen = done
        if self.callback is not None:
            self.reported = time.monotonic()
            self.callback(done, self.total)

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.close()
