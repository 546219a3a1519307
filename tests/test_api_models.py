"""API models at scale: shared rate limits across processes, estimates, usage, resume.

No real API is reachable from the test machines: every test talks to the local
OpenAI-compatible server of ``tests/openai_server.py``, which enforces requests and tokens per
window like OpenAI (429 + ``Retry-After``), counts tokens with a real tokenizer (all-MiniLM's,
as a vLLM or llama.cpp server counts with the model it serves) and records every request it
receives: its arrival, texts and tokens. Processes are real (subprocesses), databases real
(SQLite files, PostgreSQL), Redis the real server on 127.0.0.1:6379.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter

import numpy as np
import pytest
from openai_server import OpenAIServer, embed

from superduperdb import CFG, Collection, Watcher
from superduperdb.base.exceptions import CostNotConfirmed
from superduperdb.models.openai import OpenAIModel
from tests.helpers import minilm_path, run_cli

REDIS = 'redis://127.0.0.1:6379/0'


def tokenizer_file() -> str:
    return os.path.join(minilm_path(), 'tokenizer.json')


def server_counter():
    from superduperdb.models.tokens import counter

    return counter(tokenizer_file())


def corpus(n: int) -> list[str]:
    """``n`` distinct lines of real English text: Python's help topics (they ship with Python)."""
    from pydoc_data.topics import topics

    lines = sorted(
        {line.strip() for t in topics.values() for line in t.splitlines() if len(line.strip()) > 20}
    )
    return [
        lines[i % len(lines)] + (f' (copy {i // len(lines)})' if i >= len(lines) else '') for i in range(n)
    ]


def env_for(server: OpenAIServer, budget: str = 'database') -> dict[str, str]:
    return {
        **os.environ,
        'SUPERDUPERDB_ARTIFACT_STORE': CFG.artifact_store,
        'SUPERDUPERDB_OPENAI__API_KEY': 'sk-test',
        'SUPERDUPERDB_OPENAI__BASE_URL': server.base_url,
        'SUPERDUPERDB_OPENAI__BUDGET': budget,
    }


def stored(db, coll: Collection, name: str = 'embedder') -> dict[str, np.ndarray]:
    out = {}
    for doc in db.execute(coll.find()):
        value = doc.get('_outputs', {}).get('text', {}).get(name)
        if value is not None:
            out[doc['text']] = value.x
    return out


_PART = textwrap.dedent(
    """
    import sys
    from superduperdb import Collection, superduper
    uri, table, part = sys.argv[1:4]
    db = superduper(uri)
    model = db.load('model', 'embedder')
    report = model.predict(X='text', db=db, select=Collection(table).find({'part': int(part)}))
    print(report.computed, report.failed, report.usage['requests'], report.usage['rate_limited'], flush=True)
    """
)


