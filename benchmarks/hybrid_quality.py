"""Search quality of vector, keyword, hybrid and reranked search on Python's own documentation.

The corpus is what ships with Python: the docstrings of the public functions, classes and
methods of ~60 standard-library modules, and the topics of ``pydoc_data.topics``. A row is
``'<qualified name>\\n<docstring without its summary line>'`` (a topic: its name, then its
text without its first sentence), cut to ``--chars`` characters. Two query sets, one relevant
row per query, drawn at random (seeded) from the rows:

- ``identifiers``: the qualified name itself (``'shutil.copytree'``, ``'json.JSONDecoder.raw_decode'``),
  as a user pastes an identifier into a search box; it appears verbatim at the start of its
  row only (names that are not unique are left out);
- ``summaries``: the docstring's summary line (its first sentence), which the row no longer
  holds: a description of the function in other words than the rest of its docstring. This
  is the closest this script comes to a paraphrase; it is not a human rewording, and a
  summary often repeats words of the body.

Searches (each ``db.evaluate``): ``vector`` (all-MiniLM-L6-v2 over the row, through a
watcher), ``keyword`` (the database's own full-text engine), ``hybrid rrf``, ``hybrid
weighted`` (like 0.5, match 0.5), and ``hybrid rrf + rerank`` (MiniLM used as a bi-encoder
reranker: the cosine of the query's and the row's embeddings, computed for each of the first
``--rerank-top`` candidates at query time, as a cross-encoder would be called). Metrics at
k=10: recall@10, MRR, nDCG@10, p50 latency of the whole query (the query's embedding
included).

    HF_HUB_OFFLINE=1 python benchmarks/hybrid_quality.py --docs 2000 --queries 100 --backends sqlite postgres
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import random
import sys
import tempfile
import time
from collections.abc import Iterator

from pg_schema import private_schema

_MODULES = (
    'abc argparse array ast base64 binascii bisect bz2 calendar codecs collections configparser '
    'contextlib copy csv dataclasses datetime decimal difflib dis email.utils enum fnmatch '
    'fractions functools gc getopt glob gzip hashlib heapq hmac html html.parser http.client '
    'inspect io ipaddress itertools json json.decoder json.encoder locale logging lzma math '
    'mimetypes operator os os.path pathlib pickle pprint queue random re sched secrets '
    'selectors shelve shlex shutil signal socket sqlite3 statistics string struct subprocess '
    'tarfile tempfile textwrap threading time timeit tokenize traceback types typing '
    'unicodedata urllib.parse urllib.request uuid warnings weakref xml.etree.ElementTree zipfile zlib '
    'asyncio.base_events asyncio.events asyncio.locks asyncio.queues asyncio.streams asyncio.tasks '
    'cmd code codeop concurrent.futures doctest email.message email.parser ftplib http.cookiejar '
    'http.server imaplib mailbox multiprocessing.connection multiprocessing.pool netrc '
    'optparse pdb pydoc smtplib ssl symtable tabnanny trace unittest.case unittest.mock '
    'urllib.robotparser wave xml.dom.minidom xml.sax.saxutils xmlrpc.client xmlrpc.server zipapp'
)
MODULES = _MODULES.split()
K = 10


def documented() -> Iterator[tuple[str, str]]:
    """``(qualified name, docstring)`` of the public callables of :data:`MODULES` and their methods."""
    for module_name in MODULES:
        module = importlib.import_module(module_name)
        for name, obj in sorted(vars(module).items()):
            if name.startswith('_') or getattr(obj, '__module__', None) not in (module_name, None):
                continue
            if not (inspect.isfunction(obj) or inspect.isclass(obj) or inspect.isbuiltin(obj)):
                continue
            yield f'{module_name}.{name}', inspect.getdoc(obj) or ''
            if inspect.isclass(obj):
                for attr, member in sorted(vars(obj).items()):
                    if not attr.startswith('_') and callable(member):
                        yield f'{module_name}.{name}.{attr}', inspect.getdoc(member) or ''


def split_summary(text: str) -> tuple[str, str]:
    """``(first sentence, the rest)`` of a docstring or topic."""
    lines = [line for line in text.splitlines() if line.strip() and line.strip(' *=') != '']
    flat = ' '.join(' '.join(lines).split())
    head, dot, rest = flat.partition('. ')
    return head.strip(), rest.strip()


def corpus(chars: int) -> list[dict]:
    """The rows: ``{'name', 'body', 'summary'}`` (docstrings whose summary and rest both say something)."""
    from pydoc_data.topics import topics

    rows, seen = [], set()
    sources = [*documented(), *((f'topic {name}', text) for name, text in sorted(topics.items()))]
    for name, text in sources:
        summary, rest = split_summary(text)
        if len(summary.split()) < 3 or len(rest) < 60 or rest in seen:
            continue
        seen.add(rest)
        rows.append({'name': name, 'body': f'{name}\n{rest}'[:chars], 'summary': summary})
    return rows


def query_sets(rows: list[dict], docs: int, queries: int, seed: int = 0) -> tuple[list[dict], dict]:
    """``docs`` rows drawn at random and ``queries`` queries of each kind over them."""
    rng = random.Random(seed)
    chosen = rng.sample(rows, min(docs, len(rows)))
    names = [r['name'] for r in chosen]
    unique = [r for r in chosen if not r['name'].startswith('topic ') and names.count(r['name']) == 1]
    identifiers = [(r['name'], r['name']) for r in rng.sample(unique, min(queries, len(unique)))]
    summaries = [(r['summary'], r['name']) for r in rng.sample(chosen, min(queries, len(chosen)))]
    return chosen, {'identifiers': identifiers, 'summaries': summaries}


def minilm_reranker(model):
    """MiniLM as a bi-encoder reranker: ``(query, text)`` pairs -> cosine of their embeddings."""
    from superduperdb.models.function import FunctionModel

    def score(pairs: list[tuple[str, str]]) -> list[float]:
        queries = model.encode([q for q, _ in pairs], normalize_embeddings=True)
        texts = model.encode([t for _, t in pairs], normalize_embeddings=True)
        return [float(s) for s in (queries * texts).sum(axis=1)]

    return FunctionModel('minilm-pairs', object=score, batched=True)


def measure(uri: str, rows: list[dict], sets: dict, rerank_top: int, model) -> list[tuple]:
    from superduperdb import Collection, EvaluationSet, KeywordIndex, VectorIndex, Watcher, superduper

    db = superduper(uri)
    coll = Collection('pydocs')
    db.execute(coll.insert_many([{'name': r['name'], 'body': r['body']} for r in rows]))
    key_of = {d['name']: str(d['_id']) for d in db.execute(coll.find())}
    started = time.perf_counter()
    minilm = superduper(model, identifier='minilm')
    db.add(VectorIndex('vec', indexing_watcher=Watcher(model=minilm, key='body', select=coll.find())))
    db.add(KeywordIndex('kw', key='body', select=coll.find()))
    print(f'  indexed {len(rows)} rows in {time.perf_counter() - started:.0f} s', file=sys.stderr)
    for name, pairs in sets.items():
        db.add(EvaluationSet(name, queries=[{'query': q, 'relevant': [key_of[n]]} for q, n in pairs]))
    searches = {
        'vector': {'index': 'vec'},
        'keyword': {'index': None, 'keyword': 'kw'},
        'hybrid rrf': {'index': 'vec', 'keyword': 'kw', 'fuse': 'rrf'},
        'hybrid weighted': {
            'index': 'vec',
            'keyword': 'kw',
            'fuse': {'method': 'weighted', 'weights': {'like': 0.5, 'match': 0.5}},
        },
        'hybrid rrf + rerank': {
            'index': 'vec',
            'keyword': 'kw',
            'fuse': 'rrf',
            'rerank': minilm_reranker(model),
            'rerank_top': rerank_top,
        },
    }
    out = []
    for set_name in sets:
        for label, how in searches.items():
            how = dict(how)
            index = how.pop('index')
            e = db.evaluate(index, set_name, k=K, **how)
            m = e.metrics
            out.append((set_name, label, m[f'recall@{K}'], m['mrr'], m[f'ndcg@{K}'], m['latency_p50_ms']))
            print(f'  {set_name} {label}: {e}', file=sys.stderr)
    db.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--docs', type=int, default=2000)
    parser.add_argument('--queries', type=int, default=100, help='per query set')
    parser.add_argument('--chars', type=int, default=1000, help='characters kept of each row')
    parser.add_argument('--rerank-top', type=int, default=20)
    parser.add_argument(
        '--backends', nargs='+', default=['sqlite', 'postgres'], choices=['sqlite', 'postgres']
    )
    args = parser.parse_args()
    from sentence_transformers import SentenceTransformer

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
    from superduperdb import CFG
    from tests.helpers import minilm_path

    model = SentenceTransformer(minilm_path(), device='cpu')
    rows, sets = query_sets(corpus(args.chars), args.docs, args.queries)
    print(f'{len(rows)} rows; ' + ', '.join(f'{len(v)} {k}' for k, v in sets.items()))
    print(f'load average {os.getloadavg()[0]:.2f} at the start')
    print('| backend | queries | search | recall@10 | MRR | nDCG@10 | p50 ms |')
    print('|---|---|---|---:|---:|---:|---:|')
    for backend in args.backends:
        with (
            tempfile.TemporaryDirectory() as workdir,
            CFG.override(artifact_store=f'filesystem://{workdir}/a'),
        ):
            if backend == 'sqlite':
                results = measure(f'sqlite:///{workdir}/q.sqlite', rows, sets, args.rerank_top, model)
            else:
                with private_schema('bench_quality') as uri:
                    results = measure(uri, rows, sets, args.rerank_top, model)
        for set_name, label, recall, mrr, ndcg, p50 in results:
            print(f'| {backend} | {set_name} | {label} | {recall:.3f} | {mrr:.3f} | {ndcg:.3f} | {p50:.1f} |')
    print(f'load average {os.getloadavg()[0]:.2f} at the end')


if __name__ == '__main__':
    main()
