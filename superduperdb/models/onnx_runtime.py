"""sentence-transformers models run by ONNX Runtime (needs the ``onnx`` extra).

A :class:`~superduperdb.models.sentence_transformers.SentenceTransformerModel` on the CPU
runs here when ``onnxruntime`` is installed (``runtime='auto'``, the default) or when asked
(``runtime='onnx'``): the model's own modules (transformer, pooling, normalization, dense
layers: whatever ``modules.json`` lists) are exported once, in fp32, with
``torch.onnx.export`` to ``~/.cache/superduperdb/onnx/<fingerprint>.onnx`` (``$XDG_CACHE_HOME``
is honoured) and run by ONNX Runtime. Nothing is downloaded: the export is made from the
weights in memory, keyed by a hash of the weights, the modules and the torch version, so the
next process (a worker, a rerun) loads the file instead of exporting again.

The vectors are sentence-transformers' own: the texts are tokenized by the model's
``preprocess`` (its truncation, lower-casing, special tokens), the graph is its modules, and
each runner is checked when built: probe texts encoded both ways must agree to a cosine of
``0.9999`` or the runner is refused. What is faster (measured in benchmarks/README.md,
"embeddings.py"):

- ONNX Runtime's fused fp32 kernels instead of torch's eager ones, on a graph traced from the
  plain attention ops (see :func:`_eager_attention`);
- the texts of a call sorted by token length and run in small batches (8 by default, see
  ``ONNX_BATCH`` in sentence_transformers.py), so each batch pads only to its own longest;
- each distinct text computed once: a call's duplicates, and texts seen in the last
  ``recent`` calls' results (docstrings, product descriptions and boilerplate repeat);
- a call of several batches runs them side by side, one batch per core, each on one thread
  of a session with a one-thread pool: small batches split poorly across threads, so whole
  batches in parallel keep the cores busier (4.5 s instead of 5.2-5.7 s for 730 docstrings on
  2 cores). A call of one batch (a search's query text) runs on a second session with all
  cores' pool, built on the first such call, where it has the lowest latency (4.3 instead of
  5.8 ms for a short query); it holds its own copy of the weights (+100 MB resident for
  MiniLM);
- thread pools that sleep instead of spinning between batches (the cores are shared with the
  database and its client; spinning cost a fifth of the throughput on a loaded 2-core machine).

A model that cannot be exported (a custom module torch cannot trace, an image model) or
whose exported graph disagrees raises :class:`OnnxUnavailable` naming why; ``runtime='auto'``
logs that once and keeps using sentence-transformers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from superduperdb.base import forks
from superduperdb.base._deps import require

logger = logging.getLogger(__name__)

#: bump when the export changes (inputs, opset, wrapper): older cached files are not reused
_EXPORT_FORMAT = 2  # 2: attention exported as its plain ops (_eager_attention)
_OPSET = 17
#: texts the check encodes both ways: short, with punctuation and case, and one past the
#: longest sequence the model reads (its truncation is part of what is checked)
_PROBES = (
    'hello world',
    'Return the number of items in a container.',
    'The quick brown fox jumps over the lazy dog; THE LAZY DOG sleeps. ' * 60,
)
#: the lowest cosine between a probe's vector from ONNX Runtime and from sentence-transformers
MIN_COSINE = 0.9999
#: texts whose vectors are kept after a call, so that a later call skips them
RECENT = 4096
_INPUTS = ('input_ids', 'attention_mask', 'token_type_ids')


class OnnxUnavailable(Exception):
    """This model cannot run on ONNX Runtime here; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def cache_dir() -> Path:
    """Where exported models are kept: ``$XDG_CACHE_HOME/superduperdb/onnx`` (or ``~/.cache/...``)."""
    base = os.environ.get('XDG_CACHE_HOME') or str(Path.home() / '.cache')
    return Path(base) / 'superduperdb' / 'onnx'


