"""Search over chunks, answered with the rows they come from.

A vector index over a chunk table (:mod:`superduperdb.store.chunks`) holds one vector per
chunk. ``docs.like({'text': 'q'}, 'index')`` on the chunks' parent table returns rows of
``docs``: each row once, best first, scored by its best chunk (the aggregate: a long document
with one matching paragraph ranks as that paragraph does), with its matching chunks under
``_chunks`` (``_id``, ``chunk``, ``text``, ``start``, ``end``, ``_score``; best first).
``n`` counts rows. A filter on the rows' columns applies as for any ``like``: before the
search (``find(f).like(...)``: among the chunks of the rows that match) or after it
(``like(...).find(f)``). ``like(..., chunks=True)`` returns the ``n`` best chunks themselves.

The engine is asked for more chunks than rows (several chunks of one row may come first),
widening until ``n`` rows are found or the index has no more. Every chunk it returns is looked
up in the chunk table before it is shown: a chunk deleted since (its row edited or deleted)
is never returned, even by an engine that has not caught up yet.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from superduperdb.base.document import Document

if TYPE_CHECKING:
    from superduperdb.datalayer.datalayer import Datalayer
    from superduperdb.query.objects import Find

#: Chunks asked of the engine per row wanted, widened by this factor each time too few rows came.
_WIDEN = 4
#: The columns of a chunk shown with its row.
_SHOWN = ('_id', 'chunk', 'text', 'start', 'end')


@dataclass
class Best:
    """A row's best score and its matching chunks, best first."""

    score: float
    chunks: list[dict[str, Any]] = field(default_factory=list)


def search(
    db: Datalayer,
    find_chunks: Callable[[int, list[str] | None], tuple[list[str], Any]],
    chunks: str,
    q: Find,
    n: int,
    chunks_only: bool = False,
) -> dict[Any, Best]:
    """The ``n`` best rows of ``q``'s table by their chunks in table ``chunks``, best first.

    ``find_chunks(asked, within)``: the engine's ``asked`` best chunks (among ``within``), as
    ``(ids, scores)`` best first. ``chunks_only``: ``n`` counts chunks rather than rows.
    Keys are the rows' keys as the row lookup of a search takes them (text on MongoDB).
    """
    backend = db.databackend
    within: list[str] | None = None
    if q.filter and not q.like_first:  # among the chunks of the rows that match
        parents = backend.keys(q.table, q.filter)
        if not parents:
            return {}
        within = [str(k) for k in backend.keys(chunks, {'parent': {'$in': parents}})]
        if not within:
            return {}
    asked = n if chunks_only else n * _WIDEN
    while True:
        ids, scores = find_chunks(asked, within)
        best = _by_parent(db, chunks, ids, scores)
        found = sum(len(b.chunks) for b in best.values()) if chunks_only else len(best)
        if found >= n or len(ids) < asked:
            break
        asked *= _WIDEN
    return dict(list(best.items())[:n])


def _by_parent(db: Datalayer, chunks: str, ids: list[str], scores: Any) -> dict[Any, Best]:
    """The chunks ``ids`` (best first) grouped by their row, rows in order of their best chunk;
    chunks no longer in the chunk table are left out."""
    if not ids:
        return {}
    backend = db.databackend
    projection = {name: 1 for name in (*_SHOWN, 'parent')}
    rows = {
        str(row['_id']): row
        for part in backend.find(chunks, {'_id': {'$in': list(ids)}}, projection=projection)
        for row in part
    }
    as_key = str if backend.self_describing else _same
    best: dict[Any, Best] = {}
    for chunk_id, score in zip(ids, scores):
        row = rows.get(str(chunk_id))
        if row is None:  # deleted since the engine took it: never shown
            continue
        parent = as_key(row['parent'])
        if parent not in best:
            best[parent] = Best(float(score))
        shown = {name: row[name] for name in _SHOWN}
        shown['parent'], shown['_score'] = row['parent'], float(score)
        best[parent].chunks.append(shown)
    return best


def _same(key: Any) -> Any:
    return key


def attach(best: dict[Any, Best]) -> Callable[[Any, Document], None]:
    """What puts each row's matching chunks under ``_chunks``."""

    def put(key: Any, doc: Document) -> None:
        doc['_chunks'] = [{k: v for k, v in c.items() if k != 'parent'} for c in best[key].chunks]

    return put


def chunk_documents(best: dict[Any, Best], n: int, keep: set[Any] | None = None) -> list[Document]:
    """``like(..., chunks=True)``: the ``n`` best chunks, each with its row's key (``parent``);
    ``keep``: only the chunks of these rows (a filter applied after the search)."""
    found = [
        Document(chunk) for parent, b in best.items() if keep is None or parent in keep for chunk in b.chunks
    ]
    found.sort(key=lambda c: -c['_score'])
    return found[:n]
