"""Chunkers: models that cut one text into a list of chunks, to store and embed one by one.

A chunker's output for a text is a list of :class:`Chunk` dicts ``{'text', 'start', 'end'}``
in order of ``start``, where ``text == source[start:end]`` always (character offsets into
the original string; chunks are trimmed of surrounding whitespace by moving the offsets, and
empty ones are dropped). Outputs are deterministic, and every chunker but
:class:`CharacterChunker` and :class:`TokenChunker` places its boundaries by local text
(paragraphs, headings, definitions): editing one part of a long document changes only the
chunks around the edit, so only those need embedding again.

- :class:`CharacterChunker`: windows of at most ``size`` characters, overlapping
- :class:`TokenChunker`: windows of at most ``size`` tokens (a regex, or a Hugging Face tokenizer)
- :class:`SentenceChunker`: whole sentences packed per paragraph
- :class:`MarkdownChunker`: one chunk per heading's section
- :class:`HtmlChunker`: one chunk per ``<h1>``..``<h6>`` section of raw HTML
- :class:`CodeChunker`: one chunk per top-level definition (Python) or fenced block (Markdown)
- :class:`FunctionChunker`: any function that returns pieces or spans

Settings are plain fields, stored as JSON (only :class:`FunctionChunker` pickles its function).

>>> from superduperdb.models.chunkers import SentenceChunker
>>> SentenceChunker('sentences', max_chars=30).predict(['One sentence. Another one here.'])
[[{'text': 'One sentence.', 'start': 0, 'end': 13}, {'text': 'Another one here.', 'start': 14, 'end': 31}]]
"""

from __future__ import annotations

import ast
import bisect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypedDict

from superduperdb.base.exceptions import ComponentError, ComponentNotAllowed, QueryError
from superduperdb.components.model import Model

Span = tuple[int, int]
#: cuts ``text[lo:hi]`` into spans of at most ``limit`` characters: ``(text, lo, hi, limit)``
Cutter = Callable[[str, int, int, int], list[Span]]

_PARAGRAPH = re.compile(r'\n[ \t\r\f\v]*\n\s*')
_BLANK_LINES = re.compile(r'\n(?:[ \t\r\f\v]*\n)+')  # (the next line keeps its indentation)
# a sentence ends at . ! ? (and closing quotes/brackets), before whitespace, maybe an opening
# quote, and a capital or a digit (checked in _sentences: any alphabet); group 1 is the whitespace
# (possessive, starting only at the first mark of a run: linear even on a run of dots)
_SENTENCE_END = re.compile(r'(?<![.!?])[.!?]++[\'")\]\u2019\u201d]*+(\s++)[\'"(\[\u2018\u201c]?+(?=\w)')
# words before a period that does not end a sentence (lowercased; single capitals too: "J. Smith")
_ABBREVIATIONS = frozenset(re.findall(r'\S+', 'e.g i.e mr mrs ms dr prof sr jr st vs cf fig al approx inc'))
_ABBREVIATIONS |= frozenset(
    re.findall(r'\S+', 'ltd co dept gen gov lt col sgt rev hon vol pp ed eds p.m a.m u.s')
)
_MARKDOWN_LINE = re.compile(r'^ {0,3}(?:(?P<fence>`{3,}|~{3,})|(?P<heading>#{1,6})(?=[ \t\r\n]|$))', re.M)
_HTML = re.compile(
    r'<!--.*?(?:-->|\Z)|<(script|style)\b.*?(?:</\1\s*>|\Z)'
    r'|(?P<heading><h[1-6](?=[\s/>]))'
    r'|(?P<block><(?:p|div|section|article|li|ul|ol|table|tr|pre|blockquote|br|hr)(?=[\s/>]))',
    re.I | re.S,
)
_LINE = re.compile(r'\r\n|\r|\n')
#: how far after the previous chunk FunctionChunker looks for the next string first
_GAP = 100