class OnnxEmbedder:
    """A sentence-transformers model's ``encode`` on ONNX Runtime: see the module docstring.

    Build it with :func:`onnx_embedder`; ``encode(texts, batch_size)`` gives float32 vectors,
    one row per text, in the order of ``texts``.
    """

    def __init__(
        self,
        model: Any,
        session: Any,
        inputs: list[str],
        path: Path,
        *,
        recent: int = RECENT,
        workers: int | None = None,
    ) -> None:
        self.model, self.inputs, self.path = model, inputs, path
        self.exported = False  # whether building it exported the model (False: the cached file)
        self.recent: OrderedDict[str, np.ndarray] = OrderedDict()
        self.max_recent = recent
        self.dimensions = 0  # the length of its vectors: known once it has run (see _check)
        #: batches run side by side in a call of several (1: one after another)
        self.workers = workers or _cores()
        #: ONNX Runtime sessions by the threads each run uses, built on first use: 1 for the
        #: batches run side by side, ``workers`` for a call of one batch. The ``session``
        #: given here is the one-thread one (built and checked by :func:`onnx_embedder`).
        self.sessions: dict[int, Any] = {1: session}
        self.lock = threading.Lock()  # guards ``recent`` and ``sessions`` (encode runs in threads)
        forks.in_child(self._forked)

    def _forked(self) -> None:
        """In a forked child: a lock another thread of the parent held stays held there."""
        self.lock = threading.Lock()

    def encode(self, texts: Sequence[str], batch_size: int = 32) -> np.ndarray:
        """Vectors of ``texts`` (float32, one row each): sentence-transformers' ``encode``."""
        texts = list(texts)
        with self.lock:
            known = {t: self.recent[t] for t in texts if t in self.recent}
        todo = [t for t in dict.fromkeys(texts) if t not in known]
        if todo:
            for text, vector in zip(todo, self._compute(todo, max(1, batch_size))):
                known[text] = vector
        with self.lock:
            for text in dict.fromkeys(texts):  # the most recent last: the oldest go first
                self.recent[text] = known[text]
                self.recent.move_to_end(text)
            while len(self.recent) > self.max_recent:
                self.recent.popitem(last=False)
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        return np.stack([known[t] for t in texts])

    def _compute(self, texts: list[str], batch_size: int) -> list[np.ndarray]:
        """One vector per text: tokenized at once, run in batches of similar lengths."""
        return self._run(_features(self.model, texts), batch_size)  # padded to the longest of all

    def _run(self, features: Any, batch_size: int) -> list[np.ndarray]:
        """One vector per row of ``features`` (the tokenizer's output), in batches of similar lengths."""
        mask = features['attention_mask'].numpy()
        arrays = {name: features[name].numpy().astype(np.int64, copy=False) for name in self.inputs}
        lengths = mask.sum(axis=1)
        width = mask.shape[1]
        left = getattr(self.model.tokenizer, 'padding_side', 'right') == 'left'
        order = np.argsort(lengths, kind='stable')
        batches = []
        for lo in range(0, len(order), batch_size):
            rows = order[lo : lo + batch_size]
            longest = int(lengths[rows].max())
            cols = slice(width - longest, width) if left else slice(0, longest)
            feed = {name: np.ascontiguousarray(arrays[name][rows, cols]) for name in self.inputs}
            batches.append((rows, feed))
        if len(batches) > 1 and self.workers > 1:
            session = self.session(1)
            with ThreadPoolExecutor(self.workers, thread_name_prefix='onnx') as pool:
                results = list(pool.map(lambda batch: session.run(None, batch[1])[0], batches))
        else:
            session = self.session(self.workers)
            results = [session.run(None, feed)[0] for _, feed in batches]
        if not results:
            return []
        out = np.empty((len(mask), results[0].shape[1]), dtype=np.float32)
        for (rows, _), vectors in zip(batches, results):
            out[rows] = vectors
        return list(out)

    def session(self, threads: int) -> Any:
        """The session whose runs each use ``threads`` threads (built on first use)."""
        with self.lock:
            if threads not in self.sessions:
                self.sessions[threads] = _session(self.path, threads)
            return self.sessions[threads]


def onnx_embedder(model: Any, *, cache: Path | None = None, threads: int | None = None) -> OnnxEmbedder:
    """An :class:`OnnxEmbedder` for the ``SentenceTransformer`` ``model``: exported to ``cache``
    (default :func:`cache_dir`) unless exported there before, then checked against the model.

    Raises :class:`OnnxUnavailable` naming why it cannot, or
    :class:`~superduperdb.base.exceptions.MissingDependencyError` without the ``onnx`` extra.
    """
    probes, inputs = _probes(model)
    folder = cache or cache_dir()
    path = folder / f'{_fingerprint(model, inputs)}.onnx'
    exported = False
    if not path.exists():
        _export(model, inputs, path)
        exported = True
    try:
        session = _session(path, threads=1)
    except Exception as exc:
        if exported:
            raise OnnxUnavailable(
                f'ONNX Runtime cannot load its export: {type(exc).__name__}: {exc}'
            ) from exc
        logger.warning('the cached export %s does not load (%s); exporting it again', path, exc)
        _export(model, inputs, path)
        exported = True
        session = _session(path, threads=1)
    embedder = OnnxEmbedder(model, session, inputs, path, workers=threads)
    embedder.exported = exported
    _check(embedder, probes)
    return embedder


