"""Chunkers: exact offsets, limits and coverage on any text (hypothesis), structure on real text
(docs, Python's json package), edits that change only nearby chunks, bad settings, bad inputs,
and a round trip through the database."""

from __future__ import annotations

import inspect
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from superduperdb import superduper
from superduperdb.base.exceptions import (
    ComponentError,
    ComponentNotAllowed,
    MissingDependencyError,
    QueryError,
)
from superduperdb.models.chunkers import (
    CharacterChunker,
    Chunker,
    CodeChunker,
    FunctionChunker,
    HtmlChunker,
    MarkdownChunker,
    SentenceChunker,
    TokenChunker,
)
from tests.helpers import minilm_path

DOCS = Path(__file__).resolve().parents[1] / 'docs'

FUZZ = settings(
    max_examples=int(os.environ.get('FUZZ_EXAMPLES', '150')),
    # the same cases on every run (CI passes or fails on the code, not on chance);
    # FUZZ_RANDOM=1 explores new ones
    derandomize=not os.environ.get('FUZZ_RANDOM'),
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
#: pieces that exercise every chunker's boundaries: sentences, abbreviations, paragraphs,
#: headings and fences, HTML tags, Python definitions, odd line breaks
PIECES = [
    'word',
    'Word',
    'x' * 37,
    '. ',
    '! ',
    '? ',
    ' ',
    '  ',
    '\n',
    '\n\n',
    '\n \n',
    '\t',
    'e.g. ',
    'Mr. ',
    'A. ',
    '1. ',
    '"Quote." ',
    '# ',
    '## Heading\n',
    '####### ',
    '```\n',
    '```py\n',
    '~~~\n',
    '    ',
    '<h1>',
    '</h1>',
    '<H2 id=x>',
    '<p>',
    '</p>',
    '<!-- ',
    ' -->',
    '<script>',
    '</script>',
    'def f():\n    return 1\n',
    'class A:\n    pass\n',
    '@d\n',
    '# c\n',
    'é',
    '\r\n',
    '\r',
    '\u2028',
    '\x00',
]
TEXTS = st.one_of(
    st.text(max_size=300),
    st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=8)), max_size=80).map(''.join),
)


def fold(text: str) -> str:
    return re.sub(r'\s+', ' ', text)


def check_chunks(source: str, chunks: list[Any], *, limit: int | None = None, covers: bool = True) -> None:
    """The contract every chunker keeps: exact, trimmed, non-empty, in order; within ``limit``;
    with ``covers``, every non-whitespace character lies in some chunk."""
    starts = [c['start'] for c in chunks]
    assert starts == sorted(starts)
    for c in chunks:
        assert set(c) == {'text', 'start', 'end'}
        assert c['text'] == source[c['start'] : c['end']]
        assert c['text'].strip() and c['text'] == c['text'].rstrip()
        if limit is not None:
            assert len(c['text']) <= limit
    if covers:
        reached = 0
        for c in chunks:
            assert not source[reached : c['start']].strip(), f'not covered: {source[reached : c["start"]]!r}'
            reached = max(reached, c['end'])
        assert not source[reached:].strip()


CHUNKERS: dict[str, tuple[Chunker, int | None, bool]] = {
    # name: (chunker, its limit in characters, whether it covers all non-whitespace)
    'character': (CharacterChunker('c', size=40, overlap=10), 40, True),
    'character-tiny': (CharacterChunker('c', size=7, overlap=0), 7, True),
    'character-overlap': (CharacterChunker('c', size=10, overlap=9), 10, True),
    'token': (TokenChunker('t', size=5, overlap=2), None, True),
    'sentence': (SentenceChunker('s', max_chars=60, overlap=1), 60, True),
    'markdown': (MarkdownChunker('m', max_chars=50), 50, True),
    'html': (HtmlChunker('h', max_chars=50), 50, True),
    'python': (CodeChunker('p', max_chars=50), 50, True),
    'code-in-markdown': (CodeChunker('p', language='markdown', max_chars=50), 50, False),
    'function': (FunctionChunker('f', object=str.split), None, True),
}


@pytest.mark.parametrize('name', CHUNKERS)
def test_chunks_are_exact_in_order_within_limits_and_cover_the_text(name):
    chunker, limit, covers = CHUNKERS[name]

    @FUZZ
    @given(TEXTS)
    def check(text: str) -> None:
        chunks = chunker.chunk(text)
        check_chunks(text, chunks, limit=limit, covers=covers)
        if isinstance(chunker, TokenChunker):
            assert all(len(c['text'].split()) <= chunker.size for c in chunks)
        assert chunker.chunk(text) == chunks  # deterministic

    check()


