"""What a newcomer saw in the dashboard (issue 32 item 13), in Debian's chromium over a real
server on 127.0.0.1: a search whose model is slow says it is searching and never shows an
older query's results; a failed search leaves no old results behind; a job that succeeded
with failed rows is not shown in green; vector index jobs report how many vectors they did.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from typing import Any

import numpy as np
import pytest

pytest.importorskip('fastapi')
pytest.importorskip('jinja2')
playwright_api = pytest.importorskip('playwright.sync_api')

from superduperdb import Collection, VectorIndex, Watcher, superduper  # noqa: E402
from superduperdb.base.config import CFG  # noqa: E402
from superduperdb.server.app import create_app, running  # noqa: E402

CHROMIUM = shutil.which('chromium') or '/usr/bin/chromium'
if not os.path.exists(CHROMIUM):
    pytest.skip(
        "the dashboard tests need Debian's chromium: apt-get install -y chromium (.ci/run installs it)",
        allow_module_level=True,
    )

TOKEN = 'ui-newcomer-token'
SLOW = 'slowly'  # a query text the embedder takes SLOW_SECONDS over, as a model loading cold
SLOW_SECONDS = 3.0
WORDS = ['red shoe', 'blue shoe', 'green hat', 'wool hat', 'rain coat', 'bad apple', 'bad pear']
GREEN = 'rgb(46, 139, 87)'  # --good in style.css
pytestmark = [pytest.mark.sqlite, pytest.mark.slow]


def _letters(text: str) -> np.ndarray:
    """A bag of letters: enough meaning for a search, and a pause for the slow query."""
    if text == SLOW:
        time.sleep(SLOW_SECONDS)
    counts = np.zeros(26, dtype='float32')
    for c in text.lower():
        if 'a' <= c <= 'z':
            counts[ord(c) - 97] += 1
    return counts + 1e-3


def _picky(text: str) -> int:
    if text.startswith('bad'):
        raise ValueError(f'will not read {text!r}')
    return len(text)


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('ui-newcomer')
    with CFG.override(**{'artifact_store': f'filesystem://{tmp}/artifacts', 'chunk_size': 3}):
        db = superduper(f'sqlite:///{tmp}/shop.db')
        items = Collection('items')
        db.execute(items.insert_many([{'text': w} for w in WORDS]))
        embedder = superduper(_letters, identifier='letters')
        db.add(
            VectorIndex(
                'items-index', indexing_watcher=Watcher(model=embedder, key='text', select=items.find())
            )
        )
        db.add(Watcher(model=superduper(_picky, identifier='picky'), key='text', select=items.find()))
        with running(create_app(db, token=TOKEN)) as url:
            yield {'url': url, 'db': db}
        db.close()


@pytest.fixture(scope='module')
def browser():
    with playwright_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=['--no-sandbox', '--disable-gpu'])
        yield launched
        launched.close()


@pytest.fixture
def page(browser, site):
    context = browser.new_context(viewport={'width': 1400, 'height': 900})
    page = context.new_page()
    page.goto(f'{site["url"]}/ui/login')
    page.fill('#token', TOKEN)
    page.click('button[type=submit]')
    page.wait_for_url(re.compile(r'/ui/$'))
    yield page
    context.close()


def _open(page: Any, site: dict[str, Any], path: str) -> None:
    page.goto(f'{site["url"]}{path}')
    page.wait_for_selector('body[data-loaded=true]', timeout=30_000)


def _search(page: Any, text: str, filter: str = '{}') -> None:
    page.fill('input[name=text]', text)
    page.fill('input[name=filter]', filter)
    page.click('#search button[type=submit]')


def test_a_slow_search_says_searching_and_shows_no_older_results(page, site):
    _open(page, site, '/ui/search')
    _search(page, 'shoe')
    page.wait_for_selector('#results tbody tr')
    assert 'red shoe' in page.inner_text('#results tbody')

    _search(page, SLOW)
    # while the model works: said so at once, the old answer gone, the button not clickable twice
    page.locator('#timing').filter(has_text='searching…').wait_for(timeout=1_000)
    assert page.locator('#results tbody tr').count() == 0
    assert page.locator('#plot-scores svg').count() == 0
    assert page.locator('#search button[type=submit]').is_disabled()
    page.wait_for_selector('#results tbody tr', timeout=30_000)
    assert re.search(r'\d+ results · search', page.inner_text('#timing'))
    assert page.locator('#search button[type=submit]').is_enabled()


def test_a_failed_search_clears_the_previous_results(page, site):
    _open(page, site, '/ui/search')
    _search(page, 'hat')
    page.wait_for_selector('#results tbody tr')
    assert page.locator('#plot-scores svg rect').count() > 0

    _search(page, 'hat', filter='{"text": {"$near": 1}}')  # refused by the server
    page.wait_for_selector('#error:not([hidden])')
    assert '$near' in page.inner_text('#error')
    assert page.locator('#results tbody tr').count() == 0
    assert page.locator('#plot-scores svg').count() == 0
    assert page.inner_text('#timing') == ''

    _search(page, 'hat')  # a good search again: results back, the error gone
    page.wait_for_selector('#results tbody tr')
    assert page.locator('#error').is_hidden()

    _search(page, 'hat', filter='{not json')  # refused before it is sent
    page.wait_for_selector('#error:not([hidden])')
    assert page.locator('#results tbody tr').count() == 0


def test_a_success_with_failed_rows_is_not_green(page, site):
    (job,) = site['db'].jobs(component='watcher/picky@')
    assert job.status == 'success' and job.result['failed'] == 2
    _open(page, site, '/ui/jobs?component=watcher/picky@')
    cell = page.locator(f'#jobs tbody tr[data-job="{job.id}"] td.status')
    assert cell.inner_text() == 'success, 2 rows failed'
    assert cell.evaluate('e => getComputedStyle(e).color') != GREEN

    page.goto(f'{site["url"]}/ui/jobs/{job.id}')
    page.wait_for_selector('body[data-finished=true]', timeout=30_000)
    field = page.locator('#job-fields .field-status')
    assert field.inner_text() == 'success, 2 rows failed'
    assert field.evaluate('e => getComputedStyle(e).color') != GREEN

    # a clean success stays green
    (build,) = site['db'].jobs(component='vector_index/items-index')
    _open(page, site, '/ui/jobs?component=vector_index/')
    clean = page.locator(f'#jobs tbody tr[data-job="{build.id}"] td.status')
    assert clean.inner_text() == 'success'
    assert clean.evaluate('e => getComputedStyle(e).color') == GREEN


def test_vector_index_jobs_report_the_vectors_they_did(page, site):
    db = site['db']
    (build,) = db.jobs(component='vector_index/items-index')
    assert build.method == 'vector_build' and (build.done, build.total) == (len(WORDS), len(WORDS))
    db.execute(Collection('items').insert_many([{'text': f'new thing {i}'} for i in range(4)]))
    (update,) = db.jobs(component='vector_index/items-index', limit=1)
    assert update.method == 'vector_update' and update.status == 'success'
    assert (update.done, update.total) == (4, 4)

    _open(page, site, '/ui/jobs?component=vector_index/')
    assert (
        page.locator(f'#jobs tbody tr[data-job="{build.id}"] td:nth-child(5)').inner_text().strip() == '7/7'
    )
    assert (
        page.locator(f'#jobs tbody tr[data-job="{update.id}"] td:nth-child(5)').inner_text().strip() == '4/4'
    )


def test_progress_is_heard_chunk_by_chunk(site, monkeypatch):
    """With pages of 3 rows, a rebuild reports each page as it is read, out of the whole."""
    from superduperdb.vector_search import stored as indexes

    monkeypatch.setattr(indexes, '_BUILD_PAGE', 3)
    db = site['db']
    index = db.load('vector_index', 'items-index')
    heard: list[tuple[int, int | None]] = []
    with db.vectors._lock:
        db.vectors._loaded.pop('items-index', None)
    db.vectors.loaded(index, progress=lambda done, total: heard.append((done, total)))
    total = db.execute(Collection('items').count())
    assert heard == [(min(done, total), total) for done in range(3, total + 3, 3)]