class Chunk(TypedDict):
    """One chunk of a text: ``text == source[start:end]``."""

    text: str
    start: int
    end: int


@dataclass(kw_only=True)
class Chunker(Model):
    """Base of the chunkers: subclasses say where to cut (:meth:`split`); this class makes the
    chunks exact (trimmed, in order, never empty) and checks that inputs are text."""

    #: how later code tells a chunker (one input, many outputs) from other models
    chunks: ClassVar[bool] = True
    #: a valid call, quoted in the errors that bad settings raise
    example: ClassVar[str] = ''

    def split(self, text: str) -> list[Span]:
        """``(start, end)`` spans of ``text`` to make chunks of. Subclasses override this."""
        raise NotImplementedError(f'{type(self).__name__} does not say where to cut: define split().')

    def predict_batch(self, inputs: Sequence[Any]) -> list[Any]:
        return [self.chunk(x) for x in inputs]

    def chunk(self, text: Any) -> list[Chunk]:
        """The chunks of one text (``[]`` for an empty one)."""
        if not isinstance(text, str):
            got = 'None' if text is None else f'{type(text).__name__}: {repr(text)[:40]}'
            raise QueryError(
                f'{type(self).__name__} {self.identifier!r} takes text (str), got {got}. '
                'Pass strings (decode bytes first, e.g. value.decode("utf-8")).'
            )
        chunks: list[Chunk] = []
        for start, end in sorted(self.split(text), key=lambda span: span[0]):
            piece = text[start:end]
            kept = self._trim(piece)
            if not kept.strip():
                continue
            start += piece.find(kept)  # kept is piece less whitespace around it: found where it begins
            chunks.append({'text': kept, 'start': start, 'end': start + len(kept)})
        return chunks

    def _trim(self, piece: str) -> str:
        return piece.strip()

    def _check(self, name: str, minimum: int, below: str | None = None) -> None:
        value = getattr(self, name)
        limit = None if below is None else getattr(self, below)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            wrong = f'{name} must be an integer >= {minimum}, got {value!r}'
        elif limit is not None and value >= limit:
            wrong = f'{name} ({value}) must be smaller than {below} ({limit})'
        else:
            return
        raise ComponentError(f'{type(self).__name__} {self.identifier!r}: {wrong}; e.g. {self.example}.')


@dataclass(kw_only=True)
class CharacterChunker(Chunker):
    """Windows of at most ``size`` characters, consecutive ones overlapping by about ``overlap``.

    Windows of ``size - slack`` characters lie on a grid (one every ``size - slack - overlap``
    characters; ``slack`` is at most a fifth of ``size``); each end is moved back to the last
    paragraph break, else line break, else whitespace in the ``slack`` characters before it,
    so words are not split (a hard cut where there is none) and no window is longer than
    ``size`` (most are about four fifths of it). Moving ends back never leaves a gap between
    windows. A window depends only on the text around it, so an edit that keeps
    the length of the text changes only the windows near it; an insertion or a deletion moves
    the grid, and every window after it changes (use :class:`SentenceChunker` or
    :class:`MarkdownChunker` where edits should stay local).

    >>> chunker = CharacterChunker('chars', size=20, overlap=5)
    >>> [c['text'] for c in chunker.predict(['The quick brown fox jumps over the lazy dog.'])[0]]
    ['The quick brown', 'brown fox jumps', 'jumps over the', 'the lazy dog.']
    """

    example: ClassVar[str] = "CharacterChunker('chunks', size=1000, overlap=200)"
    size: int = 1000
    overlap: int = 200

    def __post_init__(self) -> None:
        self._check('size', 1)
        self._check('overlap', 0, below='size')

    def split(self, text: str) -> list[Span]:
        return _windows(text, 0, len(text), self.size, self.overlap)