@pytest.mark.parametrize('name', CHUNKERS)
def test_empty_text_has_no_chunks_and_non_text_is_refused(name):
    chunker = CHUNKERS[name][0]
    assert chunker.predict(['', ' \n\t ']) == [[], []]
    with pytest.raises(QueryError, match=r'takes text \(str\), got bytes: b.abc'):
        chunker.predict([b'abc'])
    with pytest.raises(QueryError, match=r'takes text \(str\), got None'):
        chunker.predict([None])
    assert type(chunker).chunks is True and chunker.type_id == 'model'


@pytest.mark.parametrize(
    ('make', 'message'),
    [
        (lambda: CharacterChunker('c', size=100, overlap=100), r'overlap \(100\) must be smaller than size'),
        (lambda: CharacterChunker('c', size=0), 'size must be an integer >= 1, got 0'),
        (lambda: CharacterChunker('c', size='10'), "size must be an integer >= 1, got '10'"),
        (lambda: CharacterChunker('c', overlap=-1), 'overlap must be an integer >= 0'),
        (lambda: TokenChunker('t', size=8, overlap=8), r'overlap \(8\) must be smaller than size'),
        (lambda: TokenChunker('t', size=True), 'size must be an integer'),
        (lambda: TokenChunker('t', pattern='('), 'is not a regular expression'),
        (lambda: TokenChunker('t', tokenizer=3), 'tokenizer names a directory'),
        (lambda: SentenceChunker('s', max_chars=0), 'max_chars must be an integer >= 1'),
        (lambda: SentenceChunker('s', overlap=-2), 'overlap must be an integer >= 0'),
        (lambda: MarkdownChunker('m', max_chars=1.5), 'max_chars must be an integer'),
        (lambda: HtmlChunker('h', max_chars=-1), 'max_chars must be an integer'),
        (lambda: CodeChunker('c', language='cobol'), "language must be one of .*'python', 'markdown'"),
        (lambda: FunctionChunker('f'), 'has no function to call'),
    ],
)
def test_bad_settings_name_the_fix(make, message):
    with pytest.raises(ComponentError, match=message) as info:
        make()
    assert 'e.g.' in str(info.value) or 'pass one' in str(info.value)


def test_bad_settings_quote_a_working_call():
    with pytest.raises(ComponentError) as info:
        CharacterChunker('c', size=1000, overlap=1000)
    assert "CharacterChunker('chunks', size=1000, overlap=200)" in str(info.value)


# ----- CharacterChunker ------------------------------------------------------------------------
def test_character_windows_cut_at_whitespace_and_prefer_paragraphs():
    first = ('word ' * 7).rstrip()  # 34 characters, then a paragraph break inside the last fifth
    text = first + '\n\n' + 'more words here ' * 10
    chunks = CharacterChunker('c', size=50, overlap=10).chunk(text)
    assert chunks[0] == {'text': first, 'start': 0, 'end': 34}
    for a, b in zip(chunks, chunks[1:]):
        assert b['start'] < a['end']  # they overlap
        # whole words: cut where a word ends
        assert not text[b['start'] - 1].isalnum() and not text[a['end']].isalnum()
    check_chunks(text, chunks, limit=50)


def test_character_windows_cut_hard_where_there_is_no_whitespace():
    text = 'a' * 25
    chunks = CharacterChunker('c', size=10, overlap=0).chunk(text)
    assert [(c['start'], c['end']) for c in chunks] == [(0, 8), (8, 16), (16, 24), (24, 25)]


# ----- TokenChunker ----------------------------------------------------------------------------
def test_token_windows_share_overlap_tokens_and_follow_the_pattern():
    text = 'alpha, beta; gamma delta epsilon zeta'
    chunks = TokenChunker('t', size=3, overlap=1, pattern=r'\w+').chunk(text)
    assert [c['text'] for c in chunks] == ['alpha, beta; gamma', 'gamma delta epsilon', 'epsilon zeta']


def test_token_chunker_uses_a_hugging_face_tokenizer():
    pytest.importorskip('transformers', reason="the 'transformers' extra is not installed")
    from transformers import AutoTokenizer

    path = minilm_path()
    text = inspect.getdoc(json) or ''
    chunker = TokenChunker('t', size=40, overlap=8, tokenizer=path)
    chunks = chunker.chunk(text)
    check_chunks(text, chunks, covers=False)
    assert len(chunks) > 3
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)[
        'offset_mapping'
    ]
    for c in chunks:  # tokens of the whole text (a chunk may start inside a word: '##ing')
        assert sum(c['start'] <= s and e <= c['end'] for s, e in offsets) <= 40
    assert chunks[1]['start'] < chunks[0]['end']  # 8 tokens shared
    covered = {i for c in chunks for i in range(c['start'], c['end'])}
    assert all(i in covered for i, ch in enumerate(text) if ch.isalnum())
    assert chunker.to_config()[0]['params']['tokenizer'] == path and chunker.to_config()[1] == {}
    with pytest.raises(ComponentNotAllowed, match='a directory on the server'):
        chunker.check_from_request()


