"""Serving under load: 50 clients at once against ``superduperdb serve``, cold and warm.

A table of ``--rows`` texts, a watcher computing an embedding of each (a cheap numpy function:
a vector drawn from a generator seeded by the text's hash, so every text has its own vector and
nothing is downloaded) and a vector index over it, added by a setup process. Then
``superduperdb serve`` starts in a process of its own (uvicorn, as a user runs it) and
``--clients`` threads, each with its own HTTP connection, send ``--requests`` requests each at
once: half the clients insert one row per request (its embedding is computed in the request,
by the local executor), half search with ``like(n=5)``.

- ``cold``: the clients start the moment ``/health`` answers, while the server is still
  loading the model and building the vector engine (``--load-seconds``: how long the model
  takes to load; a sentence-transformer's import alone takes 16 s here). "model loads" counts
  how often the server loaded it.
- ``warm``: one insert and one search are sent first, alone.

Every answer is counted by HTTP status. A ``503`` (the server shedding load) is retried after
its ``Retry-After`` (at most 10 tries); inserts carry an ``Idempotency-Key``, so a retried
insert is never stored twice. Latencies (p50/p99, seconds) are per answer, retries apart. At
the end, from the database itself: rows without an output (and rows with more than one), and
inserted rows that a search for their own text does not return first.

    python benchmarks/serve_load.py --backends postgres sqlite --clients 50 --requests 10
    python benchmarks/serve_load.py --backends postgres --modes cold --load-seconds 20
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from pg_schema import admin, schema_uri

from superduperdb.server.spawn import serve_process

DIM = 32
TABLE = 'docs'
INDEX = 'docs-index'
TOKEN = 'bench-token'


# ----- the database ---------------------------------------------------------------------
def embedder(load_seconds: float, loads: str) -> Any:
    """The watcher's model: made in a function, so cloudpickle stores it by value and the
    server process needs nothing of this script to load it. Loading it (unpickling, in the
    server) takes ``load_seconds`` (a sentence-transformer takes 16 s to import here) and
    appends a line to the file ``loads``: how often the server loaded it."""
    from superduperdb.encoders.numpy import array
    from superduperdb.models.function import FunctionModel

    def embed(text: str) -> Any:
        import hashlib

        import numpy

        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], 'little')
        return numpy.random.default_rng(seed).standard_normal(32).astype('float32')

    def load() -> Any:
        import time

        with open(loads, 'a') as counted:
            counted.write('load\n')
        time.sleep(load_seconds)
        return embed

    class Embedder:
        def __call__(self, text: str) -> Any:
            return embed(text)

        def __reduce__(self) -> Any:
            return (load, ())

    return FunctionModel('embed', object=Embedder(), encoder=array('float32', DIM))


def prepare(uri: str, rows: int, model: Any) -> None:
    """The table, the watcher (its backfill run here) and the vector index."""
    from superduperdb import Collection, VectorIndex, Watcher, superduper

    db = superduper(uri)
    try:
        db.execute(Collection(TABLE).insert_many([{'text': f'seed row {i}'} for i in range(rows)]))
        watcher = Watcher(model=model, key='text', select=Collection(TABLE).find())
        db.add(VectorIndex(INDEX, indexing_watcher=watcher))
    finally:
        db.close()


def check(uri: str) -> dict[str, Any]:
    """What the database holds at the end: rows, rows without an output, rows with several."""
    from superduperdb import Collection, superduper

    db = superduper(uri)
    try:
        missing, texts = 0, []
        for doc in db.execute(Collection(TABLE).find()):
            output = doc.get('_outputs', {}).get('text', {}).get('embed')
            missing += output is None
            texts.append(doc['text'])
        counts = Counter(texts)
        return {
            'rows': len(texts),
            'without_output': missing,
            'stored_twice': sum(n - 1 for n in counts.values() if n > 1),
            'texts': set(texts),
        }
    finally:
        db.close()


# ----- the server -----------------------------------------------------------------------
def start_server(uri: str, artifacts: str) -> tuple[subprocess.Popen[bytes], str]:
    log = os.path.join(os.path.dirname(artifacts.removeprefix('filesystem://')), 'server.log')
    env = {'SUPERDUPERDB_SERVER__TOKEN': TOKEN, 'SUPERDUPERDB_ARTIFACT_STORE': artifacts}
    return serve_process(uri, env=env, log=Path(log), timeout=120)


# ----- the clients ----------------------------------------------------------------------
class Tally:
    """Answers by kind: latencies, statuses, inserts given up on, texts stored."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seconds: dict[str, list[float]] = {'insert': [], 'like': []}
        self.statuses: dict[str, Counter[str]] = {'insert': Counter(), 'like': Counter()}
        self.stored: list[str] = []
        self.given_up = 0
        self.no_retry_after = 0

    def answer(self, kind: str, seconds: float, status: str) -> None:
        with self.lock:
            self.seconds[kind].append(seconds)
            self.statuses[kind][status] += 1


