"""Chunks in the dashboard, in a real browser (Debian's chromium driven by playwright, as in
tests/test_ui.py), over a real server on 127.0.0.1: a search over an index of chunks lists the
rows they come from with the best chunk's span marked in the row's text, or the chunks
themselves; a row of a chunked table links to its chunks. The truth is the chunk table.

The documents hold what a browser must not take for markup, and characters outside the Basic
Multilingual Plane before the matching paragraph (the server's offsets count code points, a
JavaScript string UTF-16 units).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip('fastapi')
pytest.importorskip('jinja2')

import httpx  # noqa: E402

from superduperdb import Collection, VectorIndex, Watcher, superduper  # noqa: E402
from superduperdb.base.config import CFG  # noqa: E402
from superduperdb.encoders.numpy import array  # noqa: E402
from superduperdb.models.chunkers import MarkdownChunker  # noqa: E402
from superduperdb.models.function import FunctionModel  # noqa: E402
from superduperdb.server.app import create_app, running  # noqa: E402
from tests.helpers import dashboard_page, hashed_words  # noqa: E402

TOKEN = 'ui-chunks-token'
SCREENSHOTS = Path(__file__).resolve().parents[1] / '.artifacts' / 'screenshots'
DIMENSIONS = 64
pytestmark = [pytest.mark.sqlite, pytest.mark.slow]

#: the phrase searched for: in exactly one paragraph (the second of the third document)
PHRASE = 'zebras gallop across the savanna at dawn'
#: that paragraph, holding markup that must stay text
MATCH = (
    'Before the heat rises, zebras gallop across the savanna at dawn, <b>striped</b> herds '
    '<img src=x onerror=alert(1)> kicking up dust along the dry riverbed.'
)
DOCUMENTS = [
    {
        'title': 'kitchen',
        'body': '\n\n'.join(
            [
                'Bread dough rests overnight in a cool pantry so the yeast develops a slow, '
                'deep flavour before baking.',
                'Copper pans heat evenly; a cook seasons cast iron with oil and keeps it dry '
                'between uses to stop rust.',
                'Fresh basil wilts in the fridge, so bunches stand in a glass of water on the '
                'windowsill like cut flowers.',
            ]
        ),
    },
    {
        'title': 'harbour',
        'body': '\n\n'.join(
            [
                'Fishing boats leave the harbour before sunrise and return with crates of '
                'mackerel, sardines and squid.',
                'Gulls circle the quay while nets are mended by hand on the wooden jetty, knot '
                'after patient knot.',
                'A lighthouse keeper logs passing ships, weather and tides in a ledger kept '
                'since nineteen hundred.',
            ]
        ),
    },
    {
        'title': 'safari 🦓',
        'body': '\n\n'.join(
            [
                'Tents 🦓🐘 are pitched near the acacia trees; guides 🌍 brief visitors about '
                'water, shade and keeping still.',
                MATCH,
                'Lions sleep through the afternoon in tall grass, and elephants bathe in the '
                'muddy waterhole until evening.',
            ]
        ),
    },
]


def bag_of_words(texts: list[str]) -> list[np.ndarray]:
    """A deterministic embedding: hashed word counts, normalised."""
    return hashed_words(texts, DIMENSIONS)


@pytest.fixture(scope='module')
def site(tmp_path_factory):
    """Three documents of three paragraphs, chunked (one chunk a paragraph), embedded and
    indexed, served with the dashboard."""
    tmp = tmp_path_factory.mktemp('ui-chunks')
    with CFG.override(**{'artifact_store': f'filesystem://{tmp}/artifacts'}):
        db = superduper(f'sqlite:///{tmp}/chunks.db')
        docs = Collection('docs')
        db.execute(docs.insert_many([dict(d) for d in DOCUMENTS]))
        db.add(Watcher(model=MarkdownChunker('splitter', max_chars=160), key='body', select=docs.find()))
        chunks = docs.chunks('body', 'splitter')
        embedder = FunctionModel(
            'bow', object=bag_of_words, batched=True, encoder=array('float32', DIMENSIONS)
        )
        db.add(
            VectorIndex(
                'chunk-index', indexing_watcher=Watcher(model=embedder, key='text', select=chunks.find())
            )
        )
        app = create_app(db, token=TOKEN)
        with running(app) as url:
            yield {'url': url, 'db': db, 'docs': docs, 'chunks': chunks}
        db.close()


def _page(browser: Any, site: dict[str, Any]) -> Any:
    return dashboard_page(browser, site['url'], TOKEN)


def _loaded(page: Any) -> None:
    page.wait_for_selector('body[data-loaded=true]', timeout=30_000)


def _shot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f'{name}.png'), full_page=True)


def _truth(site: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The document holding the phrase, and its chunk holding it, as the database has them."""
    db = site['db']
    doc = db.execute(site['docs'].find_one({'title': 'safari 🦓'}))
    (chunk,) = [c for c in db.execute(site['chunks'].find({'parent': doc['_id']})) if PHRASE in c['text']]
    return doc, chunk