def test_token_chunker_names_the_extra_when_transformers_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, 'transformers', None)
    with pytest.raises(MissingDependencyError, match=r"pip install 'superduperdb\[transformers\]'"):
        TokenChunker('t', tokenizer='/nowhere').chunk('some text')


def test_token_chunker_says_when_the_tokenizer_directory_is_not_one(tmp_path):
    pytest.importorskip('transformers', reason="the 'transformers' extra is not installed")
    with pytest.raises(ComponentError, match='no tokenizer could be read from'):
        TokenChunker('t', tokenizer=str(tmp_path)).chunk('some text')


# ----- SentenceChunker -------------------------------------------------------------------------
def test_sentences_keep_abbreviations_and_pack_per_paragraph():
    text = 'Mr. Smith met Dr. Jones, e.g. at noon. Then they left! Did they? "Yes." 2 days later.'
    chunks = SentenceChunker('s', max_chars=38).chunk(text)
    assert [c['text'] for c in chunks] == [
        'Mr. Smith met Dr. Jones, e.g. at noon.',
        'Then they left! Did they? "Yes."',
        '2 days later.',
    ]
    accents = SentenceChunker('s', max_chars=12).chunk('Ça va. Élan vital. Über x. ok')
    assert [c['text'] for c in accents] == ['Ça va.', 'Élan vital.', 'Über x. ok']
    packed = SentenceChunker('s').chunk('A b. C d.\n\nE f. G h.')
    assert [c['text'] for c in packed] == ['A b. C d.', 'E f. G h.']


def test_a_sentence_longer_than_max_chars_is_cut_into_windows():
    text = 'Short one. Long ' + 'long ' * 60 + 'end. Last.'
    chunks = SentenceChunker('s', max_chars=100).chunk(text)
    check_chunks(text, chunks, limit=100)
    assert chunks[0]['text'] == 'Short one.' and chunks[-1]['text'].endswith('Last.')


# ----- MarkdownChunker, HtmlChunker ------------------------------------------------------------
def _markdown_docs() -> str:
    return '\n\n'.join(p.read_text() for p in sorted(DOCS.glob('*.md')))


def _headings(text: str) -> list[int]:
    """Heading line starts outside ``` fences, found line by line (an independent count)."""
    found, fenced, at = [], False, 0
    for line in text.splitlines(keepends=True):
        if line.lstrip(' ').startswith('```'):
            fenced = not fenced
        elif not fenced and re.match(r' {0,3}#{1,6}(\s|$)', line):
            found.append(at)
        at += len(line)
    return found


def test_markdown_sections_start_at_headings_outside_code():
    text = _markdown_docs()
    headings = _headings(text)
    assert len(headings) > 50
    chunks = MarkdownChunker('m', max_chars=len(text)).chunk(text)
    check_chunks(text, chunks)
    assert [c['start'] for c in chunks if text[c['start']] == '#'] == headings
    small = MarkdownChunker('m', max_chars=400).chunk(text)
    check_chunks(text, small, limit=400)
    assert {c['start'] for c in small} >= set(headings)  # a section is split, never joined to another


def test_markdown_headings_need_a_space_and_fences_hide_them():
    text = '#hashtag\n####### seven\n~~~\n# in code\n~~~\nbody\n### Real\ntext'
    assert [c['text'] for c in MarkdownChunker('m').chunk(text)] == [
        '#hashtag\n####### seven\n~~~\n# in code\n~~~\nbody',
        '### Real\ntext',
    ]


def test_html_sections_start_at_heading_tags_outside_comments_and_scripts():
    html = '<p>a</p><!-- <h1>no</h1> --><script>"<h2>"</script>\n<H3 class="x">Yes</H3><p>b</p>'
    chunks = HtmlChunker('h').chunk(html)
    assert [c['text'] for c in chunks] == [
        '<p>a</p><!-- <h1>no</h1> --><script>"<h2>"</script>',
        '<H3 class="x">Yes</H3><p>b</p>',
    ]
    long = '<h1>Title</h1>' + ''.join(f'<p>Paragraph {i} has some words.</p>\n' for i in range(40))
    chunks = HtmlChunker('h', max_chars=200).chunk(long)
    check_chunks(long, chunks, limit=200)
    assert all(c['text'].startswith('<p>') for c in chunks[1:])