def request(http: Any, kind: str, body: dict[str, Any], tally: Tally, headers: dict[str, str]) -> Any:
    """One request, retried after a 503's Retry-After (10 tries); the last response or None."""
    import httpx

    for _ in range(10):
        started = time.perf_counter()
        try:
            response = http.post('/execute', json=body, headers=headers)
        except httpx.TransportError as exc:
            tally.answer(kind, time.perf_counter() - started, type(exc).__name__)
            continue
        tally.answer(kind, time.perf_counter() - started, str(response.status_code))
        if response.status_code != 503:
            return response
        wait = response.headers.get('retry-after')
        if wait is None:
            tally.no_retry_after += 1
        time.sleep(min(float(wait or 1), 5.0))
    with tally.lock:
        tally.given_up += 1
    return None


def client(url: str, number: int, requests: int, tally: Tally, go: threading.Event) -> None:
    import httpx

    inserting = number % 2 == 0
    with httpx.Client(base_url=url, headers={'Authorization': f'Bearer {TOKEN}'}, timeout=300) as http:
        go.wait()
        for i in range(requests):
            if inserting:
                text = f'client {number} request {i} {uuid.uuid4().hex[:6]}'
                body = {'query': {'kind': 'insert', 'table': TABLE, 'documents': [{'text': text}]}}
                response = request(http, 'insert', body, tally, {'Idempotency-Key': uuid.uuid4().hex})
                if response is not None and response.status_code == 200:
                    with tally.lock:
                        tally.stored.append(text)
            else:
                like = {'value': {'text': f'seed row {(number * 7 + i) % 50}'}, 'index': INDEX, 'n': 5}
                body = {'query': {'kind': 'find', 'table': TABLE, 'filter': {}, 'like': like}}
                request(http, 'like', body, tally, {})


def not_found_first(url: str, texts: list[str]) -> int:
    """Stored texts a search for the same text does not return first (each has its own vector)."""
    import httpx

    missed = 0
    with httpx.Client(base_url=url, headers={'Authorization': f'Bearer {TOKEN}'}, timeout=300) as http:
        for text in texts:
            like = {'value': {'text': text}, 'index': INDEX, 'n': 1}
            body = {'query': {'kind': 'find', 'table': TABLE, 'filter': {}, 'like': like}}
            response = http.post('/execute', json=body)
            docs = response.json().get('documents', []) if response.status_code == 200 else []
            missed += not docs or docs[0].get('text') != text
    return missed


def warm_up(url: str) -> None:
    import httpx

    with httpx.Client(base_url=url, headers={'Authorization': f'Bearer {TOKEN}'}, timeout=300) as http:
        insert = {'query': {'kind': 'insert', 'table': TABLE, 'documents': [{'text': 'warm-up row'}]}}
        like = {'value': {'text': 'seed row 1'}, 'index': INDEX, 'n': 5}
        find = {'query': {'kind': 'find', 'table': TABLE, 'filter': {}, 'like': like}}
        for body in (insert, find):
            response = http.post('/execute', json=body)
            if response.status_code != 200:
                raise SystemExit(f'warm-up failed: {response.status_code} {response.text}')


