"""The dashboard's Evaluation page, in a real browser (Debian's chromium driven by playwright, as
in tests/test_ui.py), over a real server on 127.0.0.1: a vector index's evaluations as a table
and as a plot over time (one series per index version), which version serves and what is
staged, and an Evaluate button. The truth is ``db.evaluations(index)`` and ``db.vectors``.

Also, without a browser: ``/overview``'s ``serving``, ``versions`` and ``staged`` before and
after a promotion, and while a staged version is still being built.
"""

from __future__ import annotations

import threading
import zlib
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip('fastapi')
pytest.importorskip('jinja2')

import httpx  # noqa: E402

from superduperdb import Collection, EvaluationSet, VectorIndex, Watcher, superduper  # noqa: E402
from superduperdb.base.config import CFG  # noqa: E402
from superduperdb.encoders.numpy import array  # noqa: E402
from superduperdb.models.function import FunctionModel  # noqa: E402
from superduperdb.server.app import create_app, running  # noqa: E402
from tests.helpers import dashboard_page, wait_for  # noqa: E402

TOKEN = 'ui-evaluation-token'
SCREENSHOTS = Path(__file__).resolve().parents[1] / '.artifacts' / 'screenshots'
INDEX = 'notes-index'
pytestmark = [pytest.mark.sqlite, pytest.mark.slow]

ROWS = [
    'apples ripen in the autumn orchard',
    'zebras gallop across the savanna',
    'the harbour fills with fishing boats',
    'bread dough rests overnight in the pantry',
    'a lighthouse keeper logs passing ships',
    'copper pans heat evenly on the stove',
    'elephants bathe in the muddy waterhole',
    'gulls circle the quay at sunrise',
]
#: each query names a few words of one row: that row is the relevant one
QUERIES = [
    ('autumn orchard apples', 0),
    ('savanna zebras', 1),
    ('fishing boats harbour', 2),
    ('pantry bread', 3),
    ('lighthouse ships', 4),
    ('stove copper', 5),
    ('muddy elephants', 6),
    ('quay gulls sunrise', 7),
]


def letters(texts: list[str]) -> list[np.ndarray]:
    """A weak embedder: how often each letter comes (no words, no meaning), as in
    tests/test_evaluation.py."""
    out = np.zeros((len(texts), 26), dtype='float32')
    for i, text in enumerate(texts):
        for ch in text.lower():
            if 'a' <= ch <= 'z':
                out[i, ord(ch) - 97] += 1
    return list(out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9))


def words(texts: list[str]) -> list[np.ndarray]:
    """A better one: hashed word counts."""
    out = np.zeros((len(texts), 64), dtype='float32')
    for i, text in enumerate(texts):
        for word in text.lower().split():
            out[i, zlib.crc32(word.encode()) % 64] += 1
    return list(out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9))


#: held shut, a model's first batch waits: a staged build caught mid-way
GATE = threading.Event()


def gated_words(texts: list[str]) -> list[np.ndarray]:
    assert GATE.wait(60), 'the test never let the build go on'
    return words(texts)


def index_of(identifier: str, function: Any, dimensions: int, coll: Collection) -> VectorIndex:
    model = FunctionModel(identifier, object=function, batched=True, encoder=array('float32', dimensions))
    return VectorIndex(INDEX, indexing_watcher=Watcher(model=model, key='body', select=coll.find()))


def populated(path: Path) -> tuple[Any, Collection]:
    """A SQLite database of ``ROWS``, the weak index (version 0) and the evaluation set."""
    db = superduper(f'sqlite:///{path}/evaluation.db')
    coll = Collection('notes')
    db.execute(coll.insert_many([{'body': body} for body in ROWS]))
    keys = {d['body']: str(d['_id']) for d in db.execute(coll.find())}
    db.add(index_of('letters', letters, 26, coll))
    db.add(
        EvaluationSet('notes-set', queries=[{'query': q, 'relevant': [keys[ROWS[i]]]} for q, i in QUERIES])
    )
    return db, coll


def overview_indexes(url: str) -> dict[str, Any]:
    found = httpx.get(f'{url}/overview', headers={'Authorization': f'Bearer {TOKEN}'}, timeout=30)
    assert found.status_code == 200, found.text
    (index,) = [ix for ix in found.json()['indexes'] if ix['identifier'] == INDEX]
    return index


def shown(name: str, value: float) -> str:
    """A metric as the page rounds it (JavaScript's toFixed: the exact value, halves up)."""
    places = Decimal('0.1') if name.startswith('latency') else Decimal('0.001')
    return str(Decimal(value).quantize(places, rounding=ROUND_HALF_UP))


