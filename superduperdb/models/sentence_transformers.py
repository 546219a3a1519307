"""sentence-transformers models as text embedders (needs the ``sentence-transformers`` extra).

``superduper(SentenceTransformer(...))`` gives a model whose outputs are
float32 numpy vectors, one per row, stored with an array encoder
automatically, ready for a vector index::

    from sentence_transformers import SentenceTransformer
    model = superduper(SentenceTransformer('all-MiniLM-L6-v2'))   # identifier 'all-MiniLM-L6-v2'
    model.predict(X='text', db=db, select=Collection('docs').find())

The model is stored in its own format, not pickled: the artifact is a tar
archive of ``SentenceTransformer.save()`` (safetensors weights, tokenizer,
module configs), rebuilt with ``SentenceTransformer(<dir>)`` on load. So a
model added from a GPU machine loads on a CPU worker (and the other way
round), and an upgrade of torch or sentence-transformers does not break
stored models. ``sentence_transformers`` is imported only when a model is
loaded or used (it takes seconds to import).

On the CPU, with ``onnxruntime`` installed (``pip install 'superduperdb[onnx]'``), the
model runs on ONNX Runtime (``runtime='auto'``, the default): the same vectors (cosine >=
0.9999 to sentence-transformers', checked when the runner is built), faster (a backfill of
docstrings at 1.4-1.56x the throughput of ``encode`` on 2 cores: benchmarks/README.md); see
:mod:`superduperdb.models.onnx_runtime`. Where it cannot (no onnxruntime, a model the
exporter cannot trace, a GPU, ``encode_kwargs`` it does not implement) the model runs on
sentence-transformers as before, and the reason is logged once. ``runtime='torch'`` always
uses sentence-transformers; ``runtime='onnx'`` fails the predict with the reason instead of
falling back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from superduperdb.base import forks
from superduperdb.base._deps import require
from superduperdb.base.exceptions import ConfigError, MissingDependencyError, QueryError
from superduperdb.components.model import Model
from superduperdb.models.transformers import card_title, directory_archive, extracted, model_name

logger = logging.getLogger(__name__)

RUNTIMES = ('auto', 'onnx', 'torch')
#: texts per ONNX Runtime run unless encode_kwargs says: small batches of texts sorted by length
#: pad little (on docstrings, 2 cores: 4 and 8 within noise of each other, 32 ~20% slower, 128
#: ~2x slower; benchmarks/README.md, embeddings.py --ablation)
ONNX_BATCH = 8
#: ``encode_kwargs`` the ONNX Runtime path implements; with any other the model runs on torch
_ONNX_KWARGS = frozenset({'batch_size', 'normalize_embeddings', 'show_progress_bar', 'convert_to_numpy'})


@dataclass(kw_only=True)
class SentenceTransformerModel(Model):
    """Wraps a ``SentenceTransformer``: each batch of texts is encoded in one ``encode`` call.

    ``batch_size`` is how many rows go to one ``encode`` call (1000: a whole chunk of a
    predict, the widest window to sort by length and to find repeats in); ``encode``
    splits them into its own mini-batches (``encode_kwargs={'batch_size':
    64}`` to change that). ``encode_kwargs`` go to every ``encode`` call
    (``normalize_embeddings``, ``prompt_name``, ``truncate_dim``, ...).
    ``device`` is where a reloaded model runs (None: a GPU when there is one).
    ``runtime``: ``'auto'`` runs the model on ONNX Runtime where it can (see the module
    docstring), ``'onnx'`` always (or fails saying why), ``'torch'`` never.
    """

    batch_size: int = 1000
    encode_kwargs: dict[str, Any] = field(default_factory=dict)
    device: str | None = None
    runtime: str = 'auto'
    #: the ONNX Runtime runner once built (False: this model runs on sentence-transformers)
    onnx_: Any = field(default=None, repr=False, compare=False)
    #: the future of the runner while :meth:`prepare` builds it in the background
    preparing_: Any = field(default=None, repr=False, compare=False)

    @classmethod
    def wrap(cls, model: Any, *, identifier: str | None = None, **kwargs: Any) -> SentenceTransformerModel:
        """``superduper(SentenceTransformer(...))``: the identifier defaults to the model's name."""
        return cls(identifier or sentence_transformer_name(model), object=model, **kwargs)

    def predict_batch(self, inputs: Sequence[Any]) -> list[Any]:
        texts = list(inputs)
        fast = self._onnx() if all(isinstance(t, str) for t in texts) else None
        if fast is not None:
            try:
                batch = int(self.encode_kwargs.get('batch_size', ONNX_BATCH))
                vectors = fast.encode(texts, batch_size=batch)
            except Exception as exc:
                if self.runtime == 'onnx':
                    raise
                self._fall_back(f'ONNX Runtime failed on a batch: {type(exc).__name__}: {exc}')
            else:
                if self.encode_kwargs.get('normalize_embeddings'):
                    vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
                return list(vectors.astype(np.float32, copy=False))
        kwargs = {'show_progress_bar': False, **self.encode_kwargs, 'convert_to_numpy': True}
        vectors = np.asarray(self.object.encode(texts, **kwargs), dtype=np.float32)
        return list(vectors)

    def _onnx(self) -> Any:
        """The ONNX Runtime runner of this model, built on first use; None: run on torch."""
        if self.onnx_ is None:
            if self.runtime not in RUNTIMES:
                raise ConfigError(
                    f'Model {self.identifier!r}: runtime= is one of {", ".join(map(repr, RUNTIMES))}, '
                    f'got {self.runtime!r}.'
                )
            self.onnx_ = False if self.runtime == 'torch' else (self._prepared() or self._build_onnx())
        return self.onnx_ or None

    def prepare(self) -> None:
        """Start building the ONNX Runtime runner in a background thread, from an export made
        before (see :func:`~superduperdb.models.onnx_runtime.start_onnx_embedder`): a watcher's
        backfill is about to run here, and ``db.add`` stores the model meanwhile."""
        if self.onnx_ is not None or self.preparing_ is not None or self.runtime not in ('auto', 'onnx'):
            return
        if set(self.encode_kwargs) - _ONNX_KWARGS:
            return
        try:
            from superduperdb.models.onnx_runtime import start_onnx_embedder

            self.preparing_ = start_onnx_embedder(self.object)
        except Exception as exc:  # noqa: BLE001 - the first batch builds it, and says why not
            logger.debug('model %r: no runner prepared in the background: %s', self.identifier, exc)
            return
        forks.in_child(self._forked)

    def _forked(self) -> None:
        """In a forked child: the thread building the runner is the parent's, not this process's."""
        self.preparing_ = None

    def _prepared(self) -> Any:
        """The runner :meth:`prepare` built, once it is done; None if it built none (no export
        cached yet, a failure: the caller builds it and reports why), or in a forked child."""
        preparing, self.preparing_ = self.preparing_, None
        if preparing is None:
            return None
        try:
            return preparing.result()
        except Exception as exc:  # noqa: BLE001 - built again in the foreground, which says why
            logger.debug('model %r: the runner prepared in the background failed: %s', self.identifier, exc)
            return None

    def _build_onnx(self) -> Any:
        from superduperdb.models.onnx_runtime import OnnxUnavailable, onnx_embedder

        try:
            unsupported = sorted(set(self.encode_kwargs) - _ONNX_KWARGS)
            if unsupported:
                raise OnnxUnavailable(f'encode_kwargs {unsupported} are not implemented on ONNX Runtime')
            return onnx_embedder(self.object)
        except MissingDependencyError as exc:
            if self.runtime == 'onnx':
                raise
            logger.info('Model %r runs on sentence-transformers (torch): %s', self.identifier, exc)
        except OnnxUnavailable as exc:
            if self.runtime == 'onnx':
                raise ConfigError(
                    f'Model {self.identifier!r} cannot run on ONNX Runtime: {exc.reason}. '
                    "Use runtime='auto' (falls back to sentence-transformers) or runtime='torch'."
                ) from exc
            self._fall_back(exc.reason)
        return False

    def _fall_back(self, reason: str) -> None:
        logger.warning(
            'Model %r runs on sentence-transformers (torch), not ONNX Runtime: %s', self.identifier, reason
        )
        self.onnx_ = False

    def to_config(self) -> tuple[dict[str, Any], dict[str, Any]]:
        config, artifacts = super().to_config()
        if hasattr(artifacts.get('object'), 'save') and hasattr(artifacts['object'], 'encode'):
            artifacts['object'] = _SavedSentenceTransformer(artifacts['object'], device=self.device)
        return config, artifacts