def test_the_chunks_are_the_paragraphs(site):
    """The premise of the tests below: each paragraph is one chunk, the phrase in one of them."""
    db = site['db']
    for doc in db.execute(site['docs'].find()):
        stored = sorted(db.execute(site['chunks'].find({'parent': doc['_id']})), key=lambda c: c['chunk'])
        assert [c['text'] for c in stored] == doc['body'].split('\n\n')
        assert all(doc['body'][c['start'] : c['end']] == c['text'] for c in stored)
    assert sum(PHRASE in c['text'] for c in db.execute(site['chunks'].find())) == 1
    doc, chunk = _truth(site)
    assert chunk['text'] == MATCH and any(ord(c) > 0xFFFF for c in doc['body'][: chunk['start']])


def test_overview_names_the_table_an_index_of_chunks_finds(site):
    found = httpx.get(f'{site["url"]}/overview', headers={'Authorization': f'Bearer {TOKEN}'})
    assert found.status_code == 200, found.text
    overview = found.json()
    (index,) = [ix for ix in overview['indexes'] if ix['identifier'] == 'chunk-index']
    of = {'table': 'docs', 'key': 'body', 'chunker': 'splitter', 'row_key': '_id'}
    assert index['table'] == 'docs__body__splitter__chunks' and index['chunks_of'] == of
    tables = {t['name']: t for t in overview['tables']}
    assert tables['docs__body__splitter__chunks']['chunks_of'] == of
    assert 'chunks_of' not in tables['docs']  # the rows' own table is no chunk table