# ----- /overview, no browser ----------------------------------------------------------------
def test_overview_says_which_version_serves_and_how_far_a_staged_build_is(tmp_path):
    with CFG.override(**{'artifact_store': f'filesystem://{tmp_path}/artifacts'}):
        db, coll = populated(tmp_path)
        other = None
        try:
            with running(create_app(db, token=TOKEN)) as url:
                index = overview_indexes(url)
                assert (index['versions'], index['serving'], index['staged']) == ([0], 0, [])

                # staged: built, not serving
                db.stage(index_of('words', words, 64, coll))
                index = overview_indexes(url)
                assert (index['versions'], index['serving']) == ([0, 1], 0)
                assert index['serving'] == db.vectors.get(INDEX).version
                (staged,) = index['staged']
                assert staged['version'] == 1 and staged['state'] == 'built'
                assert (staged['done'], staged['total']) == (len(ROWS), len(ROWS))
                methods = {j['method']: j for j in staged['jobs']}
                assert methods['vector_build']['status'] == 'success'
                assert methods['vector_build']['component'] == f'vector_index/{INDEX}/1'
                assert methods['predict']['component'].startswith('watcher/words@notes.body/')

                # promoted: it serves, nothing is staged
                assert db.promote(INDEX, 'notes-set', k=3).promoted
                index = overview_indexes(url)
                assert (index['versions'], index['serving'], index['staged']) == ([0, 1], 1, [])
                assert index['serving'] == db.vectors.get(INDEX).version

                # a staged version still being built: its jobs recorded and held (as a server
                # holds a write's jobs) while the index record is stored, then run, the model's
                # first batch waiting on GATE
                GATE.clear()
                other = superduper(f'sqlite:///{tmp_path}/evaluation.db')  # the process staging it
                recorded = threading.Event()
                errors: list[BaseException] = []

                def stage() -> None:
                    try:
                        with other.executor.deferring(other):
                            other.stage(index_of('gated', gated_words, 64, coll))
                            recorded.set()
                    except BaseException as exc:  # reported by the test
                        errors.append(exc)
                    finally:
                        recorded.set()

                thread = threading.Thread(target=stage, daemon=True)
                thread.start()
                try:
                    assert recorded.wait(60) and not errors, errors

                    def predict_running() -> bool:
                        staged = overview_indexes(url)['staged']
                        return bool(staged) and any(
                            j['method'] == 'predict' and j['status'] == 'running' for j in staged[0]['jobs']
                        )

                    wait_for(predict_running, "the staged version's backfill to run", 30)
                    index = overview_indexes(url)
                    assert (index['versions'], index['serving']) == ([0, 1, 2], 1)
                    (staged,) = index['staged']
                    assert staged['version'] == 2 and staged['state'] == 'building', staged
                    assert staged['done'] < len(ROWS)
                    jobs = {j['method']: j for j in staged['jobs']}
                    assert jobs['predict']['component'].startswith('watcher/gated@notes.body/')
                    assert jobs['vector_build']['status'] == 'pending'
                    assert db.vectors.get(INDEX).version == 1  # the promoted version serves on
                finally:
                    GATE.set()
                    thread.join(60)
                assert not thread.is_alive() and not errors, errors
                index = overview_indexes(url)
                (staged,) = index['staged']
                assert (index['serving'], staged['version'], staged['state']) == (1, 2, 'built')
                assert (staged['done'], staged['total']) == (len(ROWS), len(ROWS))
        finally:
            GATE.set()
            if other is not None:
                other.close()
            db.close()


# ----- the page, in a browser -----------------------------------------------------------------
@pytest.fixture(scope='module')
def site(tmp_path_factory):
    """Two evaluations of version 0 (letter counts), a better version staged and promoted (the
    promotion measures both), and one more evaluation of it; served with the dashboard."""
    tmp = tmp_path_factory.mktemp('ui-evaluation')
    with CFG.override(**{'artifact_store': f'filesystem://{tmp}/artifacts'}):
        db, coll = populated(tmp)
        db.evaluate(INDEX, 'notes-set', k=3)
        db.evaluate(INDEX, 'notes-set', k=3)
        db.stage(index_of('words', words, 64, coll))
        assert db.promote(INDEX, 'notes-set', k=3).promoted
        db.evaluate(INDEX, 'notes-set', k=3)
        assert [e['version'] for e in db.evaluations(INDEX)] == [0, 0, 0, 1, 1]
        app = create_app(db, token=TOKEN)
        with running(app) as url:
            yield {'url': url, 'db': db}
        db.close()


def _page(browser: Any, site: dict[str, Any]) -> Any:
    return dashboard_page(browser, site['url'], TOKEN, path='/ui/evaluation', height=1000)


def _shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f'{name}.png'), full_page=True)


def _table(page: Any) -> list[dict[str, Any]]:
    rows = []
    for row in page.locator('#evaluations tbody tr').all():
        cells = {
            name: row.locator(f'td.{name}').inner_text()
            for name in ('when', 'version', 'model', 'engine', 'k', 'set')
        }
        for metric in ('recall', 'precision', 'mrr', 'ndcg', 'latency_p50_ms', 'latency_p95_ms'):
            cells[metric] = row.locator(f'td.metric.{metric}').inner_text()
        rows.append({'id': row.get_attribute('data-evaluation'), **cells})
    return rows


