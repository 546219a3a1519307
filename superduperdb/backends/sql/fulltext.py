"""Full-text search in the database's own engine, over a keyword index's output table.

A keyword index keeps a copy of each row's text as a model output (one row per source row:
``_id``, ``output``, ``_version``, ``_input_hash``; see :mod:`superduperdb.components.keyword_index`).
Here that table gets the database's full-text index, which the database itself keeps in
step with every write to it, in the same transaction:

- PostgreSQL: a GIN index on ``to_tsvector(language, output)``; words are stemmed by the
  text search configuration ``language``; a query matches any of its words
  (``plainto_tsquery`` with ``|``), ranked by ``ts_rank_cd``.
- SQLite: an FTS5 table over the output table (external content, kept by triggers on it);
  ranked by BM25; ``porter`` stemming for ``english``.
- MariaDB/MySQL: a ``FULLTEXT`` index; natural-language mode (its own relevance; InnoDB's
  stop words and minimum word length apply; ``language`` is not used).
- DuckDB: its ``fts`` extension indexes a table once and is not kept in step with writes,
  and it can only be installed from the internet: DuckDB uses the ``bm25`` engine instead.

Scores are the engine's own, higher better; they compare within one query only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from superduperdb.base.exceptions import BackendError, ComponentError

if TYPE_CHECKING:
    from superduperdb.backends.sql.backend import SQLBackend

#: where the texts are when not in the output table's ``output`` column: ``(table, field)`` (MongoDB)
Source = tuple[str, str] | None
_WORD = re.compile(r'[^\s"]+')
_TOKEN = re.compile(r'\w+')


def fulltext_of(backend: SQLBackend, language: str) -> FullText | None:
    """The full-text engine of ``backend`` (None: it has none superduperdb uses)."""
    cls = {'postgresql': PostgresFullText, 'sqlite': SQLiteFullText, 'mysql': MySQLFullText}.get(
        backend.dialect
    )
    return cls(backend, language) if cls is not None else None


class FullText:
    """One database's full-text index over output tables (see the module's docstring)."""

    #: how status names the engine
    name: str = ''

    def __init__(self, backend: SQLBackend, language: str) -> None:
        self.backend = backend
        self.language = language

    def _table(self, out: str, *, refresh: bool = True) -> sa.Table:
        """Output table ``out``; a search only quotes its name: the cached one does
        (reflecting it again took most of a small search's time)."""
        t = self.backend.table(out, refresh=refresh)
        if t is None:
            raise BackendError(f'The output table {out!r} of a keyword index is gone.')
        return t

    def _quoted(self, t: sa.Table) -> str:
        return self.backend.engine.dialect.identifier_preparer.format_table(t)

    def _name(self, out: str, suffix: str) -> str:
        return f'{out.rpartition(".")[2]}_{suffix}'[:60]

    def check_language(self) -> None:
        """Raise if this database does not know the index's ``language`` (before it is stored)."""

    def ensure(self, out: str, source: Source = None) -> None:
        """Create the index over output table ``out`` (it exists), if it is not there yet."""
        raise NotImplementedError

    def search(
        self,
        out: str,
        text: str,
        n: int,
        version: int,
        within: Sequence[Any] | None = None,
        source: Source = None,
    ) -> list[tuple[Any, float]]:
        """``[(source row key, score)]`` of the ``n`` outputs of model version ``version`` that
        best match ``text`` (among rows ``within`` if given), best first; none for a text
        without a word."""
        if not _TOKEN.search(text):
            return []
        statement, params = self._query(self._table(out, refresh=False), out, text, within)
        return self._rows(statement, {**params, 'n': n, 'version': version})

    def _query(
        self, t: sa.Table, out: str, text: str, within: Sequence[Any] | None
    ) -> tuple[Any, dict[str, Any]]:
        """The search's statement (bound ``:n`` and ``:version``) and its other parameters."""
        raise NotImplementedError

    def check(self, out: str, source: Source = None) -> dict[str, int]:
        """Whether the index agrees with the output table: ``{'indexed', 'drift', 'repaired'}``."""
        count = self.backend.count(out, {})
        return {'indexed': count, 'drift': 0, 'repaired': 0}

    def drop(self, out: str, source: Source = None) -> None:
        """Remove the index (the output table stays)."""

    def _run(self, statements: Sequence[Any]) -> None:
        with self.backend.engine.begin() as conn:
            for statement in statements:
                conn.execute(sa.text(statement) if isinstance(statement, str) else statement)

    def _rows(self, statement: Any, params: dict[str, Any]) -> list[tuple[Any, float]]:
        def run(conn: sa.Connection) -> list[tuple[Any, float]]:
            return [(row[0], float(row[1] or 0.0)) for row in conn.execute(statement, params)]

        return self.backend._read(run)  # noqa: SLF001 (the backend's own retrying read)


class PostgresFullText(FullText):
    """The words of each text in a stored generated ``tsvector`` column of the output table,
    with a GIN index on it: PostgreSQL computes the column on every write of the row, and a
    search ranks the stored vectors (an index on the expression alone re-parsed the text of
    every matching row to rank it: 12 ms a query where the column takes 2 ms, at 100k rows)."""

    name = 'postgresql tsvector (GIN)'

    def _vector(self) -> str:
        return f"to_tsvector('{self.language}'::regconfig, coalesce(output, ''))"

    def _column(self) -> str:
        return f'_tsv_{self.language}'

    def ensure(self, out: str, source: Source = None) -> None:
        t = self._table(out)
        index, column = self._name(out, f'kwv_{self.language}'), self._column()
        self._run(
            [
                f'ALTER TABLE {self._quoted(t)} ADD COLUMN IF NOT EXISTS "{column}" tsvector '
                f'GENERATED ALWAYS AS ({self._vector()}) STORED',
                f'CREATE INDEX IF NOT EXISTS "{index}" ON {self._quoted(t)} USING GIN ("{column}")',
            ]
        )
        self.backend.table(out, refresh=True)  # its definition has one more column

    def check_language(self) -> None:
        found = self._rows(
            sa.text('SELECT cfgname, 0 FROM pg_ts_config WHERE cfgname = :name'), {'name': self.language}
        )
        if not found:
            names = [r[0] for r in self._rows(sa.text('SELECT cfgname, 0 FROM pg_ts_config ORDER BY 1'), {})]
            raise ComponentError(
                f'PostgreSQL has no text search configuration {self.language!r}; KeywordIndex '
                f'language= is one of {", ".join(names)}.'
            )

    def _query(
        self, t: sa.Table, out: str, text: str, within: Sequence[Any] | None
    ) -> tuple[Any, dict[str, Any]]:
        where = '' if within is None else ' AND _id = ANY(:within)'
        column = f'"{self._column()}"'
        # any of the words: plainto_tsquery's stemmed lexemes, joined by | instead of &
        statement = sa.text(
            f'SELECT _id, ts_rank_cd({column}, q) AS score FROM {self._quoted(t)}, '
            f"(SELECT replace(plainto_tsquery('{self.language}'::regconfig, :text)::text, '&', '|')"
            f'::tsquery AS q) AS s '
            f'WHERE {column} @@ q AND _version = :version{where} ORDER BY score DESC, _id LIMIT :n'
        )
        return statement, {'text': text, **({} if within is None else {'within': list(within)})}

    def drop(self, out: str, source: Source = None) -> None:
        t = self._table(out)
        self._run(
            [f'ALTER TABLE {self._quoted(t)} DROP COLUMN IF EXISTS "{self._column()}"']
        )  # and its index
        self.backend.table(out, refresh=True)


class SQLiteFullText(FullText):
    name = 'sqlite fts5'

    def _fts(self, out: str) -> str:
        return f'{out}__fts'

    def ensure(self, out: str, source: Source = None) -> None:
        t = self._table(out)
        table, fts = self._quoted(t), f'"{self._fts(out)}"'
        tokenize = 'porter unicode61' if self.language == 'english' else 'unicode61'
        trigger = self._fts(out)
        self._run(
            [
                f'CREATE VIRTUAL TABLE IF NOT EXISTS {fts} USING fts5(output, content={table!r}, '
                f"content_rowid='rowid', tokenize='{tokenize}')",
                f'CREATE TRIGGER IF NOT EXISTS "{trigger}_i" AFTER INSERT ON {table} BEGIN '
                f'INSERT INTO {fts}(rowid, output) VALUES (new.rowid, new.output); END',
                f'CREATE TRIGGER IF NOT EXISTS "{trigger}_d" AFTER DELETE ON {table} BEGIN '
                f"INSERT INTO {fts}({fts}, rowid, output) VALUES ('delete', old.rowid, old.output); END",
                f'CREATE TRIGGER IF NOT EXISTS "{trigger}_u" AFTER UPDATE ON {table} BEGIN '
                f"INSERT INTO {fts}({fts}, rowid, output) VALUES ('delete', old.rowid, old.output); "
                f'INSERT INTO {fts}(rowid, output) VALUES (new.rowid, new.output); END',
                f"INSERT INTO {fts}({fts}) VALUES ('rebuild')",
            ]
        )

    def _query(
        self, t: sa.Table, out: str, text: str, within: Sequence[Any] | None
    ) -> tuple[Any, dict[str, Any]]:
        fts = f'"{self._fts(out)}"'
        where = '' if within is None else ' AND o._id IN (SELECT value FROM json_each(:within))'
        statement = sa.text(
            f'SELECT o._id, -bm25({fts}) AS score FROM {fts} JOIN {self._quoted(t)} AS o '
            f'ON o.rowid = {fts}.rowid WHERE {fts} MATCH :match AND o._version = :version{where} '
            f'ORDER BY bm25({fts}), o._id LIMIT :n'
        )
        params = {'match': _fts5_query(text)}
        if within is not None:  # a JSON array: any number of keys in one parameter
            params['within'] = json.dumps(list(within), default=str)
        return statement, params

    def check(self, out: str, source: Source = None) -> dict[str, int]:
        """FTS5's own check of the index against the output table; a failing one rebuilds it
        (a ``VACUUM`` renumbers the rows of a table whose key is not an integer, for example)."""
        fts = f'"{self._fts(out)}"'
        indexed = self.backend.count(out, {})
        try:
            self._run([f"INSERT INTO {fts}({fts}, rank) VALUES ('integrity-check', 1)"])
        except sa.exc.DatabaseError:
            self._run([f"INSERT INTO {fts}({fts}) VALUES ('rebuild')"])
            return {'indexed': indexed, 'drift': 1, 'repaired': 1}
        return {'indexed': indexed, 'drift': 0, 'repaired': 0}

    def drop(self, out: str, source: Source = None) -> None:
        trigger = self._fts(out)
        self._run(
            [f'DROP TRIGGER IF EXISTS "{trigger}_{s}"' for s in 'idu']
            + [f'DROP TABLE IF EXISTS "{self._fts(out)}"']
        )


def _fts5_query(text: str) -> str:
    """Any of the words of ``text`` as an FTS5 query: each word quoted (a word the tokenizer
    splits, such as ``ABC-123``, is a phrase of its parts), joined by OR."""
    words = [w for w in _WORD.findall(text) if _TOKEN.search(w)]
    return ' OR '.join('"' + w.replace('"', '""') + '"' for w in words)


class MySQLFullText(FullText):
    name = 'mariadb fulltext'

    def ensure(self, out: str, source: Source = None) -> None:
        t = self._table(out)
        index = self._name(out, 'kw')
        found = self._rows(
            sa.text(
                'SELECT index_name, 0 FROM information_schema.statistics WHERE table_schema = DATABASE() '
                'AND table_name = :table AND index_name = :index'
            ),
            {'table': t.name, 'index': index},
        )
        if not found:
            self._run([f'ALTER TABLE {self._quoted(t)} ADD FULLTEXT INDEX `{index}` (output)'])

    def _query(
        self, t: sa.Table, out: str, text: str, within: Sequence[Any] | None
    ) -> tuple[Any, dict[str, Any]]:
        against = 'MATCH(output) AGAINST (:text IN NATURAL LANGUAGE MODE)'
        where = '' if within is None else ' AND _id IN :within'
        statement = sa.text(
            f'SELECT _id, {against} AS score FROM {self._quoted(t)} WHERE {against} '
            f'AND _version = :version{where} ORDER BY score DESC, _id LIMIT :n'
        )
        if within is None:
            return statement, {'text': text}
        statement = statement.bindparams(sa.bindparam('within', expanding=True))
        return statement, {'text': text, 'within': list(within) or [None]}

    def drop(self, out: str, source: Source = None) -> None:
        t = self.backend.table(out, refresh=True)
        if t is None:
            return
        index = self._name(out, 'kw')
        try:
            self._run([f'ALTER TABLE {self._quoted(t)} DROP INDEX `{index}`'])
        except sa.exc.DatabaseError:
            pass  # not there