def test_search_over_chunks_marks_the_matching_span_then_lists_the_chunks(browser, site):
    doc, chunk = _truth(site)
    page = _page(browser, site)
    page.goto(f'{site["url"]}/ui/search')
    _loaded(page)
    page.select_option('select[name=index]', 'chunk-index')
    assert page.locator('#show-chunks').is_visible()
    page.fill('input[name=text]', PHRASE)
    page.fill('input[name=n]', '3')
    page.click('#search button[type=submit]')
    page.wait_for_selector('#results tbody tr td.match mark')

    # the rows the chunks come from, each once, the one holding the phrase first
    rows = page.locator('#results tbody tr')
    assert rows.count() == 3
    first = rows.first
    assert str(doc['_id']) in first.inner_text() and 'safari 🦓' in first.inner_text()
    mark = first.locator('td.match mark')
    assert mark.count() == 1 and mark.text_content() == chunk['text']  # exactly the chunk's span
    assert first.locator('td.match b, td.match img').count() == 0  # its markup stayed text
    # the text around it is the row's own, on both sides of the span
    excerpt = first.locator('td.match .excerpt').text_content()
    before, after = excerpt.split(chunk['text'])
    assert before and doc['body'][: chunk['start']].endswith(before.lstrip('…'))
    assert after and doc['body'][chunk['end'] :].startswith(after.rstrip('…'))
    # how many of its chunks matched: as many as the server found for it
    found = list(site['db'].execute(site['docs'].like({'text': PHRASE}, 'chunk-index', n=3)))
    matched = len(found[0]['_chunks'])
    assert str(found[0]['_id']) == str(doc['_id'])
    plural = 'chunk' if matched == 1 else 'chunks'
    assert first.locator('td.match .match-count').inner_text() == f'{matched} matching {plural}'
    headers = page.locator('#results thead th').all_inner_texts()
    assert headers[:3] == ['#', 'score', 'match'] and '_chunks' not in headers
    scores = [float(s) for s in page.locator('#results tbody tr td:nth-child(2)').all_inner_texts()]
    assert scores == sorted(scores, reverse=True) and scores[0] == pytest.approx(found[0]['_score'], abs=1e-4)
    assert re.search(r'3 results · search [\d.]+ ms on the server', page.inner_text('#timing'))
    assert page.locator('#plot-scores svg rect').count() == 3
    _shot(page, 'search-chunks-rows')

    # show chunks: the chunks themselves, best first, that chunk first
    page.check('input[name=chunks]')
    page.wait_for_selector('#results thead th:text-is("span")')
    rows = page.locator('#results tbody tr')
    assert rows.count() == 3
    first = rows.first
    assert first.get_attribute('data-chunk') == chunk['_id']
    assert first.locator('td.chunk-text').text_content() == chunk['text']
    assert first.locator('td.parent').inner_text() == str(doc['_id'])
    assert first.locator('td.span').inner_text() == f'{chunk["start"]}–{chunk["end"]}'
    assert re.search(r'3 chunks · search', page.inner_text('#timing'))
    assert page.locator('#results b, #results img').count() == 0
    _shot(page, 'search-chunks-chunks')

    # and back to the rows
    page.uncheck('input[name=chunks]')
    page.wait_for_selector('#results tbody tr td.match mark')
    assert page.locator('#results tbody tr').count() == 3
    page.wait_for_timeout(200)
    assert page.dialogs == []


def test_a_rows_chunks_link_opens_the_chunk_table_filtered_by_that_row(browser, site):
    db = site['db']
    doc, _ = _truth(site)
    key = doc['_id']
    page = _page(browser, site)
    page.goto(f'{site["url"]}/ui/tables/docs')
    _loaded(page)
    assert page.locator('#rows tbody tr').count() == 3
    assert page.locator('#rows a.chunks-link').count() == 3  # each row links to its chunks
    row = page.locator('#rows tbody tr').filter(has_text=str(key))
    row.locator('a.chunks-link').click()
    page.wait_for_url(re.compile(r'/ui/tables/docs__body__splitter__chunks\?filter='))
    _loaded(page)
    expected = list(db.execute(site['docs'].chunks('body', 'splitter').find({'parent': key})))
    assert len(expected) == 3
    assert json.loads(page.input_value('input[name=filter]')) == {'parent': key}
    assert page.inner_text('#count').startswith(f'{len(expected)} rows match')
    headers = page.locator('#rows thead th').all_inner_texts()
    ids = page.locator(f'#rows tbody tr td:nth-child({headers.index("_id") + 1})').all_inner_texts()
    texts = page.locator(f'#rows tbody tr td:nth-child({headers.index("text") + 1})').all_text_contents()
    assert sorted(ids) == sorted(c['_id'] for c in expected)
    assert sorted(texts) == sorted(c['text'] for c in expected)
    assert page.locator('#rows b, #rows img').count() == 0
    _shot(page, 'table-chunks-of-a-row')

    # the chunk table is listed as holding the chunks of docs.body
    page.goto(f'{site["url"]}/ui/tables')
    _loaded(page)
    assert 'chunks of docs.body by splitter' in page.inner_text('#tables')
    # an unreadable filter in the URL is said, and the page still shows the rows
    page.goto(f'{site["url"]}/ui/tables/docs?filter=%7B%22title')
    _loaded(page)
    assert 'not JSON' in page.inner_text('#error')
    assert page.locator('#rows tbody tr').count() == 3