# ----- one run ---------------------------------------------------------------------------
def run(backend: str, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    """One backend in one mode: a fresh database (a new SQLite file, a new PostgreSQL schema)."""
    from superduperdb import CFG

    place = tempfile.mkdtemp(prefix='serve_load_')
    schema = f'serve_load_{os.getpid()}_{mode}'
    if backend == 'postgres':
        admin(f'DROP SCHEMA IF EXISTS {schema} CASCADE')
        admin(f'CREATE SCHEMA {schema}')
        uri = schema_uri(schema)
    else:
        uri = f'sqlite:///{place}/db.sqlite'
    artifacts = f'filesystem://{place}/artifacts'
    process = None
    try:
        with CFG.override(artifact_store=artifacts):  # this process and the server: the same store
            loads = os.path.join(place, 'loads')
            prepare(uri, args.rows, embedder(args.load_seconds, loads))
            process, url = start_server(uri, artifacts)
            if mode == 'warm':
                warm_up(url)
            tally, wall = load(url, args.clients, args.requests)
            missed = not_found_first(url, tally.stored)
            found = check(uri)
        lost = sum(1 for text in tally.stored if text not in found['texts'])
        return {
            'backend': backend,
            'mode': mode,
            'wall': wall,
            'tally': tally,
            'found': found,
            'loads': _lines(loads),
            'missed': missed,
            'lost': lost,
        }
    finally:
        if process is not None:
            process.terminate()
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
        if args.logs:
            os.makedirs(args.logs, exist_ok=True)
            shutil.copy(os.path.join(place, 'server.log'), os.path.join(args.logs, f'{backend}-{mode}.log'))
        if backend == 'postgres':
            admin(f'DROP SCHEMA IF EXISTS {schema} CASCADE')
        shutil.rmtree(place, ignore_errors=True)


def load(url: str, clients: int, requests: int) -> tuple[Tally, float]:
    """``clients`` threads sending ``requests`` each, all released at once; (tally, wall seconds)."""
    tally, go = Tally(), threading.Event()
    threads = [threading.Thread(target=client, args=(url, k, requests, tally, go)) for k in range(clients)]
    for thread in threads:
        thread.start()
    started = time.perf_counter()
    go.set()
    for thread in threads:
        thread.join()
    return tally, time.perf_counter() - started


def _lines(path: str) -> int:
    try:
        with open(path) as f:
            return sum(1 for _ in f)
    except FileNotFoundError:
        return 0


def report(result: dict[str, Any], clients: int) -> None:
    tally, found = result['tally'], result['found']
    for kind in ('insert', 'like'):
        seconds = np.array(tally.seconds[kind] or [0.0])
        statuses = ' '.join(f'{status}:{n}' for status, n in sorted(tally.statuses[kind].items()))
        print(
            f'{result["backend"]:<9} {result["mode"]:<5} {clients:>3} {kind:<6} '
            f'p50 {np.percentile(seconds, 50):7.3f} s  p99 {np.percentile(seconds, 99):7.3f} s  '
            f'max {seconds.max():7.3f} s  answers {statuses}',
            flush=True,
        )
    print(
        f'{result["backend"]:<9} {result["mode"]:<5} {clients:>3} total  wall {result["wall"]:.1f} s  '
        f'rows {found["rows"]}  model loads {result["loads"]}  without output {found["without_output"]}  '
        f'stored twice '
        f'{found["stored_twice"]}  inserts answered 200 but missing {result["lost"]}  not found '
        f'first {result["missed"]}  given up {tally.given_up}  '
        f'503 without Retry-After {tally.no_retry_after}  '
        f'load {os.getloadavg()[0]:.2f}',
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        '--backends', nargs='+', default=['postgres', 'sqlite'], choices=['postgres', 'sqlite']
    )
    parser.add_argument('--modes', nargs='+', default=['cold', 'warm'], choices=['cold', 'warm'])
    parser.add_argument('--clients', type=int, default=50)
    parser.add_argument('--requests', type=int, default=10, help='requests per client')
    parser.add_argument('--rows', type=int, default=1000, help='rows in the table before the clients start')
    parser.add_argument('--load-seconds', type=float, default=0.0, help='how long the model takes to load')
    parser.add_argument('--logs', help="a directory to keep the servers' logs in")
    args = parser.parse_args()
    for backend in args.backends:
        for mode in args.modes:
            report(run(backend, mode, args), args.clients)


if __name__ == '__main__':
    main()