@pytest.mark.parametrize(
    'backend,budget',
    [('postgres', 'database'), ('sqlite', 'database'), ('sqlite', REDIS)],
    indirect=['backend'],
)
def test_three_processes_share_one_budget(db, table_name, budget):
    """Three processes run one model over a third of the rows each: the server never sees
    more than the limit in any window (it counts every request it receives)."""
    # 30 requests at 32 an 8-second window: 2% of a window (160 ms) is what the budget holds back
    # for the jitter between a slot and the request's arrival on a busy 2-core machine
    limit, window = 32, 8.0
    texts = corpus(120)
    with OpenAIServer(requests=limit, window=window, latency=0.01) as server:
        coll = Collection(table_name)
        db.execute(coll.insert_many([{'text': t, 'part': i % 3} for i, t in enumerate(texts)]))
        with CFG.override(**{'openai.api_key': 'sk-test', 'openai.base_url': server.base_url}):
            db.add(
                OpenAIModel(
                    'embedder', rate_requests=limit, rate_window=window, max_batch_items=4, max_concurrency=2
                )
            )
        procs = [
            subprocess.Popen(
                [sys.executable, '-c', _PART, db.spec['data_backend'], table_name, str(part)],
                env=env_for(server, budget),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for part in range(3)
        ]
        outs = [p.communicate(timeout=180) for p in procs]
        for proc, (_, err) in zip(procs, outs):
            assert proc.returncode == 0, err
        reports = [list(map(int, out.split())) for out, _ in outs]
        assert [r[:2] for r in reports] == [[40, 0]] * 3
        arrivals = [round(r.at - server.requests[0].at, 3) for r in server.requests]
        assert server.most_in_window(window) <= limit, arrivals  # every request received, 429s included
        assert server.count(status=429) == 0
        assert server.count(status=200) == 30 == sum(r[2] for r in reports)
    got = stored(db, coll)
    assert len(got) == 120
    for text in texts:
        np.testing.assert_allclose(got[text], embed(text), atol=1e-6)


def test_backfill_of_10k_rows_is_exact_and_estimated_within_5_percent(tmp_path):
    """A watcher's backfill of 10,000 rows under a token and a request limit: exact outputs,
    no 429 storm, never over the limits, and the estimate's tokens match what the server counted."""
    from superduperdb import superduper

    # the rates of 60,000 tokens and 30 requests in 2 s, over 6 s windows: pacing holds a window
    # while a request reaches the server within 2% of it (120 ms), which a loaded CI machine keeps
    limit_tokens, limit_requests, window = 180_000, 90, 6.0
    texts = corpus(10_000)
    with (
        OpenAIServer(
            requests=limit_requests, tokens=limit_tokens, window=window, count_tokens=server_counter()
        ) as server,
        CFG.override(
            artifact_store=f'filesystem://{tmp_path}/artifacts',
            metadata_store=None,
            **{
                'openai.api_key': 'sk-test',
                'openai.base_url': server.base_url,
                'openai.prices': ['text-embedding-3-small=0.02'],
            },
        ),
    ):
        db = superduper(f'sqlite:///{tmp_path}/big.db')
        coll = Collection('docs')
        db.execute(coll.insert_many([{'text': t} for t in texts]))
        model = OpenAIModel(
            'embedder',
            rate_requests=limit_requests,
            rate_tokens=limit_tokens,
            rate_window=window,
            tokenizer=tokenizer_file(),
        )
        watcher = Watcher(model=model, key='text', select=coll.find())
        before = db.estimate(watcher)
        assert (before.rows, before.to_compute, before.current) == (10_000, 10_000, 0)
        added = db.add(watcher)
        (job,) = added.jobs_
        assert job.wait(timeout=300).status == 'success', job.error
        sent = sum(r.tokens for r in server.requests if r.status == 200)
        assert abs(before.tokens - sent) <= 0.05 * sent
        assert server.count(status=429) <= 2  # no storm (the budget paces requests before they leave)
        assert server.most_in_window(window) <= limit_requests
        assert server.most_in_window(window, tokens=True) <= limit_tokens
        got = stored(db, coll)
        assert len(got) == 10_000
        for text in texts[::97]:
            np.testing.assert_allclose(got[text], embed(text), atol=1e-6)
        assert all(got[t].shape == (8,) for t in texts)
        usage = db.job(job.id).result['usage']
        assert usage['input_tokens'] == sent and usage['requests'] == server.count()
        assert usage['cost'] == pytest.approx(sent * 0.02 / 1e6)
        after = db.estimate(watcher.identifier)
        assert (after.to_compute, after.current, after.tokens) == (0, 10_000, 0)
        (row,) = db.status()  # the watcher's usage, added up by its jobs
        assert row['usage']['requests'] == server.count() and row['usage']['input_tokens'] == sent
        assert row['usage']['limits'] == {
            'requests': limit_requests,
            'tokens': limit_tokens,
            'window': window,
        }
        points = db.usage(watcher.identifier)['series']
        assert sum(p[2] for p in points) == sent
        db.close()
    env = {'SUPERDUPERDB_ARTIFACT_STORE': f'filesystem://{tmp_path}/artifacts'}
    uri = f'sqlite:///{tmp_path}/big.db'
    done = run_cli('status', '--uri', uri, env=env)
    assert 'tokens in' in done.stdout and '$0.0038' in done.stdout, done.stdout  # the notes column
    done = run_cli('status', '--json', '--uri', uri, env=env)
    assert json.loads(done.stdout)[0]['usage']['input_tokens'] == sent
    done = run_cli('estimate', 'embedder@docs.text', '--json', '--uri', uri, env=env)
    assert json.loads(done.stdout)['current'] == 10_000, done.stderr


def test_a_backfill_above_the_cost_setting_asks_for_confirmation(db, table_name):
    texts = corpus(50)
    with OpenAIServer(count_tokens=server_counter()) as server:
        coll = Collection(table_name)
        db.execute(coll.insert_many([{'text': t} for t in texts]))
        settings = {
            'openai.api_key': 'sk-test',
            'openai.base_url': server.base_url,
            'openai.prices': ['text-embedding-3-small=1000'],  # dear, so 50 rows cost dollars
            'openai.confirm_cost_above': 0.5,
        }
        with CFG.override(**settings):
            model = OpenAIModel('embedder', tokenizer=tokenizer_file())
            watcher = Watcher(model=model, key='text', select=coll.find())
            with pytest.raises(CostNotConfirmed, match='openai.confirm_cost_above') as info:
                db.add(watcher)
            assert 'confirm=True' in str(info.value) and info.value.limit == 0.5
            assert server.count() == 0  # nothing was sent
            with pytest.raises(CostNotConfirmed):
                model.predict(X='text', db=db, select=coll.find())
            estimate = db.estimate(watcher, confirm=True)
            assert estimate.cost == pytest.approx(estimate.tokens * 1000 / 1e6)
            added = db.add(Watcher(model=model, key='text', select=coll.find()))
            assert added.backfill_.wait(timeout=60).status == 'success'
        assert len(stored(db, coll)) == 50


_RESUMABLE = textwrap.dedent(
    """
    import sys
    from superduperdb import Collection, superduper
    from superduperdb.models.openai import OpenAIModel
    uri, table = sys.argv[1:3]
    db = superduper(uri)
    model = OpenAIModel('embedder', max_batch_items=10, max_concurrency=2, rate_requests=50, rate_window=1.0)
    model.predict(X='text', db=db, select=Collection(table).find(), chunk_size=10)
    """
)


@pytest.mark.parametrize('backend', ['postgres', 'sqlite'], indirect=True)
def test_kill_9_halfway_then_resume_sends_no_row_twice(db, table_name):
    """The backfill is killed (SIGKILL) once the server has answered half the rows, while its
    next request is held unanswered; a rerun computes only what is missing: no row is answered
    twice, and the outputs are exact. (Rows of a chunk answered but not yet stored when a
    process dies are sent again: at most one chunk a process, which chunk_size bounds.)"""
    texts = corpus(300)
    with OpenAIServer() as server:
        coll = Collection(table_name)
        db.execute(coll.insert_many([{'text': t} for t in texts]))
        server.hold_after(150)  # answers 150 rows, then holds the next request
        proc = subprocess.Popen(
            [sys.executable, '-c', _RESUMABLE, db.spec['data_backend'], table_name],
            env=env_for(server),
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 120
        while not (server.holding and len(stored(db, coll)) == 150):
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ''
            assert time.monotonic() < deadline, 'the backfill never reached half way'
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)
        server.hold_after(None)
        assert len(stored(db, coll)) == 150
        with CFG.override(**{'openai.api_key': 'sk-test', 'openai.base_url': server.base_url}):
            model = db.load('model', 'embedder')  # the one the killed process added
            report = model.predict(X='text', db=db, select=coll.find())
        assert (report.computed, report.skipped, report.failed) == (150, 150, 0)
        answered = Counter(t for r in server.requests if r.status == 200 for t in r.texts)
        assert sorted(answered) == sorted(texts) and set(answered.values()) == {1}
        got = stored(db, coll)
        for text in texts:
            np.testing.assert_allclose(got[text], embed(text), atol=1e-6)


@pytest.mark.slow
def test_dashboard_shows_usage_and_throughput_against_the_limit(browser, tmp_path):
    """The freshness page's API usage section: the watcher's figures and a plot of its
    throughput against the rate limit, in a real browser."""
    pytest.importorskip('fastapi')
    import re

    from superduperdb import superduper
    from superduperdb.server.app import create_app, running

    with (
        OpenAIServer(requests=200, window=2.0) as server,
        CFG.override(
            artifact_store=f'filesystem://{tmp_path}/artifacts',
            metadata_store=None,
            **{'openai.api_key': 'sk-test', 'openai.base_url': server.base_url, 'openai.prices': ['m=1']},
        ),
    ):
        db = superduper(f'sqlite:///{tmp_path}/ui.db')
        coll = Collection('docs')
        db.execute(coll.insert_many([{'text': t} for t in corpus(60)]))
        model = OpenAIModel('embedder', model='m', rate_requests=200, rate_window=2.0, max_batch_items=4)
        added = db.add(Watcher(model=model, key='text', select=coll.find()))
        assert added.backfill_.wait(timeout=60).status == 'success'
        with running(create_app(db, token='ui-token')) as url:
            page = browser.new_context(viewport={'width': 1400, 'height': 900}).new_page()
            page.goto(f'{url}/ui/login')
            page.fill('#token', 'ui-token')
            page.click('button[type=submit]')
            page.wait_for_url(re.compile(r'/ui/$'))
            page.goto(f'{url}/ui/freshness')
            row = page.locator('#usage tr[data-watcher="embedder@docs.text"]')
            row.wait_for(timeout=30_000)
            cells = row.locator('td').all_inner_texts()
            assert cells[1:5] == ['15', str(server_tokens(server)), '0', '0'], cells
            assert float(cells[5]) == pytest.approx(server_tokens(server) / 1e6, abs=1e-4)
            plot = page.locator('#usage-plots figure[data-watcher="embedder@docs.text"]')
            plot.locator('path[data-series="limit"]').wait_for(state='attached', timeout=30_000)
            assert plot.locator('path[data-series="requests/s"]').count() == 1
        db.close()


def server_tokens(server: OpenAIServer) -> int:
    return sum(r.tokens for r in server.requests if r.status == 200)


def test_models_added_through_the_server_may_name_only_the_base_urls_the_operator_allows():
    """vLLM, Ollama, llama.cpp: any OpenAI-compatible server, through the same adapter, at the
    addresses the operator allows (the server's API key is sent there)."""
    from superduperdb.base.exceptions import ComponentNotAllowed

    vllm = OpenAIModel('e', base_url='http://vllm.internal:8000/v1/')
    with CFG.override(**{'openai.base_url': None}):
        with pytest.raises(ComponentNotAllowed, match='openai.allowed_base_urls'):
            vllm.check_from_request()
        with CFG.override(**{'openai.allowed_base_urls': ['http://vllm.internal:8000/v1']}):
            vllm.check_from_request()
            with pytest.raises(ComponentNotAllowed):
                OpenAIModel('e', base_url='http://elsewhere:8000/v1').check_from_request()


def test_tokenizers_count_as_named_and_say_what_is_missing():
    from superduperdb.base.exceptions import ConfigError, MissingDependencyError
    from superduperdb.models.tokens import counter

    assert counter(None)('a' * 40) == 11  # the estimate: 4 characters a token
    assert counter(tokenizer_file())('hello world') == 4  # [CLS] hello world [SEP]
    assert counter(f'hf:{minilm_path()}')('hello world') == 4  # the directory holding it
    with pytest.raises(ConfigError, match='tiktoken:<encoding>'):
        counter('/no/such/tokenizer.json')
    try:
        import tiktoken  # noqa: F401
    except ImportError:
        with pytest.raises(MissingDependencyError, match='pip install tiktoken'):
            counter('tiktoken:cl100k_base')


@pytest.mark.slow
@pytest.mark.parametrize('backend', ['postgres'], indirect=True)
def test_a_backfill_split_over_dask_workers_shares_one_budget(db, table_name, monkeypatch):
    """Two Dask worker processes run the partitions of one backfill: one budget, never over the
    limit in any window, and the backfill's usage is the sum of its partitions'."""
    from distributed import Client, LocalCluster

    from superduperdb.jobs.dask import DaskExecutor

    limit, window = 16, 4.0
    texts = corpus(300)
    with OpenAIServer(requests=limit, window=window) as server:
        monkeypatch.setenv('SUPERDUPERDB_OPENAI__API_KEY', 'sk-test')  # what the workers read
        monkeypatch.setenv('SUPERDUPERDB_OPENAI__BASE_URL', server.base_url)
        settings = {
            'cluster.backfill_partitions': 2,
            'cluster.backfill_partition_rows': 50,
            'openai.api_key': 'sk-test',
            'openai.base_url': server.base_url,
        }
        with (
            LocalCluster(
                n_workers=2, threads_per_worker=1, processes=True, dashboard_address=':0'
            ) as cluster,
            Client(cluster) as client,
            CFG.override(**settings),
        ):
            db.executor = DaskExecutor(client)
            coll = Collection(table_name)
            db.execute(coll.insert_many([{'text': t} for t in texts]))
            model = OpenAIModel('embedder', rate_requests=limit, rate_window=window, max_batch_items=10)
            watcher = db.add(Watcher(model=model, key='text', select=coll.find()))
            done = watcher.backfill_.wait(timeout=180)
            assert done.status == 'success', done.error
            parts = [db.job(i) for i in done.args['jobs']]
            assert len(parts) == 2 and all(p.status == 'success' for p in parts)
        assert server.count(status=429) == 0 and server.most_in_window(window) <= limit
        assert done.result['usage']['requests'] == server.count() == 30
        assert db.usage(watcher.identifier)['requests'] == 30
    got = stored(db, coll)
    for text in texts:
        np.testing.assert_allclose(got[text], embed(text), atol=1e-6)


_ONE_TABLE = textwrap.dedent(
    """
    import sys
    from superduperdb import Collection, superduper
    from superduperdb.models.openai import OpenAIModel
    uri, table, name = sys.argv[1:4]
    db = superduper(uri)
    limits = dict(rate_requests=20, rate_window=1.0, max_concurrency=2)
    model = OpenAIModel(name, budget='shared', max_batch_items=4, **limits)
    report = model.predict(X='text', db=db, select=Collection(table).find())
    print(report.computed, report.usage['rate_limited'], flush=True)
    """
)


@pytest.mark.parametrize('backend', ['postgres', 'sqlite'], indirect=True)
def test_a_429_pauses_every_process_of_the_budget_for_its_retry_after(db, table_name):
    """Two processes share a budget; the first request the server receives gets a 429 with
    Retry-After: 1. In that second the server receives no request from either process, but for
    those already on their way when the pause was written (the first 0.3 s: under load, a
    request sent just before the pause was read can take that long to arrive)."""
    texts = corpus(80)
    with OpenAIServer() as server:
        tables = [f'{table_name}_{i}' for i in range(2)]
        for i, table in enumerate(tables):
            db.execute(Collection(table).insert_many([{'text': t} for t in texts[i::2]]))
        server.fail(1, status=429, retry_after='1')
        procs = [
            subprocess.Popen(
                [sys.executable, '-c', _ONE_TABLE, db.spec['data_backend'], table, f'e{i}'],
                env=env_for(server),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i, table in enumerate(tables)
        ]
        outs = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], [err for _, err in outs]
        assert sorted(out.split()[0] for out, _ in outs) == ['40', '40']
        (refused,) = [r for r in server.requests if r.status == 429]
        during = [
            round(r.at - refused.at, 3)
            for r in server.requests
            if refused.at + 0.3 < r.at < refused.at + 0.98
        ]
        assert during == [], [(round(r.at - refused.at, 3), r.status) for r in server.requests]
        assert server.count(status=200) == 20
    for table, name in zip(tables, ('e0', 'e1')):
        assert len(stored(db, Collection(table), name)) == 40


@pytest.mark.parametrize(
    'backend', [pytest.param(b, marks=getattr(pytest.mark, b)) for b in ('sqlite', 'postgres')], indirect=True
)
def test_a_staged_api_model_reports_what_its_rebuild_used(db, table_name):
    """Issue 27's cost of a rebuild, for an API model: the tokens, requests and cost its backfill
    sent, as the (local, OpenAI-compatible) server counted them; no real API is reachable here."""
    from superduperdb import EvaluationSet, VectorIndex
    from superduperdb.encoders.numpy import array
    from superduperdb.models.function import FunctionModel

    texts = corpus(30)
    with OpenAIServer(count_tokens=server_counter()) as server:
        coll = Collection(table_name)
        db.execute(coll.insert_many([{'n': i, 'text': t} for i, t in enumerate(texts)]))
        lengths = FunctionModel(
            'lengths',
            object=lambda t: np.array([len(t), t.count(' ') + 1], 'float32'),
            encoder=array('float32', 2),
        )
        db.add(VectorIndex('ix', indexing_watcher=Watcher(model=lengths, key='text', select=coll.find())))
        keys = {d['n']: d['_id'] for d in db.execute(coll.find())}
        db.add(EvaluationSet.from_rows('own-text', [(texts[i], keys[i]) for i in range(5)], key='text'))
        settings = {
            'openai.api_key': 'sk-test',
            'openai.base_url': server.base_url,
            'openai.prices': ['text-embedding-3-small=0.02'],
        }
        with CFG.override(**settings):
            api = OpenAIModel('embedder', tokenizer=tokenizer_file())
            db.stage(VectorIndex('ix', indexing_watcher=Watcher(model=api, key='text', select=coll.find())))
            backfill = [r for r in server.requests if r.status == 200]
            result = db.promote('ix', 'own-text', rule='mrr >= 0', k=3)
        sent = sum(r.tokens for r in backfill)
        assert result.promoted and sent > 0
        assert result.cost['tokens'] == sent and result.cost['requests'] == len(backfill)
        assert result.cost['cost'] == pytest.approx(sent * 0.02 / 1e6)
        assert result.cost['rows'] == len(texts)