# ----- CodeChunker -----------------------------------------------------------------------------
def test_python_source_is_chunked_per_top_level_definition():
    source = Path(json.__file__).read_text()
    chunks = CodeChunker('c').chunk(source)
    check_chunks(source, chunks, limit=4000)
    defs = [c['text'].split('(')[0] for c in chunks if c['text'].startswith('def ')]
    assert defs == ['def dump', 'def dumps', 'def detect_encoding', 'def load', 'def loads']
    assert chunks[0]['text'].startswith('r"""JSON') and 'import' in chunks[0]['text']
    lines = CodeChunker('c', max_chars=200).chunk(source)
    check_chunks(source, lines, limit=200)
    assert all(c['start'] == 0 or source[c['start'] - 1] == '\n' for c in lines)  # cut between lines


def test_code_that_does_not_parse_is_cut_at_blank_lines():
    source = 'def broken(:\n    x\n\n\n    y = 1\nz = 2\n'
    assert [c['text'] for c in CodeChunker('c').chunk(source)] == ['def broken(:\n    x', '    y = 1\nz = 2']


def test_code_blocks_of_markdown():
    text = 'Intro\n```python\nx = 1\n```\ntext\n~~~\n  indented\n~~~\n````\nunclosed'
    chunks = CodeChunker('c', language='markdown').chunk(text)
    assert [c['text'] for c in chunks] == ['x = 1', '  indented', 'unclosed']


# ----- FunctionChunker -------------------------------------------------------------------------
def paragraphs(text: str) -> list[str]:
    return text.split('\n\n')


def test_function_chunker_locates_strings_and_takes_spans():
    text = 'same\n\nsame\n\nother'
    chunks = FunctionChunker('f', object=paragraphs).chunk(text)
    assert [(c['start'], c['end']) for c in chunks] == [(0, 4), (6, 10), (12, 17)]
    code = 'x = {\n    1: {\n    }\n}\n}'
    lines = FunctionChunker('f', object=str.splitlines).chunk(code)
    assert [(c['start'], c['text']) for c in lines] == [
        (0, 'x = {'),
        (10, '1: {'),
        (19, '}'),
        (21, '}'),
        (23, '}'),
    ]
    overlapping = FunctionChunker('f', object=lambda t: [t[0:6], t[3:9]]).chunk('abcdefghij')
    assert [(c['start'], c['end']) for c in overlapping] == [(0, 6), (3, 9)]
    spans = FunctionChunker('f', object=lambda t: [(5, 9), {'start': 0, 'end': 4}]).chunk('abcd efgh')
    assert [c['text'] for c in spans] == ['abcd', 'efgh']
    _, artifacts = FunctionChunker('f', object=paragraphs).to_config()
    assert artifacts == {'object': paragraphs}


def test_function_chunker_refuses_pieces_not_in_the_text():
    with pytest.raises(QueryError, match=r"<lambda> returned a chunk that is not in the text.*'missing'"):
        FunctionChunker('f', object=lambda t: ['missing']).chunk('some text')
    with pytest.raises(QueryError, match='<lambda> returned a NoneType, not a list of chunks'):
        FunctionChunker('f', object=lambda t: None).chunk('abcd')
    with pytest.raises(QueryError, match=r'a \(start, end\) pair with 0 <= start <= end <= 4'):
        FunctionChunker('f', object=lambda t: [(2, 9)]).chunk('abcd')


# ----- edits stay local ------------------------------------------------------------------------
def _common(old: list[Any], new: list[Any], delta: int) -> tuple[int, int]:
    """How many chunks at the start are identical, and how many at the end are identical in
    text with offsets shifted by ``delta``."""
    head = 0
    while head < min(len(old), len(new)) and old[head] == new[head]:
        head += 1
    tail = 0
    while tail < min(len(old), len(new)) - head:
        a, b = old[-1 - tail], new[-1 - tail]
        if (a['text'], a['start'] + delta, a['end'] + delta) != (b['text'], b['start'], b['end']):
            break
        tail += 1
    return head, tail


def _assert_local(old: list[Any], new: list[Any], delta: int, lo: int, hi: int) -> None:
    """Only chunks of the old text that reach into ``[lo, hi)`` changed."""
    head, tail = _common(old, new, delta)
    changed = old[head : len(old) - tail]
    assert all(c['end'] > lo and c['start'] < hi for c in changed), (lo, hi, changed)
    assert head > 10 and tail > 10


