"""Evaluation sets: queries with the rows that answer them, to measure a search against.

An :class:`EvaluationSet` is a component like any other (stored as JSON, versioned; queries that
are not JSON, such as images, pickled beside it): each of its queries is a value the index's
model takes (a text, usually; an image for an image index) and the keys of the rows
that are relevant to it, optionally graded (``{'row key': 2, 'other key': 1}``: higher is
more relevant; a plain list means grade 1 each). ``db.evaluate('index', 'set')`` runs every
query through the index and measures what came back (see
:mod:`superduperdb.vector_search.evaluate`).

>>> s = EvaluationSet('faq', queries=[{'query': 'reset my password', 'relevant': [3, 8]}])
>>> s.queries[0]['relevant']
{'3': 1.0, '8': 1.0}

Build one from rows you already have: :meth:`EvaluationSet.from_rows` (``(query, relevant
key[, grade])`` pairs, several per query), :meth:`from_query` (labels kept in a table),
:meth:`from_frame` (a pandas DataFrame of such rows) or :meth:`from_file` (JSON lines or CSV).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from superduperdb.base.exceptions import ComponentError
from superduperdb.components.component import Component, artifact

_EXAMPLE = "EvaluationSet('faq', queries=[{'query': 'reset my password', 'relevant': [3, 8]}])"


@dataclass(kw_only=True)
class EvaluationSet(Component):
    """Queries (``{'query': value, 'relevant': keys or {key: grade}}``) and the field whose
    model embeds them (``key``: ``like({key: query})``; None: the key of the index's own
    model, the usual case; another key where the index has a compatible model for it)."""

    type_id: ClassVar[str] = 'evaluation_set'

    queries: list[dict[str, Any]] = field(default_factory=list)
    key: str | None = None
    #: query values that are not JSON (images, arrays: whatever the index's model takes),
    #: pickled into the artifact store; such a query reads ``{'_value': <position here>}``
    values: list[Any] | None = artifact()

    def __post_init__(self) -> None:
        if self.key is not None and (not isinstance(self.key, str) or not self.key):
            raise ComponentError(
                f'EvaluationSet key= names the field queries are values of, got {self.key!r}.'
            )
        if not isinstance(self.queries, list) or not self.queries:
            raise ComponentError(f'An evaluation set needs queries, such as {_EXAMPLE}.')
        self.queries = [_checked(i, q) for i, q in enumerate(self.queries)]
        if self.values is None and not all(_is_json(q['query']) for q in self.queries):
            self.values = [q['query'] for q in self.queries]
            self.queries = [{**q, 'query': {'_value': i}} for i, q in enumerate(self.queries)]

    def query_value(self, entry: dict[str, Any]) -> Any:
        """The value of one of :attr:`queries` (an image kept in :attr:`values`, or the query)."""
        query = entry['query']
        if self.values is not None and isinstance(query, dict) and set(query) == {'_value'}:
            return self.values[query['_value']]
        return query

    @classmethod
    def from_rows(
        cls, identifier: str, rows: Iterable[Sequence[Any]], *, key: str | None = None
    ) -> EvaluationSet:
        """From ``(query, relevant key)`` or ``(query, relevant key, grade)`` rows, several per
        query (in the order queries first come)."""
        grouped: dict[str, dict[str, Any]] = {}
        for n, row in enumerate(rows):
            if not isinstance(row, Sequence) or isinstance(row, str) or len(row) not in (2, 3):
                raise ComponentError(
                    f'Row {n} of evaluation set {identifier!r} is {row!r}: rows are (query, relevant key) '
                    'or (query, relevant key, grade).'
                )
            query, relevant = row[0], row[1]
            grade = row[2] if len(row) == 3 else 1.0
            entry = grouped.setdefault(
                json.dumps(query, sort_keys=True, default=str), {'query': query, 'relevant': {}}
            )
            entry['relevant'][str(relevant)] = grade
        return cls(identifier, queries=list(grouped.values()), key=key)

    @classmethod
    def from_query(
        cls,
        identifier: str,
        db: Any,
        select: Any,
        *,
        query: str,
        relevant: str,
        grade: str | None = None,
        key: str | None = None,
    ) -> EvaluationSet:
        """From the rows a query finds: each row's ``query`` field is a query, its ``relevant``
        field the key of a row that answers it (a list of keys: several), ``grade`` its grade.

        For labels kept in a table: ``EvaluationSet.from_query('s', db, labels.find(),
        query='question', relevant='doc_id')``.
        """
        rows = []
        for doc in db.execute(select):
            for target in doc[relevant] if isinstance(doc.get(relevant), list) else [doc.get(relevant)]:
                rows.append((doc[query], target, doc[grade]) if grade else (doc[query], target))
        if not rows:
            raise ComponentError(f'The query for evaluation set {identifier!r} found no rows: {select!r}.')
        return cls.from_rows(identifier, rows, key=key)

    @classmethod
    def from_frame(
        cls,
        identifier: str,
        frame: Any,
        *,
        query: str = 'query',
        relevant: str = 'relevant',
        grade: str | None = None,
        key: str | None = None,
    ) -> EvaluationSet:
        """From a DataFrame with a row per (query, relevant row) pair, and optionally a grade."""
        columns = [query, relevant] + ([grade] if grade else [])
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ComponentError(
                f'The DataFrame for evaluation set {identifier!r} has no column {missing[0]!r} '
                f'(it has {list(frame.columns)}); name them with query=, relevant=, grade=.'
            )
        return cls.from_rows(identifier, frame[columns].itertuples(index=False, name=None), key=key)

    @classmethod
    def from_file(cls, identifier: str, path: str | Path, *, key: str | None = None) -> EvaluationSet:
        """From a ``.jsonl`` file (a line per query: ``{"query": ..., "relevant": [...]}`` or
        ``{key: grade}``) or a ``.csv`` file with columns ``query,relevant[,grade]``."""
        path = Path(path)
        if path.suffix == '.jsonl':
            with path.open(encoding='utf-8') as f:
                queries = [json.loads(line) for line in f if line.strip()]
            return cls(identifier, queries=queries, key=key)
        if path.suffix == '.csv':
            with path.open(encoding='utf-8', newline='') as f:
                rows = list(csv.DictReader(f))
            if rows and not {'query', 'relevant'} <= set(rows[0]):
                raise ComponentError(
                    f'{path} needs the columns query and relevant (and grade), has {list(rows[0])}.'
                )
            return cls.from_rows(
                identifier,
                [
                    (r['query'], r['relevant'], float(r['grade']))
                    if r.get('grade')
                    else (r['query'], r['relevant'])
                    for r in rows
                ],
                key=key,
            )
        raise ComponentError(f'An evaluation set file is .jsonl or .csv, got {path.name!r}.')


def _checked(n: int, entry: Any) -> dict[str, Any]:
    """One query, its relevant rows as ``{key as text: grade}``."""
    if not isinstance(entry, Mapping) or 'query' not in entry or 'relevant' not in entry:
        raise ComponentError(f'Query {n} of an evaluation set is {entry!r}: each is like {_EXAMPLE}.')
    relevant = entry['relevant']
    if isinstance(relevant, Mapping):
        graded = {str(k): v for k, v in relevant.items()}
    elif isinstance(relevant, (list, tuple)):
        graded = {str(k): 1.0 for k in relevant}
    else:
        raise ComponentError(
            f'Query {n} ({entry["query"]!r}): relevant= takes the keys of the rows that answer it '
            f'(a list, or {{key: grade}}), got {relevant!r}.'
        )
    if not graded:
        raise ComponentError(f'Query {n} ({entry["query"]!r}) names no relevant row: it cannot be measured.')
    for k, grade in graded.items():
        if isinstance(grade, bool) or not isinstance(grade, (int, float)) or grade <= 0:
            raise ComponentError(
                f'Query {n}: the grade of row {k!r} is {grade!r}; grades are positive numbers.'
            )
    return {'query': entry['query'], 'relevant': {k: float(v) for k, v in graded.items()}}


def _is_json(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True