def wrap(model: Any, *, identifier: str | None = None, **kwargs: Any) -> Model:
    """``superduper(...)`` of a sentence-transformers model: a ``CrossEncoder`` (a reranker)
    or a ``SentenceTransformer`` (an embedder)."""
    if type(model).__name__ == 'CrossEncoder':
        return CrossEncoderModel.wrap(model, identifier=identifier, **kwargs)
    return SentenceTransformerModel.wrap(model, identifier=identifier, **kwargs)


@dataclass(kw_only=True)
class CrossEncoderModel(Model):
    """Wraps a ``CrossEncoder``: each input is a ``(query, text)`` pair, each output its score,
    higher more relevant. A reranker: ``.rerank('my-cross-encoder', top=50)`` (see
    :class:`~superduperdb.query.search.Rerank`). Stored as the directory ``CrossEncoder.save()``
    writes, rebuilt with ``CrossEncoder(<dir>)`` on load (nothing is downloaded)."""

    batch_size: int = 64

    @classmethod
    def wrap(cls, model: Any, *, identifier: str | None = None, **kwargs: Any) -> CrossEncoderModel:
        return cls(identifier or sentence_transformer_name(model), object=model, **kwargs)

    def predict_batch(self, inputs: Sequence[Any]) -> list[Any]:
        pairs = [_pair(x) for x in inputs]
        scores = self.object.predict(pairs, batch_size=self.batch_size, show_progress_bar=False)
        return [float(s) for s in np.asarray(scores, dtype=np.float64).reshape(len(pairs), -1)[:, 0]]

    def to_config(self) -> tuple[dict[str, Any], dict[str, Any]]:
        config, artifacts = super().to_config()
        if hasattr(artifacts.get('object'), 'save') and hasattr(artifacts['object'], 'predict'):
            artifacts['object'] = _SavedCrossEncoder(artifacts['object'])
        return config, artifacts