def _expected(evaluation: dict[str, Any]) -> dict[str, Any]:
    k, m = evaluation['k'], evaluation['metrics']
    return {
        'id': evaluation['id'],
        'version': str(evaluation['version']),
        'model': f'{evaluation["model"][0]} v{evaluation["model"][1]}',
        'engine': evaluation['engine'],
        'k': str(k),
        'set': evaluation['evaluation_set'],
        'recall': shown('recall', m[f'recall@{k}']),
        'precision': shown('precision', m[f'precision@{k}']),
        'mrr': shown('mrr', m['mrr']),
        'ndcg': shown('ndcg', m[f'ndcg@{k}']),
        'latency_p50_ms': shown('latency_p50_ms', m['latency_p50_ms']),
        'latency_p95_ms': shown('latency_p95_ms', m['latency_p95_ms']),
    }


def test_the_page_shows_the_evaluations_per_version_and_which_serves(browser, site):
    db = site['db']
    page = _page(browser, site)
    assert page.locator('nav a.active').inner_text() == 'Evaluation'
    assert page.input_value('select[name=index]') == INDEX

    # the table: db.evaluations, newest first, metrics as the page rounds them
    expected = [_expected(e) for e in reversed(db.evaluations(INDEX))]
    table = _table(page)
    assert all(row.pop('when') for row in table)
    assert table == expected
    assert {row['model'] for row in table} == {'letters v0', 'words v0'}

    # which version serves: db.vectors's, and nothing is staged
    serving = db.vectors.get(INDEX).version
    assert serving == 1
    assert page.get_attribute('#serving', 'data-serving') == str(serving)
    assert page.inner_text('#serving').startswith(f'Version {serving} serves')
    assert page.locator('#staged li').count() == 0

    # the plot: one series per version, a point per evaluation, for each metric chosen
    for metric in ('ndcg', 'recall', 'mrr', 'precision', 'latency_p50_ms'):
        page.select_option('select[name=metric]', metric)
        series = page.locator('#plot-metric svg path.series')
        assert sorted(series.evaluate_all('(ps) => ps.map((p) => p.dataset.series)')) == [
            'version 0',
            'version 1',
        ]
        assert page.locator('#plot-metric circle.point[data-series="version 0"]').count() == 3
        assert page.locator('#plot-metric circle.point[data-series="version 1"]').count() == 2
        assert page.locator('#plot-metric .legend span').all_inner_texts() == ['version 0', 'version 1']
    page.select_option('select[name=metric]', 'ndcg')
    titles = page.locator('#plot-metric circle.point[data-series="version 1"] title').all_text_contents()
    assert len(titles) == 2 and all(t.startswith('version 1, ') for t in titles), titles
    _shot(page, 'evaluation')
    assert page.dialogs == []


def test_evaluate_adds_a_row_and_a_point(browser, site):
    db = site['db']
    before = len(db.evaluations(INDEX))
    page = _page(browser, site)
    assert page.locator('#evaluations tbody tr').count() == before
    assert page.locator('select[name=set] option').all_inner_texts() == ['notes-set']
    assert page.input_value('input[name=k]') == '3'  # the k measured last
    page.fill('input[name=k]', '2')
    page.click('#evaluate')
    page.wait_for_selector(f'#evaluations tbody tr:nth-child({before + 1})', timeout=30_000)
    page.wait_for_selector('body:not([data-evaluating])')
    after = db.evaluations(INDEX)
    assert len(after) == before + 1
    newest = after[-1]
    assert (newest['k'], newest['version'], newest['evaluation_set']) == (2, 1, 'notes-set')
    table = _table(page)
    table[0].pop('when')
    assert table[0] == _expected(newest)  # the newest first
    assert page.locator('#plot-metric circle.point[data-series="version 1"]').count() == 3
    assert 'version 1: ndcg@2' in page.inner_text('#evaluate-result')
    assert page.inner_text('#error') == ''


def test_a_staged_version_is_shown_built_and_not_serving(browser, site):
    db = site['db']
    db.stage(index_of('words-again', words, 64, Collection('notes')))
    assert db.vectors.get(INDEX).version == 1
    page = _page(browser, site)
    assert page.get_attribute('#serving', 'data-serving') == '1'
    assert page.inner_text('#serving') == 'Version 1 serves · versions kept: 0, 1, 2'
    staged = page.locator('#staged li')
    assert staged.count() == 1 and staged.get_attribute('data-state') == 'built'
    assert staged.locator('.staged-text').inner_text() == (
        'version 2 staged: built, not serving: promote with db.promote("notes-index", "notes-set")'
    )
    # its jobs link to their pages: the watcher's backfill and the index's build
    links = staged.locator('a.job-link')
    assert links.all_inner_texts() == ['predict success', 'vector_build success']
    job = db.metadata.jobs({'component': 'vector_index/notes-index/2', 'method': 'vector_build'}, limit=1)[0]
    assert links.nth(1).get_attribute('href') == f'/ui/jobs/{job["_id"]}'
    _shot(page, 'evaluation-staged')