def start_onnx_embedder(model: Any, *, cache: Path | None = None) -> Future[OnnxEmbedder | None]:
    """:func:`onnx_embedder` from an export made before, built in a background thread: for a
    model about to run in this process, while :meth:`db.add` stores it (for MiniLM, 0.2 s of
    hashing the weights, loading the session and checking the probes, beside ~0.3 s of storing).

    The tokenizer runs here, in the caller's thread, only (the store saves it meanwhile); the
    model's weights are only read. The result is None where the export is not in ``cache``,
    an :class:`OnnxUnavailable` where the probes' reference vectors are not (making either uses
    the model: :func:`onnx_embedder` does it, in the foreground). Raises here what
    :func:`onnx_embedder` raises before it starts (no onnxruntime, a GPU, no tokenizer).
    """
    probes, inputs = _probes(model)
    folder = cache or cache_dir()

    def build() -> OnnxEmbedder | None:
        path = folder / f'{_fingerprint(model, inputs)}.onnx'
        if not path.exists():
            return None
        embedder = OnnxEmbedder(model, _session(path, threads=1), inputs, path)
        _check(embedder, probes, stored_only=True)
        return embedder

    done: Future[OnnxEmbedder | None] = Future()

    def run() -> None:
        try:
            done.set_result(build())
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits for it
            done.set_exception(exc)

    threading.Thread(target=run, name='superduperdb-onnx-build', daemon=True).start()
    return done


def _probes(model: Any) -> tuple[Any, list[str]]:
    """``(the tokenized probes, the model's input names)``, or OnnxUnavailable saying why not."""
    require('onnxruntime', extra='onnx', what='Running sentence-transformers models on ONNX Runtime')
    import torch

    device = getattr(getattr(model, 'device', None), 'type', 'cpu')
    if device != 'cpu':
        raise OnnxUnavailable(f'the model is on {device!r}; ONNX Runtime runs it on the CPU only')
    if getattr(model, 'tokenizer', None) is None:
        raise OnnxUnavailable('it has no text tokenizer (preprocess/tokenizer): not a text model')
    try:
        probes = _features(model, list(_PROBES))
    except Exception as exc:
        raise OnnxUnavailable(f'its preprocess failed on a text: {type(exc).__name__}: {exc}') from exc
    inputs = [name for name in _INPUTS if name in probes]
    extra = sorted(k for k, v in probes.items() if isinstance(v, torch.Tensor) and k not in inputs)
    if 'input_ids' not in inputs or 'attention_mask' not in inputs or extra:
        raise OnnxUnavailable(f'its inputs are {sorted(probes)}, not token ids and an attention mask')
    return probes, inputs


def _check(embedder: OnnxEmbedder, probes: Any, *, stored_only: bool = False) -> None:
    """Refuse a runner whose vectors are not sentence-transformers' (cosine below MIN_COSINE).

    sentence-transformers' vectors of the probes are kept beside the export
    (``<fingerprint>.probes.npy``, written once): a later load compares with them instead of
    running the model on torch again (seconds on a busy CPU).
    """
    try:
        ours = embedder._run(probes, 1)  # one at a time: the short ones are not padded
    except Exception as exc:
        raise OnnxUnavailable(f'its export fails to run: {type(exc).__name__}: {exc}') from exc
    embedder.dimensions = int(ours[0].shape[0])
    reference = embedder.path.with_suffix('.probes.npy')
    theirs = _reference(reference)
    if theirs is None or theirs.shape != (len(_PROBES), embedder.dimensions):
        if stored_only:  # a background build: encoding them would use the tokenizer the store saves
            raise OnnxUnavailable(f'the reference vectors beside {embedder.path} are missing')
        model = embedder.model
        theirs = np.asarray(model.encode(list(_PROBES), convert_to_numpy=True, show_progress_bar=False))
        _write_atomically(reference, lambda f: np.save(f, theirs.astype(np.float32)))
    for a, b in zip(ours, theirs):
        cosine = float(np.dot(a, b) / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-12))
        if a.shape != b.shape or not cosine >= MIN_COSINE:
            raise OnnxUnavailable(
                f'its ONNX export gives other vectors than sentence-transformers (cosine {cosine:.6f} '
                f'< {MIN_COSINE}; {embedder.path})'
            )


