"""Hugging Face ``transformers`` pipelines as models (needs the ``transformers`` extra).

``superduper(pipeline(...))`` wraps any pipeline: each batch of rows goes to
the pipeline in one call, and each input gets one output back, as plain
JSON-able values (dicts, lists, floats) or, for feature extraction, a float32
numpy array (stored with an array encoder automatically).

Weights are stored in the framework's own format, not pickled: the artifact
is a tar archive of ``save_pretrained()`` (safetensors, tokenizer, config),
rebuilt with ``pipeline(task, model=<dir>)`` on load. A model saved on a GPU
machine therefore loads on a CPU worker, and across library versions.

>>> from superduperdb.models.transformers import PipelineModel
>>> PipelineModel('sentiment', task='text-classification').to_config()[0]['params']['task']
'text-classification'
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from superduperdb.base._deps import require
from superduperdb.base.exceptions import EncodingError
from superduperdb.components.model import Model

logger = logging.getLogger(__name__)

#: pipeline tasks whose outputs are feature arrays, returned as float32 numpy arrays
FEATURE_TASKS = frozenset({'feature-extraction', 'image-feature-extraction'})


@dataclass(kw_only=True)
class PipelineModel(Model):
    """Wraps a ``transformers`` pipeline: a batch of inputs in one call, one output each.

    ``task`` is the pipeline's task (set by :meth:`wrap`). ``predict_kwargs``
    are passed to every pipeline call (``{'top_k': 2}``, ``{'truncation':
    True}``). ``device`` is where a reloaded pipeline runs (``'cpu'``,
    ``'cuda:0'``; None: the transformers default).

    Feature extraction returns one array of token vectors per input,
    ``(1, tokens, dim)``; pool it with a ``postprocess``, e.g.
    ``postprocess=lambda t: t[0].mean(axis=0)``. Keep the pipeline's own
    ``batch_size`` at 1 for that (its default): batched feature extraction
    pads shorter texts, and the padding would enter the mean.
    """

    task: str = ''
    predict_kwargs: dict[str, Any] = field(default_factory=dict)
    device: str | None = None

    @classmethod
    def wrap(cls, pipeline: Any, *, identifier: str | None = None, **kwargs: Any) -> PipelineModel:
        """``superduper(pipeline(...))``: the identifier defaults to the model's name."""
        kwargs.setdefault('task', pipeline.task)
        return cls(identifier or _pipeline_name(pipeline), object=pipeline, **kwargs)

    def predict_batch(self, inputs: Sequence[Any]) -> list[Any]:
        outputs = self.object(list(inputs), **self.predict_kwargs)
        if not isinstance(outputs, list):  # some pipelines answer a batch of one with a bare value
            outputs = [outputs]
        if self.task in FEATURE_TASKS:
            return [_as_float_array(o) for o in outputs]
        return [_jsonable(o) for o in outputs]

    def to_config(self) -> tuple[dict[str, Any], dict[str, Any]]:
        config, artifacts = super().to_config()
        if _is_pipeline(artifacts.get('object')):
            artifacts['object'] = _SavedPipeline(artifacts['object'], device=self.device)
        return config, artifacts


# ----- storing pipelines as save_pretrained() archives ----------------------------
class _SavedPipeline:
    """Pickles as ``(load_pipeline, (archive, ...))``: unpickling rebuilds the pipeline."""

    def __init__(self, pipeline: Any, *, device: str | None) -> None:
        self.pipeline = pipeline
        self.device = device

    def __reduce__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        p = self.pipeline
        params = {
            'preprocess': p._preprocess_params,
            'forward': p._forward_params,
            'postprocess': p._postprocess_params,
            'batch_size': getattr(p, '_batch_size', None),
        }
        return load_pipeline, (directory_archive(p.save_pretrained), p.task, params, self.device)