def _edit_in_a_middle_paragraph(text: str) -> tuple[str, int, int, int]:
    """``(new text, paragraph start, paragraph end, delta)``: a clause inserted after the
    first word of a prose paragraph in the middle of ``text``."""
    for m in re.finditer(r'\n\n([A-Z][^\n]{80,})\n', text[len(text) // 2 :]):
        start = len(text) // 2 + m.start(1)
        end = start + len(m.group(1))
        at = text.index(' ', start)
        insert = ' (a clause inserted, longer than what was there)'
        return text[:at] + insert + text[at:], start, end, len(insert)
    raise AssertionError('no prose paragraph in the middle of the docs')


def test_an_edit_changes_only_its_paragraphs_sentence_chunks():
    text = _markdown_docs()
    new, start, end, delta = _edit_in_a_middle_paragraph(text)
    chunker = SentenceChunker('s', max_chars=300, overlap=1)
    _assert_local(chunker.chunk(text), chunker.chunk(new), delta, start, end)


def test_an_edit_changes_only_its_sections_markdown_chunks():
    text = _markdown_docs()
    new, start, end, delta = _edit_in_a_middle_paragraph(text)
    headings = _headings(text)
    lo = max(h for h in headings if h <= start)
    hi = min([h for h in headings if h > end] or [len(text)])
    chunker = MarkdownChunker('m', max_chars=500)
    _assert_local(chunker.chunk(text), chunker.chunk(new), delta, lo, hi)


def test_how_far_an_edit_moves_character_windows():
    text = _markdown_docs()
    size = 200
    chunker = CharacterChunker('c', size=size, overlap=40)
    old = chunker.chunk(text)
    at = re.compile(r' (?=\S)').search(text, len(text) // 2).end()  # a word's start past the middle
    word = re.match(r'\S+', text[at:])
    assert word is not None
    # the same length: only the windows within a window's size of the edit change
    same = text[:at] + 'Z' * len(word.group()) + text[word.end() + at :]
    _assert_local(old, chunker.chunk(same), 0, at - size, at + len(word.group()) + size)
    # an insertion: the windows before it stay; those after it move with the grid (documented)
    inserted = chunker.chunk(text[:at] + 'inserted ' + text[at:])
    head, _ = _common(old, inserted, len('inserted '))
    assert all(c in inserted[:head] for c in old if c['end'] + size + 1 < at)


# ----- scale and storage -----------------------------------------------------------------------
def test_five_megabytes_of_text_keep_the_contract():
    docs = _markdown_docs()
    # with long runs that make a careless regex or loop quadratic
    text = (docs * (5_000_000 // len(docs) + 1))[:4_800_000] + '.' * 100_000 + 'x' * 100_000
    for chunker, limit in [
        (CharacterChunker('c'), 1000),
        (TokenChunker('t'), None),
        (SentenceChunker('s'), 1000),
        (MarkdownChunker('m'), 2000),
        (HtmlChunker('h'), 2000),
        (CodeChunker('p', max_chars=4000), 4000),
    ]:
        chunks = chunker.chunk(text)
        check_chunks(text, chunks, limit=limit)
        assert len(chunks) > 1000
    prose = text[:4_800_000]
    windows = FunctionChunker('f', object=lambda t: [t[i : i + 1000] for i in range(0, len(t), 800)])
    check_chunks(prose, windows.chunk(prose), limit=1000)  # each overlapping piece found where it is
    source = Path(json.__file__).read_text() * 50
    check_chunks(source, CodeChunker('p').chunk(source), limit=4000)


def test_a_batch_gives_each_text_its_own_chunks():
    texts = [f'Document {i}. ' + 'Some words here. ' * (i % 7) for i in range(500)]
    chunker = SentenceChunker('s', max_chars=50)
    assert chunker.predict(texts) == [chunker.chunk(t) for t in texts]


def test_a_chunker_round_trips_through_the_database(tmp_path):
    text = 'The quick brown fox jumps over the lazy dog. ' * 5
    chunker = CharacterChunker('c', size=50, overlap=10)
    config, artifacts = chunker.to_config()
    assert artifacts == {} and config['params']['size'] == 50
    with superduper('sqlite:///' + str(tmp_path / 'x.sqlite')) as db:
        db.add(chunker)
        loaded = db.load('model', 'c')
        assert isinstance(loaded, CharacterChunker) and (loaded.size, loaded.overlap) == (50, 10)
        assert loaded.predict([text]) == chunker.predict([text])
