"""The :class:`Cursor`: the documents of a ``find``, read and decoded a chunk at a time.

``db.execute(Collection(...).find())`` returns one (and so does a :class:`~superduperdb.server.client.Client`,
paging over the server); it is iterated, listed, or turned into a DataFrame
(:mod:`superduperdb.query.frames`). It only ever sees decoded :class:`~superduperdb.base.document.Document`
chunks, so it sits in ``query/``, below the stores that make them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from superduperdb.base.document import Document


class Cursor:
    """Documents of a ``find``, read and decoded a chunk at a time."""

    #: documents a notebook's preview (``_repr_html_``) shows
    PREVIEW = 10

    def __init__(self, chunks: Iterator[list[Document]], *, arrow: Callable[[], Any] | None = None) -> None:
        self._chunks = chunks
        self._buffer: Iterator[Document] = iter(())
        #: the whole result as a ``pyarrow.Table`` read by the database itself (None: it cannot,
        #: and the DataFrames are built from the documents); used only before any is read
        self._arrow = arrow
        #: a search's milliseconds per step (``like_ms``, ``match_ms``, ``fuse_ms``, ``rows_ms``,
        #: ``rerank_ms``); empty for other reads
        self.timings: dict[str, float] = {}

    def _peek(self) -> list[Document]:
        """The documents iteration will give next (the rest of the current chunk, else the next
        chunk), read without consuming them: kept in the buffer, so a cursor shown in a notebook
        and then iterated still gives every document."""
        self._arrow = None
        rest = list(self._buffer)
        if not rest:
            rest = next(self._chunks, [])
        self._buffer = iter(rest)
        return rest

    def __repr__(self) -> str:
        # Field names and a count only: a document's values (arrays, images) are never rendered
        # here, a repr must stay cheap whatever the rows hold.
        ahead = self._peek()
        if not ahead:
            return '<Cursor: no more documents>'
        fields = sorted({k for d in ahead for k in d})
        return (
            f'<Cursor: next {len(ahead)} documents read (more may follow), fields '
            f'{", ".join(fields)}; iterate it, or .to_list()>'
        )

    def _repr_html_(self) -> str:
        from superduperdb.base.html import table_html

        ahead = self._peek()
        if not ahead:
            return '<i>no more documents</i>'
        shown = ahead[: self.PREVIEW]
        columns = list(dict.fromkeys(k for d in shown for k in d))  # every field, first seen first
        rows = [{c: d.get(c) for c in columns} for d in shown]
        more = '' if len(ahead) <= len(shown) else f'<p>first {len(shown)} of {len(ahead)}+ documents</p>'
        return table_html(rows) + more

    def __iter__(self) -> Cursor:
        return self

    def __next__(self) -> Document:
        self._arrow = None
        while True:
            try:
                return next(self._buffer)
            except StopIteration:
                self._buffer = iter(next(self._chunks))

    def chunks(self) -> Iterator[list[Document]]:
        """The remaining documents, a chunk (list) at a time."""
        self._arrow = None
        rest = list(self._buffer)
        if rest:
            yield rest
        yield from self._chunks

    def to_list(self) -> list[Document]:
        return list(self)

    def to_pandas(self) -> Any:
        """The remaining documents as a ``pandas.DataFrame``: a column per field, outputs as
        ``_outputs.<key>.<model>`` columns, encoded values as their Python objects (see
        :mod:`superduperdb.query.frames`; needs ``superduperdb[dataframes]``)."""
        from superduperdb.query import frames

        table = self._whole_arrow()
        return frames.to_pandas(self.chunks()) if table is None else frames.arrow_to_pandas(table)

    def to_arrow(self) -> Any:
        """The remaining documents as a ``pyarrow.Table`` (fixed-shape arrays as FixedSizeList)."""
        from superduperdb.query import frames

        table = self._whole_arrow()
        return frames.to_arrow(self.chunks()) if table is None else table

    def to_polars(self) -> Any:
        """The remaining documents as a ``polars.DataFrame`` (fixed-shape arrays as Array columns)."""
        from superduperdb.query import frames

        table = self._whole_arrow()
        return frames.to_polars(self.chunks()) if table is None else frames.arrow_to_polars(table)

    def _whole_arrow(self) -> Any:
        """The whole result as the database's Arrow table, when it gives one and nothing has
        been read yet (the documents are then not read); else None."""
        arrow, self._arrow = self._arrow, None
        table = None if arrow is None else arrow()
        if table is not None:
            self._chunks = iter(())
        return table