def load_pipeline(archive: bytes, task: str, params: dict[str, Any], device: str | None) -> Any:
    """Rebuild a pipeline stored by :class:`PipelineModel` (called when its artifact is unpickled)."""
    transformers = require('transformers', extra='transformers', what='transformers pipelines')
    from superduperdb.base.quiet import quiet

    with extracted(archive) as path, quiet():  # transformers is imported now: its bars can go
        kwargs: dict[str, Any] = {} if device is None else {'device': device}
        pipe = transformers.pipeline(task, model=path, **kwargs)
    # the options the pipeline was built with (top_k, truncation, ...), exactly as sanitized then
    pipe._preprocess_params = params['preprocess']
    pipe._forward_params = params['forward']
    pipe._postprocess_params = params['postprocess']
    pipe._batch_size = params['batch_size']
    return pipe


def directory_archive(save: Callable[[str], Any]) -> bytes:
    """``save(dir)`` into a temporary directory, returned as a reproducible tar archive.

    Entries are sorted and carry no times or owners, so the same weights give
    the same bytes (the artifact store is content-addressed).
    """
    with tempfile.TemporaryDirectory(prefix='superduperdb-') as tmp:
        save(tmp)
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode='w') as tar:
            for root, dirs, files in os.walk(tmp):
                dirs.sort()
                for name in sorted(files):
                    path = os.path.join(root, name)
                    info = tar.gettarinfo(path, arcname=os.path.relpath(path, tmp))
                    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, '', ''
                    with open(path, 'rb') as fh:
                        tar.addfile(info, fh)
        return buffer.getvalue()


@contextlib.contextmanager
def extracted(archive: bytes) -> Iterator[str]:
    """A temporary directory holding the files of a :func:`directory_archive`; removed afterwards.

    Loaders read everything into memory inside the ``with`` block (safetensors
    files that stay memory-mapped remain readable after removal on POSIX).
    """
    with tempfile.TemporaryDirectory(prefix='superduperdb-') as tmp:
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            members = tar.getmembers()
            for member in members:  # only plain files and folders, inside tmp
                parts = Path(member.name).parts
                if not (member.isfile() or member.isdir()) or member.name.startswith('/') or '..' in parts:
                    raise EncodingError(
                        f'Model archive entry {member.name!r} is not allowed; not loading it.'
                    )
            tar.extractall(tmp, members=members, **_DATA_FILTER)
        yield tmp


_DATA_FILTER: dict[str, Any] = {'filter': 'data'} if hasattr(tarfile, 'data_filter') else {}


# ----- helpers ---------------------------------------------------------------------
def model_name(name_or_path: str | None) -> str | None:
    """A short name for a model loaded from a hub id or a local directory.

    A hub id gives its last part (``'org/name'`` -> ``'name'``). A local
    directory gives the one-word title of its model card (``# all-MiniLM-L6-v2``)
    if it has one, else the directory's name.
    """
    if not name_or_path:
        return None
    path = Path(name_or_path)
    if path.is_dir():
        return _card_title(path / 'README.md') or path.resolve().name or None
    return name_or_path.rstrip('/').rsplit('/', 1)[-1] or None


def card_title(text: str | None) -> str | None:
    """The title of a model card when it is a single name (``# all-MiniLM-L6-v2``)."""
    for line in (text or '').splitlines():
        match = re.fullmatch(r'#\s+([\w.\-]+)\s*', line)
        if match:
            return match.group(1)
    return None


def _card_title(readme: Path) -> str | None:
    try:
        return card_title(readme.read_text(encoding='utf-8', errors='replace'))
    except OSError:
        return None


def _pipeline_name(pipeline: Any) -> str:
    model = getattr(pipeline, 'model', None)
    config = getattr(model, 'config', None)
    name = getattr(model, 'name_or_path', None) or getattr(config, '_name_or_path', None)
    return model_name(name) or type(pipeline).__name__


def _is_pipeline(obj: Any) -> bool:
    return hasattr(obj, 'save_pretrained') and hasattr(obj, 'task') and hasattr(obj, '_preprocess_params')


def _as_float_array(value: Any) -> np.ndarray:
    if hasattr(value, 'detach'):  # a torch tensor (return_tensors=True)
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=np.float32)


def _jsonable(value: Any) -> Any:
    """Numpy and torch scalars inside pipeline outputs become plain Python values."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, 'detach'):  # torch tensor: an array output (kept as numpy), or a scalar
        array = value.detach().cpu().numpy()
        return array.item() if array.ndim == 0 else array
    return value
