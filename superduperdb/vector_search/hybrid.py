"""Running a search query: ``like()``, ``match()``, both fused, and a reranker after them.

Each part ranks rows on its own (vector: :meth:`~superduperdb.vector_search.indexes.VectorIndexes.ranked`;
keyword: :func:`keyword_ranked`), with the query's filter applied the way ``like()`` applies
it (``find(f).like(...)``: among the matching rows; ``like(...).find(f)``: after the search).
With both, the rankings are fused (:func:`fused`: reciprocal rank fusion by default) and the
rows read once. A reranker then scores the first ``top`` again.

Every result has ``_score`` (the final one); a fused one also ``_scores`` (``like``,
``match``: each part's own score, None where that part did not find it; ``fused``) and
``_ranks`` (each part's rank from 1, or None); a reranked one ``_scores['rerank']``. The
time each step took is on the results: ``db.execute(q).timings`` (milliseconds).

>>> from superduperdb.query.search import Fuse
>>> fused({'like': [1, 2, 3], 'match': [3, 4]}, {'like': {}, 'match': {}}, Fuse())[0]
[3, 1, 2, 4]
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from superduperdb.base import forks
from superduperdb.base.document import Document
from superduperdb.base.exceptions import QueryError, SuperDuperError
from superduperdb.query.cursor import Cursor
from superduperdb.query.search import Fuse, query_text
from superduperdb.store.chunks import parent_of
from superduperdb.vector_search import chunked
from superduperdb.vector_search.keys import _key_type

if TYPE_CHECKING:
    from superduperdb.datalayer.datalayer import Datalayer
    from superduperdb.query.objects import Find
    from superduperdb.vector_search.indexes import Ranked

logger = logging.getLogger(__name__)


class Results(list):  # type: ignore[type-arg]
    """A search's documents, best first, with ``timings``: milliseconds per step."""

    timings: dict[str, float]


def cursor(db: Datalayer, q: Find) -> Cursor:
    """``db.execute(q)`` of a search: its documents, and ``timings`` on the cursor."""
    found = search(db, q)
    result = Cursor(iter([found]))
    result.timings = found.timings
    return result


def search(db: Datalayer, q: Find) -> Results:
    """The documents ``q`` finds, best first (see the module's docstring)."""
    with db.databackend.reading():  # its lookups on one connection, where that saves some
        return _search(db, q)


def _search(db: Datalayer, q: Find) -> Results:
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    if q.fusion is not None and (q.similar is None or q.matched is None):
        raise QueryError('fuse() ranks the results of like() and match() together: the query needs both.')
    if q.matched is None:
        found = db.vectors.ranked(q)
        timings['like_ms'] = _ms(clock)
        if isinstance(found, list):  # like(..., chunks=True): the chunks themselves
            if q.reranker is not None:
                found = _rerank(db, q, found, timings)
            return _results(found, timings)
        keys, score_of, more = found
    else:
        if q.similar is not None and q.similar.chunks:
            raise QueryError('like(..., chunks=True) returns chunks; it cannot be fused with match().')
        if q.similar is None:
            keys, score_of, more = keyword_ranked(db, q)
            timings['match_ms'] = _ms(clock)
        else:
            vector, keyword = _both_parts(db, q, timings)
            clock = time.perf_counter()
            fusion = q.fusion or Fuse()
            n = fusion.n or max(q.similar.n, q.matched.n)
            l2 = _lower_is_better(db, q)
            order, scores, ranks = fused(
                {'like': vector[0], 'match': keyword[0]},
                {'like': {k: -s for k, s in vector[1].items()} if l2 else vector[1], 'match': keyword[1]},
                fusion,
            )
            keys = order[:n]
            score_of = {k: scores[k] for k in keys}
            parts = {'like': vector[1], 'match': keyword[1]}
            more = _fusion_details(keys, parts, scores, ranks, [vector[2], keyword[2]])
            timings['fuse_ms'] = _ms(clock)
    clock = time.perf_counter()
    docs = db.vectors.rows(q, keys, score_of, more)
    timings['rows_ms'] = _ms(clock)
    if q.reranker is not None:
        docs = _rerank(db, q, docs, timings)
    return _results(docs, timings)