def _session(path: Path, threads: int) -> Any:
    """An ONNX Runtime session of the export at ``path`` whose runs use ``threads`` threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry('session.intra_op.allow_spinning', '0')
    return ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])


def _reference(path: Path) -> np.ndarray | None:
    try:
        return np.asarray(np.load(path, allow_pickle=False), dtype=np.float32)
    except (OSError, ValueError):
        return None


def _write_atomically(path: Path, write: Any) -> None:
    """``write(file)`` into a file beside ``path``, then renamed to it: readers see all or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix='.part', dir=path.parent)
    try:
        with os.fdopen(fd, 'wb') as f:
            write(f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _fingerprint(model: Any, inputs: list[str]) -> str:
    """What the export is made from: the weights, the modules and their settings, torch's version."""
    import torch
    import xxhash

    digest = xxhash.xxh3_128()
    digest.update(f'{_EXPORT_FORMAT}|{_OPSET}|{torch.__version__}|{inputs}|{model!r}'.encode())
    for name, tensor in model.state_dict().items():
        digest.update(f'{name}:{tensor.dtype}:{tuple(tensor.shape)}'.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _export(model: Any, inputs: list[str], path: Path) -> None:
    """Export ``model``'s modules, from token ids to its sentence embedding, to ``path``."""
    import torch

    require(
        'onnx',
        extra='onnx',
        what="Exporting sentence-transformers models for ONNX Runtime (torch's exporter)",
    )

    class Pipeline(torch.nn.Module):
        """The model's modules after its tokenizer, as one graph: token ids in, sentence embedding out."""

        def __init__(self) -> None:
            super().__init__()
            self.steps = torch.nn.ModuleList(list(model))

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            features: dict[str, Any] = dict(zip(inputs, tensors))
            for step in self.steps:
                features = step(features)
            return features['sentence_embedding']

    sample = _features(model, list(_PROBES[:2]))
    args = tuple(sample[name] for name in inputs)
    axes = {name: {0: 'batch', 1: 'tokens'} for name in inputs}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.stem, suffix='.part', dir=path.parent)
    os.close(fd)
    from superduperdb.base.quiet import quiet

    try:
        # the tracer's warnings (shapes read as Python numbers, ...) are about the exporter's
        # internals; the check after the export is what tells whether the graph is right
        with torch.no_grad(), quiet(), warnings.catch_warnings(), _eager_attention(model):
            warnings.simplefilter('ignore')
            torch.onnx.export(
                Pipeline().eval(),
                args,
                tmp,
                input_names=inputs,
                output_names=['sentence_embedding'],
                dynamic_axes={**axes, 'sentence_embedding': {0: 'batch'}},
                opset_version=_OPSET,
                dynamo=False,
            )
        os.replace(tmp, path)  # whole or not at all: a concurrent process sees no half file
    except Exception as exc:
        raise OnnxUnavailable(f'torch.onnx.export failed: {type(exc).__name__}: {exc}') from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    logger.info('exported %s for ONNX Runtime to %s', type(model).__name__, path)


@contextlib.contextmanager
def _eager_attention(model: Any) -> Iterator[None]:
    """The model's transformers modules set to the plain ("eager") attention while inside.

    Traced with torch's fused ``scaled_dot_product_attention`` the graph runs 5-10% slower on
    ONNX Runtime than traced from the plain matmul-softmax-matmul, which ONNX Runtime fuses
    itself (the vectors agree to a cosine of 0.9999999). Each module's own setting is restored.
    """
    changed = []
    for module in model.modules():
        config = getattr(module, 'config', None)
        current = getattr(config, '_attn_implementation', None)
        if current not in (None, 'eager') and hasattr(module, 'set_attn_implementation'):
            try:
                module.set_attn_implementation('eager')
            except Exception as exc:  # an architecture without it exports as it is
                name = type(module).__name__
                logger.info('%s keeps its %r attention for the export: %s', name, current, exc)
            else:
                changed.append((module, current))
    try:
        yield
    finally:
        for module, current in changed:
            module.set_attn_implementation(current)


def _features(model: Any, texts: list[str]) -> Any:
    """The model's own tokenization of ``texts`` (``preprocess``; ``tokenize`` before 6.0)."""
    tokenize = getattr(model, 'preprocess', None) or model.tokenize
    return tokenize(texts)


def _cores() -> int:
    """The cores this process may run on (its affinity, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)