@dataclass(kw_only=True)
class TokenChunker(Chunker):
    """Windows of at most ``size`` tokens, consecutive ones sharing ``overlap`` tokens.

    Tokens are the matches of ``pattern`` (words, by default), or, with ``tokenizer`` (the
    directory of a Hugging Face tokenizer, read with ``local_files_only``), the model's
    tokens; a chunk runs from its first token's start to its last token's end (with a
    subword tokenizer, a window may begin or end inside a word). Windows lie on a grid of
    tokens, so an insertion changes every window after it.

    >>> chunker = TokenChunker('tokens', size=4, overlap=1)
    >>> [c['text'] for c in chunker.predict(['one two three four five six seven'])[0]]
    ['one two three four', 'four five six seven']
    """

    example: ClassVar[str] = "TokenChunker('chunks', size=256, overlap=32)"
    size: int = 256
    overlap: int = 32
    pattern: str = r'\S+'
    tokenizer: str | None = None
    pattern_: Any = field(default=None, init=False, repr=False, compare=False)
    tokenizer_: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._check('size', 1)
        self._check('overlap', 0, below='size')
        try:
            self.pattern_ = re.compile(self.pattern)
        except (re.error, TypeError) as exc:
            raise ComponentError(
                f'TokenChunker {self.identifier!r}: pattern {self.pattern!r} is not a regular '
                rf"expression ({exc}); e.g. pattern=r'\S+' (words) or r'\w+|[^\w\s]'."
            ) from exc
        if self.tokenizer is not None and not isinstance(self.tokenizer, str):
            raise ComponentError(
                f'TokenChunker {self.identifier!r}: tokenizer names a directory (str), got '
                f"{type(self.tokenizer).__name__}; e.g. tokenizer='/models/all-MiniLM-L6-v2'."
            )

    def check_from_request(self) -> None:
        """A token holder may not make the server read a directory of its choosing."""
        if self.tokenizer is not None:
            raise ComponentNotAllowed(
                f'TokenChunker {self.identifier!r} names tokenizer {self.tokenizer!r}, a directory '
                'on the server: add this chunker on the server, or leave tokenizer unset.'
            )

    def split(self, text: str) -> list[Span]:
        tokens = self._tokens(text)
        spans = []
        for lo in range(0, len(tokens), self.size - self.overlap):
            hi = min(lo + self.size, len(tokens))
            spans.append((tokens[lo][0], tokens[hi - 1][1]))
            if hi == len(tokens):
                break
        return spans

    def _tokens(self, text: str) -> list[Span]:
        if self.tokenizer is None:
            return [m.span() for m in self.pattern_.finditer(text) if m.end() > m.start()]
        if self.tokenizer_ is None:
            self.tokenizer_ = _load_tokenizer(self.identifier, self.tokenizer)
        encoded = self.tokenizer_(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        return [(int(s), int(e)) for s, e in encoded['offset_mapping'] if e > s]


def _load_tokenizer(identifier: str, path: str) -> Any:
    from superduperdb.base._deps import require

    transformers = require('transformers', extra='transformers', what='TokenChunker(tokenizer=...)')
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ComponentError(
            f'TokenChunker {identifier!r}: no tokenizer could be read from {path!r} ({exc}). '
            'Name a local directory holding tokenizer files (tokenizer.json, tokenizer_config.json).'
        ) from exc
    if not tokenizer.is_fast:
        raise ComponentError(
            f'TokenChunker {identifier!r}: the tokenizer in {path!r} gives no character offsets '
            '(it is not a "fast" tokenizer); use a directory with a tokenizer.json.'
        )
    return tokenizer


@dataclass(kw_only=True)
class SentenceChunker(Chunker):
    """Whole sentences packed into chunks of at most ``max_chars``, starting afresh at each
    paragraph (a blank line), so an edit changes only its paragraph's chunks.

    A sentence ends at ``.``, ``!`` or ``?`` before whitespace and a capital, a digit or a
    quote (not after "e.g.", "Mr.", "Dr.", an initial...); a sentence longer than
    ``max_chars`` is cut as :class:`CharacterChunker` would. The last ``overlap`` sentences of
    a chunk start the next one again.

    >>> chunker = SentenceChunker('sentences', max_chars=40, overlap=1)
    >>> [c['text'] for c in chunker.predict(['Dr. Who is here. He came at 9. It was late.'])[0]]
    ['Dr. Who is here. He came at 9.', 'He came at 9. It was late.']
    """

    example: ClassVar[str] = "SentenceChunker('chunks', max_chars=1000, overlap=0)"
    max_chars: int = 1000
    overlap: int = 0

    def __post_init__(self) -> None:
        self._check('max_chars', 1)
        self._check('overlap', 0)

    def split(self, text: str) -> list[Span]:
        spans: list[Span] = []
        for lo, hi in _paragraphs(text, 0, len(text)):
            spans.extend(_pack(text, _sentences(text, lo, hi), self.max_chars, self.overlap))
        return spans


@dataclass(kw_only=True)
class MarkdownChunker(Chunker):
    """One chunk per section: from an ATX heading line (``#`` to ``######``, outside fenced
    code) to the next one; text before the first heading is a section too. A section longer
    than ``max_chars`` is cut at paragraphs, then sentences, then characters.

    >>> md = '# Title\\nIntro.\\n\\n## Usage\\n```\\n# not a heading\\n```\\n'
    >>> [c['text'] for c in MarkdownChunker('md').predict([md])[0]]
    ['# Title\\nIntro.', '## Usage\\n```\\n# not a heading\\n```']
    """

    example: ClassVar[str] = "MarkdownChunker('chunks', max_chars=2000)"
    max_chars: int = 2000

    def __post_init__(self) -> None:
        self._check('max_chars', 1)

    def split(self, text: str) -> list[Span]:
        headings, _ = _markdown_structure(text)
        return _sections(text, [0, *headings, len(text)], self.max_chars, _prose)


@dataclass(kw_only=True)
class HtmlChunker(Chunker):
    """One chunk per section of raw HTML, from an ``<h1>``..``<h6>`` tag to the next (outside
    comments, scripts and styles); chunks are spans of the HTML itself. A section longer than
    ``max_chars`` is cut before block tags (``<p>``, ``<div>``, ``<li>``...), then at whitespace.

    >>> html = '<p>Intro</p><H1>One</H1><p>First.</p><h2 id="b">Two</h2><p>Second.</p>'
    >>> [c['text'] for c in HtmlChunker('html').predict([html])[0]]
    ['<p>Intro</p>', '<H1>One</H1><p>First.</p>', '<h2 id="b">Two</h2><p>Second.</p>']
    """

    example: ClassVar[str] = "HtmlChunker('chunks', max_chars=2000)"
    max_chars: int = 2000

    def __post_init__(self) -> None:
        self._check('max_chars', 1)

    def split(self, text: str) -> list[Span]:
        headings: list[int] = []
        blocks: list[int] = []
        for m in _HTML.finditer(text):
            if m.group('heading'):
                headings.append(m.start())
            elif m.group('block'):
                blocks.append(m.start())

        def by_blocks(text: str, lo: int, hi: int, limit: int) -> list[Span]:
            inner = blocks[bisect.bisect_right(blocks, lo) : bisect.bisect_left(blocks, hi)]
            return _pack(text, list(zip([lo, *inner], [*inner, hi])), limit)

        return _sections(text, [0, *headings, len(text)], self.max_chars, by_blocks)


@dataclass(kw_only=True)
class CodeChunker(Chunker):
    """Source code in chunks that follow its structure.

    ``language='python'``: each top-level ``def`` or ``class`` (with its decorators and the
    comments just above it) is a chunk, and consecutive other top-level statements are one;
    source that does not parse is cut at blank lines. ``language='markdown'``: one chunk per
    fenced code block (its contents). Chunks longer than ``max_chars`` are cut between lines.

    >>> source = 'import os\\nX = 1\\n\\n# Doubles.\\n@cache\\ndef f(x):\\n    return 2 * x\\n'
    >>> [c['text'] for c in CodeChunker('code').predict([source])[0]]
    ['import os\\nX = 1', '# Doubles.\\n@cache\\ndef f(x):\\n    return 2 * x']
    """

    example: ClassVar[str] = "CodeChunker('chunks', language='python', max_chars=4000)"
    languages: ClassVar[tuple[str, ...]] = ('python', 'markdown')
    language: str = 'python'
    max_chars: int = 4000

    def __post_init__(self) -> None:
        self._check('max_chars', 1)
        if self.language not in self.languages:
            raise ComponentError(
                f'CodeChunker {self.identifier!r}: language must be one of {self.languages}, got '
                f'{self.language!r}; e.g. {self.example}.'
            )

    def _trim(self, piece: str) -> str:
        # keep the indentation of a first line: drop only whole blank lines before it
        lead = len(piece) - len(piece.lstrip())
        return piece[max(piece.rfind('\n', 0, lead), piece.rfind('\r', 0, lead)) + 1 :].rstrip()

    def split(self, text: str) -> list[Span]:
        if self.language == 'markdown':
            _, blocks = _markdown_structure(text)
            return [span for lo, hi in blocks for span in _lines(text, lo, hi, self.max_chars)]
        starts = [0, *(m.end() for m in _LINE.finditer(text))]  # line k (1-based) starts at starts[k-1]
        groups = _python_groups(text, starts)
        if groups is None:
            spans = _paragraphs(text, 0, len(text), _BLANK_LINES)
        else:
            spans = [(starts[a - 1], starts[b] if b < len(starts) else len(text)) for a, b in groups]
        return [span for lo, hi in spans for span in _lines(text, lo, hi, self.max_chars)]


@dataclass(kw_only=True)
class FunctionChunker(Chunker):
    """Chunks from any function ``object(text)`` returning a list of strings (found in the
    text in order), of ``(start, end)`` tuples, or of dicts with ``start`` and ``end``.

    Each string is looked for just after the previous one (within a hundred characters),
    else overlapping it, else further on, so its offsets are exact.

    >>> lines = FunctionChunker('lines', object=str.splitlines)
    >>> lines.predict(['first\\nsecond\\nfirst'])[0][2]
    {'text': 'first', 'start': 13, 'end': 18}
    """

    example: ClassVar[str] = "FunctionChunker('chunks', object=str.splitlines)"

    def __post_init__(self) -> None:
        if not callable(self.object):
            raise ComponentError(
                f'FunctionChunker {self.identifier!r} has no function to call (object={self.object!r}); '
                f'pass one: {self.example}.'
            )

    def split(self, text: str) -> list[Span]:
        name = getattr(self.object, '__qualname__', repr(self.object))
        pieces = self.object(text)
        if isinstance(pieces, (str, dict)) or not isinstance(pieces, (list, tuple)):
            raise QueryError(
                f'FunctionChunker {self.identifier!r}: {name} returned a {type(pieces).__name__}, '
                'not a list of chunks (strings, (start, end) pairs or dicts).'
            )
        spans: list[Span] = []
        for piece in pieces:
            if isinstance(piece, str):
                if not piece.strip():
                    continue  # no chunk: nothing to locate
                spans.append(_locate(text, piece, spans[-1] if spans else None, name))
                continue
            span = (piece.get('start'), piece.get('end')) if isinstance(piece, dict) else piece
            if (
                not isinstance(span, (tuple, list))
                or len(span) != 2
                or not all(isinstance(i, int) and not isinstance(i, bool) for i in span)
                or not 0 <= span[0] <= span[1] <= len(text)
            ):
                raise QueryError(
                    f'FunctionChunker {self.identifier!r}: {name} returned {piece!r}; a chunk is a '
                    f'string of the text, a (start, end) pair with 0 <= start <= end <= {len(text)}, '
                    'or a dict with those keys.'
                )
            spans.append((span[0], span[1]))
        return spans


def _locate(text: str, piece: str, previous: Span | None, name: str) -> Span:
    """Where ``piece`` is: just after the previous chunk, else overlapping it, else further on
    (each search bounded, or ending where the piece is: linear over a whole text)."""
    if previous is None:
        at = text.find(piece)
    else:
        start, end = previous
        at = text.find(piece, end, end + len(piece) + _GAP)
        if at < 0:
            at = text.find(piece, start + 1, end + len(piece) - 1)
        if at < 0:
            at = text.find(piece, end)
    if at < 0:
        raise QueryError(
            f'{name} returned a chunk that is not in the text (after the previous chunk): '
            f'{piece[:40]!r}. A chunking function must return pieces of its input, in order.'
        )
    return at, at + len(piece)


# ----- where to cut ------------------------------------------------------------------------------
def _cut(text: str, p: int, slack: int, hi: int) -> int:
    """Where a window whose hard end is ``p`` ends: the last paragraph break, else line break,
    else whitespace in ``[p - slack, p]``, else ``p``. Never decreases as ``p`` grows (so
    windows cut from a grid cover the text)."""
    if p >= hi:
        return hi
    lo = p - slack
    for mark in ('\n\n', '\n'):
        at = text.rfind(mark, lo, min(p + len(mark), hi))
        if at >= 0:
            return at
    for at in range(p, lo - 1, -1):
        if text[at].isspace():
            return at
    return p


def _windows(text: str, lo: int, hi: int, size: int, overlap: int) -> list[Span]:
    """Spans of at most ``size`` characters covering ``text[lo:hi]``, overlapping by about
    ``overlap``, placed on a grid from ``lo`` and moved back to whitespace (see :func:`_cut`)."""
    slack = min(size // 5, (size - overlap) // 2)
    length = size - slack
    step = length - overlap  # >= 1: slack <= (size - overlap) / 2
    spans = []
    at = lo
    while True:
        start = lo if at == lo else _cut(text, at, slack, hi)
        if at + length >= hi:
            spans.append((start, hi))
            return spans
        spans.append((start, _cut(text, at + length, slack, hi)))
        at += step


def _hard(text: str, lo: int, hi: int, limit: int) -> list[Span]:
    return _windows(text, lo, hi, limit, 0)


def _paragraphs(text: str, lo: int, hi: int, breaks: re.Pattern[str] = _PARAGRAPH) -> list[Span]:
    spans = []
    for m in breaks.finditer(text, lo, hi):
        spans.append((lo, m.start()))
        lo = m.end()
    spans.append((lo, hi))
    return [(a, b) for a, b in spans if b > a]


def _sentences(text: str, lo: int, hi: int) -> list[Span]:
    spans = []
    for m in _SENTENCE_END.finditer(text, lo, hi):
        following = text[m.end()]
        if not (following.isupper() or following.isdigit()):
            continue
        single_period = m.group().startswith('.') and not m.group().startswith('..')
        if single_period and _abbreviation(text, lo, m.start()):
            continue
        spans.append((lo, m.start(1)))
        lo = m.end(1)
    spans.append((lo, hi))
    return spans


def _abbreviation(text: str, lo: int, dot: int) -> bool:
    """Whether the word before the period at ``dot`` is an abbreviation or an initial."""
    at = dot
    while at > max(lo, dot - 12) and not text[at - 1].isspace():
        at -= 1
    word = text[at:dot].lstrip('(["\'\u2018\u201c')
    return word.lower() in _ABBREVIATIONS or (len(word) == 1 and word.isupper())


def _pack(
    text: str, pieces: list[Span], limit: int, overlap: int = 0, big: Cutter | None = None
) -> list[Span]:
    """Consecutive pieces joined into spans of at most ``limit`` characters, the last
    ``overlap`` pieces of one repeated in the next; a longer piece is cut by ``big`` (into
    windows by default)."""
    spans: list[Span] = []
    i = 0
    while i < len(pieces):
        start, end = pieces[i]
        if end - start > limit:
            spans.extend((big or _hard)(text, start, end, limit))
            i += 1
            continue
        j = i + 1
        while j < len(pieces) and pieces[j][1] - start <= limit:
            j += 1
        spans.append((start, pieces[j - 1][1]))
        if j == len(pieces):
            break
        i = max(j - overlap, i + 1)
        while i < j < len(pieces) and pieces[j][1] - pieces[i][0] > limit:
            i += 1
    return spans


def _prose(text: str, lo: int, hi: int, limit: int) -> list[Span]:
    """``text[lo:hi]`` cut at paragraphs, then sentences, then characters."""
    return _pack(text, _paragraphs(text, lo, hi), limit, big=_by_sentences)


def _by_sentences(text: str, lo: int, hi: int, limit: int) -> list[Span]:
    return _pack(text, _sentences(text, lo, hi), limit)


def _sections(text: str, bounds: list[int], limit: int, split: Cutter) -> list[Span]:
    spans: list[Span] = []
    for lo, hi in zip(bounds, bounds[1:]):
        spans.extend([(lo, hi)] if hi - lo <= limit else split(text, lo, hi, limit))
    return spans


def _lines(text: str, lo: int, hi: int, limit: int) -> list[Span]:
    if hi - lo <= limit:
        return [(lo, hi)]
    cuts = [m.end() for m in _LINE.finditer(text, lo, hi)]
    return _pack(text, list(zip([lo, *cuts], [*cuts, hi])), limit)


def _markdown_structure(text: str) -> tuple[list[int], list[Span]]:
    """Where headings start (outside fences), and the contents of fenced code blocks."""
    headings: list[int] = []
    blocks: list[Span] = []
    fence: tuple[str, int, int] | None = None  # (character, length, where its contents start)
    for m in _MARKDOWN_LINE.finditer(text):
        marks = m.group('fence')
        line_end = text.find('\n', m.end())
        line_end = len(text) if line_end < 0 else line_end
        rest = text[m.end() : line_end]
        if fence is None:
            if m.group('heading'):
                headings.append(m.start())
            elif marks and not (marks[0] == '`' and '`' in rest):
                fence = (marks[0], len(marks), min(line_end + 1, len(text)))
        elif marks and marks[0] == fence[0] and len(marks) >= fence[1] and not rest.strip():
            blocks.append((fence[2], max(m.start(), fence[2])))
            fence = None
    if fence is not None:  # an unclosed fence runs to the end
        blocks.append((fence[2], len(text)))
    return headings, blocks


def _python_groups(text: str, starts: list[int]) -> list[Span] | None:
    """1-based ``(first, last)`` line ranges of the chunks of Python source (line ``k`` starts
    at ``starts[k - 1]``); None if it does not parse."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None

    def comment(line: int) -> bool:
        end = starts[line] if line < len(starts) else len(text)
        return text[starts[line - 1] : end].lstrip().startswith('#')

    groups: list[list[int]] = []  # [first, last, 1 for a definition]
    done = 0  # the last line given to a group
    for node in tree.body:
        first = min([node.lineno, *(d.lineno for d in getattr(node, 'decorator_list', []))])
        last = node.end_lineno or node.lineno
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            while first - 1 > done and comment(first - 1):  # the comments just above it
                first -= 1
            if first > done + 1:  # blank lines and other comments end the group before
                if groups:
                    groups[-1][1] = first - 1
                else:
                    groups.append([1, first - 1, 0])
            groups.append([first, last, 1])
        elif groups and not groups[-1][2]:
            groups[-1][1] = last
        else:
            groups.append([done + 1, last, 0])
        done = max(done, last)
    if not groups:
        return [(1, len(starts))]
    groups[-1][1] = len(starts)
    return [(a, b) for a, b, _ in groups]