def _both_parts(db: Datalayer, q: Find, timings: dict[str, float]) -> tuple[Ranked, Ranked]:
    """The vector and the keyword rankings of ``q``, found side by side: the keyword search
    in a thread of the search pool while this one searches vectors (numpy and the database
    drivers release the GIL, so a hybrid search costs about its slower part, not the sum);
    one after the other on a database one thread at a time uses (SQLite in memory, DuckDB,
    mongomock)."""

    def timed(part: str, find: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        found = find()
        timings[f'{part}_ms'] = _ms(start)
        return found

    if db.databackend.one_thread_at_a_time():
        keyword = timed('match', lambda: keyword_ranked(db, q))
        vector = timed('like', lambda: db.vectors.ranked(q))
    else:
        pending = _pool().submit(timed, 'match', lambda: keyword_ranked(db, q))
        try:
            vector = timed('like', lambda: db.vectors.ranked(q))
        finally:
            keyword = pending.result()
    assert not isinstance(vector, list)
    return vector, keyword


_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    """The threads keyword searches run in beside vector searches (made on first use)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix='superduperdb-search')
        return _POOL


def _forked() -> None:
    """In a forked child the parent's pool threads do not exist: a new pool on first use."""
    global _POOL, _POOL_LOCK
    _POOL, _POOL_LOCK = None, threading.Lock()


forks.in_child(_forked)


def _results(docs: list[Document], timings: dict[str, float]) -> Results:
    results = Results(docs)
    results.timings = timings
    logger.debug('search timings: %s', timings)
    return results


def _ms(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 3)


def _lower_is_better(db: Datalayer, q: Find) -> bool:
    assert q.similar is not None
    return db.vectors.get(q.similar.index).measure == 'l2'


# ----- the keyword part -------------------------------------------------------------------
def keyword_ranked(db: Datalayer, q: Find) -> Ranked:
    """The rows ``q``'s ``match`` finds: ``(keys best first, score by key, what to add to each row)``."""
    assert q.matched is not None
    index = db.keywords.get(q.matched.index)
    key, text = query_text(q.matched.value, 'match()')
    backend = db.databackend
    n = q.matched.n
    if index.table != q.table:  # an index of the chunks of q's table: parent rows are wanted
        chunker = parent_of(db, q.table, index.table)
        if chunker is None:
            raise QueryError(
                f'Keyword index {index.identifier!r} indexes table {index.table!r}, not {q.table!r}.'
            )
        if key not in (index.key, chunker.key):
            raise QueryError(
                f'Keyword index {index.identifier!r} indexes the chunks of {chunker.key!r}; match '
                f'{{{chunker.key!r}: ...}}, not {key!r}.'
            )

        def find_chunks(asked: int, within: list[str] | None) -> tuple[list[str], Any]:
            return db.keywords.search(index, text, asked, within)

        best = chunked.search(db, find_chunks, index.table, q, n)
        return list(best), {k: b.score for k, b in best.items()}, chunked.attach(best)
    if key != index.key:
        raise QueryError(
            f'Keyword index {index.identifier!r} indexes {index.key!r}; '
            f'match {{{index.key!r}: ...}}, not {key!r}.'
        )
    within: list[Any] | None = None
    if q.filter and not q.like_first:  # filter, then search among the matching rows
        within = backend.keys(q.table, q.filter)
        if not within:
            return [], {}, None
    ids, scores = db.keywords.search(index, text, n, within)
    if not ids:
        return [], {}, None
    key_type = _key_type(backend, q.table, backend.primary_key(q.table))
    keys = [key_type(i) for i in ids]
    return keys, dict(zip(keys, scores)), None


# ----- fusion -----------------------------------------------------------------------------
def fused(
    rankings: dict[str, list[Any]], scores: dict[str, dict[Any, float]], fusion: Fuse
) -> tuple[list[Any], dict[Any, float], dict[Any, dict[str, int | None]]]:
    """``(keys best first, fused score by key, rank by part by key)`` of several rankings.

    ``rrf``: ``sum(weight / (k + rank))`` over the parts that ranked a key (equal scores share
    a rank, see :func:`_ranks_of`; a part that scored all its candidates the same adds
    nothing, see :func:`_says_nothing`). ``weighted``: each
    part's ``scores`` (higher better) scaled to 0..1 over its candidates (all equal: 1 if
    positive, else 0: a part that scored every candidate the same, a query vector of zeros,
    says nothing), then a weighted sum. RRF ties (two rows, each first in one part) are
    broken by the weighted sum, so the part that told its candidates apart decides; then
    by the order in which keys first appear (the ``like`` part's first).
    """
    ranks: dict[Any, dict[str, int | None]] = {}
    reciprocal: dict[Any, float] = {}
    for part, keys in rankings.items():
        counts = not _says_nothing(keys, scores[part])
        for key, rank in zip(keys, _ranks_of(keys, scores[part])):
            ranks.setdefault(key, dict.fromkeys(rankings))[part] = rank
            gain = fusion.weight(part) / (fusion.k + rank) if counts else 0.0
            reciprocal[key] = reciprocal.get(key, 0.0) + gain
    weighted = _weighted(rankings, scores, fusion)
    first_seen = {key: i for i, key in enumerate(ranks)}
    if fusion.method == 'weighted':
        order = sorted(weighted, key=lambda k: (-weighted[k], first_seen[k]))
        return order, weighted, ranks
    order = sorted(reciprocal, key=lambda k: (-round(reciprocal[k], 12), -weighted[k], first_seen[k]))
    return order, reciprocal, ranks


def _says_nothing(keys: list[Any], scores: dict[Any, float]) -> bool:
    """Whether a part scored its candidates (two or more) all the same: it ranked nothing (a
    query vector of zeros: no word of the query the embedder knows), so it adds nothing."""
    found = {round(scores[k], 6) for k in keys if k in scores}
    return len(keys) > 1 and len(found) == 1 and len(scores) >= len(keys)


def _ranks_of(keys: list[Any], scores: dict[Any, float]) -> list[int]:
    """Each key's rank in its part, from 1: keys with the same score share a rank (1, 1, 3),
    so that the order an engine happened to list equal scores in does not count as a
    preference (without scores: their positions)."""
    if not all(k in scores for k in keys):
        return list(range(1, len(keys) + 1))
    ranks, previous = [], None
    for position, key in enumerate(keys, start=1):
        score = round(scores[key], 6)
        if score != previous:
            rank, previous = position, score
        ranks.append(rank)
    return ranks


def _weighted(
    rankings: dict[str, list[Any]], scores: dict[str, dict[Any, float]], fusion: Fuse
) -> dict[Any, float]:
    """Each key's weighted sum of its parts' scores, each part scaled to 0..1 (see :func:`fused`)."""
    total: dict[Any, float] = {}
    for part, keys in rankings.items():
        values = [scores[part].get(k, 0.0) for k in keys]
        lo, hi = (min(values), max(values)) if values else (0.0, 0.0)
        for key, value in zip(keys, values):
            scaled = (value - lo) / (hi - lo) if hi > lo else float(hi > 0)
            total[key] = total.get(key, 0.0) + fusion.weight(part) * scaled
    return total


def _fusion_details(
    keys: list[Any],
    parts: dict[str, dict[Any, float]],
    fused_scores: dict[Any, float],
    ranks: dict[Any, dict[str, int | None]],
    extras: list[Callable[[Any, Document], None] | None],
) -> Callable[[Any, Document], None]:
    """What puts each part's score and rank on a fused row (and its matching chunks)."""
    wanted = set(keys)

    def put(key: Any, doc: Document) -> None:
        if key not in wanted:
            return
        doc['_scores'] = {**{p: parts[p].get(key) for p in parts}, 'fused': fused_scores[key]}
        doc['_ranks'] = dict(ranks[key])
        chunks: dict[Any, dict[str, Any]] = {}
        for extra in extras:
            if extra is None:
                continue
            probe = Document({})
            try:
                extra(key, probe)
            except KeyError:  # not found by that part
                continue
            for chunk in probe.get('_chunks', []):
                chunks.setdefault(chunk['_id'], chunk)
        if chunks:
            doc['_chunks'] = list(chunks.values())

    return put


# ----- reranking --------------------------------------------------------------------------
def _rerank(db: Datalayer, q: Find, docs: list[Document], timings: dict[str, float]) -> list[Document]:
    """The first ``top`` of ``docs`` scored by the reranker, best first, then the rest; ``n`` kept."""
    rerank = q.reranker
    assert rerank is not None
    clock = time.perf_counter()
    search = q.matched or q.similar
    assert search is not None
    field, text = _query_of(search.value)
    key = rerank.key or field
    model = _reranker(db, rerank.model)
    head, rest = docs[: rerank.top], docs[rerank.top :]
    if head:
        try:
            scores = model(text, head, key)
        except SuperDuperError:
            raise
        except Exception as exc:  # the model's own code: not a reranker, or it refused these rows
            raise QueryError(
                f'Reranker {rerank.name!r} failed: {type(exc).__name__}: {exc}. A reranker scores '
                '(query, text) pairs, one number each (such as a CrossEncoder).'
            ) from exc
        if len(scores) != len(head):
            raise QueryError(f'Reranker {rerank.name!r} gave {len(scores)} scores for {len(head)} rows.')
        for doc, score in zip(head, scores):
            doc.setdefault('_scores', {'like' if q.matched is None else 'match': doc.get('_score')})
            doc['_scores']['rerank'] = float(score)
            doc['_score'] = float(score)
        head = sorted(head, key=lambda d: -d['_score'])
    n = rerank.n or len(docs)
    timings['rerank_ms'] = _ms(clock)
    return (head + rest)[:n]


def _query_of(value: Any) -> tuple[str | None, Any]:
    if isinstance(value, dict) and len(value) == 1:
        ((key, text),) = value.items()
        return key, text
    raise QueryError('rerank() needs a query it can read: like({"field": "text"}) or match(...).')


def _text_of(doc: Document, key: str | None) -> Any:
    """The text a reranker reads of a row: its field ``key`` (a chunk's ``text``), else its best
    matching chunk's text."""
    if key is not None and doc.get(key) is not None:
        return doc[key]
    if doc.get('text') is not None:
        return doc['text']
    chunks = doc.get('_chunks')
    return chunks[0]['text'] if chunks else ''


def _reranker(db: Datalayer, model: Any) -> Callable[[Any, list[Document], str | None], list[float]]:
    """``score(query, rows, key)`` for what ``rerank(model)`` names."""
    from superduperdb.components.model import Model

    if isinstance(model, str):
        model = db.load('model', model)
    if isinstance(model, Model):
        return lambda text, rows, key: model.predict_values([(text, _text_of(d, key)) for d in rows])
    predict = getattr(model, 'predict', None)
    if callable(predict) and not inspect.isroutine(model):  # a sentence-transformers CrossEncoder
        return lambda text, rows, key: [float(s) for s in predict([(text, _text_of(d, key)) for d in rows])]
    if callable(model):
        return lambda text, rows, key: [model(text, d) for d in rows]
    raise QueryError(f'rerank() cannot score with {model!r}.')
