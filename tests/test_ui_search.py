"""The dashboard's Search page by meaning, by words and both (hybrid), in a real browser
(Debian's chromium driven by playwright, as in tests/test_ui.py) over a real server on
127.0.0.1 and a SQLite file. The truth is ``db.execute`` of the same query."""

from __future__ import annotations

import re
from typing import Any

import pytest

pytest.importorskip('fastapi')
pytest.importorskip('jinja2')

from superduperdb import Collection, KeywordIndex, superduper  # noqa: E402
from superduperdb.base.config import CFG  # noqa: E402
from superduperdb.server.app import create_app, running  # noqa: E402
from tests.helpers import dashboard_page  # noqa: E402
from tests.test_server_search import PART, indexed  # noqa: E402

TOKEN = 'ui-search-token'
pytestmark = [pytest.mark.sqlite, pytest.mark.slow]


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    """Table ``docs`` with vector index ``vec`` and keyword index ``kw``, and table ``other``
    with keyword index ``kw-other``, served with the dashboard."""
    tmp = tmp_path_factory.mktemp('ui-search')
    with CFG.override(**{'artifact_store': f'filesystem://{tmp}/artifacts'}):
        db = superduper(f'sqlite:///{tmp}/search.db')
        docs = indexed(db, 'docs')
        other = Collection('other')
        db.execute(other.insert_many([{'body': 'paper jam'}, {'body': 'access denied'}]))
        db.add(KeywordIndex('kw-other', key='body', select=other.find()))
        with running(create_app(db, token=TOKEN)) as url:
            yield {'url': url, 'db': db, 'docs': docs}
        db.close()


def _search_page(browser: Any, site: dict[str, Any]) -> Any:
    return dashboard_page(browser, site['url'], TOKEN, path='/ui/search')


def _search(page: Any, text: str, n: int) -> list[dict[str, str]]:
    """Search for ``text`` as the form is set; each result row as {column: text}."""
    page.fill('input[name=text]', text)
    page.fill('input[name=n]', str(n))
    page.click('#search button[type=submit]')
    page.wait_for_selector('#results tbody tr')
    page.wait_for_function('!document.body.dataset.searching')
    headers = page.locator('#results thead th').all_inner_texts()
    rows = page.locator('#results tbody tr')
    return [dict(zip(headers, rows.nth(i).locator('td').all_inner_texts())) for i in range(rows.count())]


def _part(cell: str) -> tuple[int, float] | None:
    """A part's cell, '#2 · 0.2582', as (rank, score); None for '—' (that part did not find it)."""
    if cell == '—':
        return None
    rank, score = cell.split(' · ')
    return int(rank.lstrip('#')), float(score)


def test_hybrid_search_shows_each_parts_rank_and_score_and_the_timings(browser, site):
    page = _search_page(browser, site)
    page.select_option('select[name=mode]', 'hybrid')
    assert page.locator('select[name=keyword]').is_visible()
    assert page.locator('select[name=fusion]').is_visible()
    page.select_option('select[name=index]', 'vec')
    page.select_option('select[name=keyword]', 'kw')
    shown = _search(page, PART['body'], 4)

    q = site['docs'].like(PART, 'vec', n=4).match(PART, 'kw', n=4).find()
    truth = list(site['db'].execute(q))
    assert [row['body'] for row in shown] == [d['body'] for d in truth]
    assert shown[0]['body'] == 'error 0x80070005 access denied'  # the part number, first
    assert list(shown[0])[:4] == ['#', 'score', 'vector', 'keyword']
    assert '_scores' not in shown[0] and '_ranks' not in shown[0]
    for row, doc in zip(shown, truth):
        assert float(row['score']) == pytest.approx(doc['_score'], abs=1e-4)
        for column, part in (('vector', 'like'), ('keyword', 'match')):
            found = _part(row[column])
            if doc['_ranks'][part] is None:
                assert found is None
            else:
                assert found is not None and found[0] == doc['_ranks'][part]
                assert found[1] == pytest.approx(doc['_scores'][part], rel=1e-3)
    assert any(_part(row['keyword']) is None for row in shown)  # rows only the vectors found
    timing = page.inner_text('#timing')
    assert re.search(r'4 results · search [\d.]+ ms on the server', timing)
    assert all(f'{step} ' in timing for step in ('like', 'match', 'fuse', 'rows'))
    assert page.locator('#plot-scores svg rect').count() == 4


def test_keyword_search_then_weighted_fusion(browser, site):
    page = _search_page(browser, site)
    page.select_option('select[name=mode]', 'keyword')
    assert page.locator('select[name=index]').is_hidden() and page.locator('select[name=fusion]').is_hidden()
    page.select_option('select[name=keyword]', 'kw')
    shown = _search(page, 'paper tray', 3)
    truth = list(site['db'].execute(site['docs'].match({'body': 'paper tray'}, 'kw', n=3)))
    assert [row['body'] for row in shown] == [d['body'] for d in truth]
    assert shown[0]['body'] == 'paper jam in tray two'
    assert 'vector' not in shown[0] and 'keyword' not in shown[0]
    assert [float(row['score']) for row in shown] == pytest.approx([d['_score'] for d in truth], abs=1e-4)
    assert 'match ' in page.inner_text('#timing') and 'like ' not in page.inner_text('#timing')

    page.select_option('select[name=mode]', 'hybrid')
    page.select_option('select[name=fusion]', 'weighted')
    page.fill('input[name=filter]', '{"n": {"$gte": 2}}')
    shown = _search(page, PART['body'], 3)
    q = site['docs'].find({'n': {'$gte': 2}}).like(PART, 'vec', n=3).match(PART, 'kw', n=3).fuse('weighted')
    truth = list(site['db'].execute(q))
    assert [row['body'] for row in shown] == [d['body'] for d in truth]
    assert [float(row['score']) for row in shown] == pytest.approx([d['_score'] for d in truth], abs=1e-4)


def test_a_hybrid_search_over_two_tables_says_what_is_wrong(browser, site):
    page = _search_page(browser, site)
    page.select_option('select[name=mode]', 'hybrid')
    page.select_option('select[name=index]', 'vec')
    page.select_option('select[name=keyword]', 'kw-other')
    page.fill('input[name=text]', 'paper')
    page.click('#search button[type=submit]')
    page.wait_for_selector('#error:not([hidden])')
    error = page.inner_text('#error')
    assert 'vec' in error and 'kw-other' in error and 'two indexes of one table' in error
    assert page.locator('#results tbody tr').count() == 0

    # and one of one table searches
    page.select_option('select[name=keyword]', 'kw')
    assert _search(page, 'paper', 2)
    assert page.locator('#error').is_hidden()