def _pair(value: Any) -> tuple[str, str]:
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, str) for v in value):
        return value[0], value[1]
    raise QueryError(f'A cross-encoder scores (query, text) pairs of strings, got {value!r}.')


class _SavedCrossEncoder:
    """Pickles as ``(load_cross_encoder, (archive,))``: unpickling rebuilds the model."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        return load_cross_encoder, (directory_archive(self.model.save),)


def load_cross_encoder(archive: bytes) -> Any:
    """Rebuild a model stored by :class:`CrossEncoderModel` (called when its artifact is unpickled)."""
    st = require('sentence_transformers', extra='sentence-transformers', what='sentence-transformers models')
    from superduperdb.base.quiet import quiet

    with extracted(archive) as path, quiet():
        return st.CrossEncoder(path, local_files_only=True)


def sentence_transformer_name(model: Any) -> str:
    """The model's name ('all-MiniLM-L6-v2'), from its model card or where it was loaded from."""
    card = getattr(model, 'model_card_data', None)
    for attr in ('model_id', 'model_name', 'base_model'):
        name = getattr(card, attr, None)
        if isinstance(name, str) and name and ' ' not in name:
            return name.rstrip('/').rsplit('/', 1)[-1]
    title = card_title(getattr(model, '_model_card_text', None))
    if title:
        return title
    try:
        first = model[0]
        path = getattr(getattr(first, 'auto_model', None), 'name_or_path', None)
    except (TypeError, IndexError, KeyError):
        path = None
    return model_name(path) or type(model).__name__


class _SavedSentenceTransformer:
    """Pickles as ``(load_sentence_transformer, (archive, ...))``: unpickling rebuilds the model."""

    def __init__(self, model: Any, *, device: str | None) -> None:
        self.model = model
        self.device = device

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        m = self.model
        options = {
            'trust_remote_code': bool(getattr(m, 'trust_remote_code', False)),
            'truncate_dim': getattr(m, 'truncate_dim', None),
        }
        return load_sentence_transformer, (directory_archive(m.save), options, self.device)


def load_sentence_transformer(archive: bytes, options: dict[str, Any], device: str | None) -> Any:
    """Rebuild a model stored by :class:`SentenceTransformerModel` (called when its artifact is unpickled)."""
    st = require('sentence_transformers', extra='sentence-transformers', what='sentence-transformers models')
    from superduperdb.base.quiet import quiet

    with extracted(archive) as path, quiet():  # transformers is imported now: its bars can go
        return st.SentenceTransformer(path, device=device, local_files_only=True, **options)
