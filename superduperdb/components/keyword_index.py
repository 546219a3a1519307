"""Keyword indexes: search a text field by its words, in the database's own full-text engine.

``db.add(KeywordIndex('kw', key='body', select=coll.find()))`` keeps a copy of each row's
text as a model output (the watcher of a :class:`Words` model: written, updated and deleted
with the row, by writes, change capture and the reconcile like any output) and indexes that
copy with the backend's full-text engine: PostgreSQL ``tsvector`` + GIN (``language`` is the
text search configuration), SQLite FTS5, MariaDB/MySQL ``FULLTEXT``, DuckDB's ``fts``
extension; where a database has none (a lake, MongoDB without a server's text index, a
DuckDB that cannot load ``fts``), ``bm25``: an exact BM25 engine in each process, kept in
step with the outputs like a vector engine. Query it with
``coll.match({'body': 'error 0x80070005'}, 'kw', n=10)``, alone or fused with ``like()``
(:mod:`superduperdb.query.search`).

Over chunks: ``KeywordIndex('kw', key='text', select=coll.chunks('body', 'splitter').find())``
indexes a chunk table; a ``match`` on the parent table then returns parent rows, each
scored by its best chunk.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from superduperdb.base.exceptions import ComponentError
from superduperdb.components.component import Component
from superduperdb.components.model import Model
from superduperdb.components.watcher import Watcher

if TYPE_CHECKING:
    from superduperdb.datalayer.datalayer import Datalayer
    from superduperdb.jobs.job import Job
    from superduperdb.query.objects import Find

#: engine names: ``native`` (the database's full-text engine) or ``bm25`` (in each process)
KEYWORD_ENGINES = ('native', 'bm25')
#: the identifier of the model whose outputs are the indexed texts (not attached to rows read)
WORDS = '_keyword_text'


@dataclass(kw_only=True)
class Words(Model):
    """The text a keyword index indexes: the value as a string (a list of strings joined by
    spaces; None: no output). A model so that the copy is an output like any other."""

    identifier: str = WORDS

    def predict_batch(self, inputs: Sequence[Any]) -> list[Any]:
        return [_text(x) for x in inputs]


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return ' '.join(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise ComponentError(f'A keyword index indexes text (or a list of texts), got a {type(value).__name__}.')


@dataclass(kw_only=True)
class KeywordIndex(Component):
    """A full-text index over field ``key`` of the rows ``select`` finds.

    ``language``: how words are stemmed and which are stop words (PostgreSQL's text search
    configuration, such as ``english`` or ``simple``; BM25's stemmer-free tokenizer takes
    ``english`` for English stop words, anything else for none). ``engine``: ``native`` (the
    database's own; an error where it has none), ``bm25``, or None: native where the database
    has a full-text engine, else ``bm25``.
    """

    type_id: ClassVar[str] = 'keyword_index'

    key: str = ''
    select: Find | None = None
    language: str = 'english'
    engine: str | None = None
    indexing_watcher: Watcher | None = None
    jobs_: list[Job] = field(default_factory=list, repr=False, compare=False)

    def __post_init__(self) -> None:
        from superduperdb.query.objects import Find

        if self.indexing_watcher is None:
            if not isinstance(self.key, str) or not self.key:
                raise ComponentError(
                    f"KeywordIndex key= names the text field to index, such as key='body', got {self.key!r}."
                )
            if not isinstance(self.select, Find):
                raise ComponentError(
                    'KeywordIndex select= takes the query of the rows to index, such as '
                    f'Collection("docs").find(), got {self.select!r}.'
                )
            self.indexing_watcher = Watcher(model=Words(), key=self.key, select=self.select)
        elif not isinstance(self.indexing_watcher, Watcher) or not isinstance(
            self.indexing_watcher.model, Words
        ):
            raise ComponentError('KeywordIndex indexing_watcher= is made from key= and select=; pass those.')
        self.key = self.indexing_watcher.key
        self.select = self.indexing_watcher.select
        if self.engine is not None and self.engine not in KEYWORD_ENGINES:
            raise ComponentError(
                f'KeywordIndex engine= is one of {", ".join(KEYWORD_ENGINES)} (or None: the '
                f"database's own where it has one), got {self.engine!r}."
            )
        if not isinstance(self.language, str) or not self.language.replace('_', '').isalnum():
            raise ComponentError(
                "KeywordIndex language= names a language such as 'english' or 'simple', "
                f'got {self.language!r}.'
            )

    @property
    def table(self) -> str:
        return self.indexing_watcher.table  # type: ignore[union-attr]

    def to_config(self) -> tuple[dict[str, Any], dict[str, Any]]:
        config, artifacts = super().to_config()
        params = config.get('params', {})
        params.pop('key', None)  # both follow from the watcher
        params.pop('select', None)
        return config, artifacts

    def before_add(self, db: Datalayer) -> None:
        """Choose the engine now (stored with the index: every process searches the same one)."""
        for record in db.metadata.latest('model'):
            if record['identifier'] == WORDS and not record['config']['cls'].endswith(':Words'):
                raise ComponentError(
                    f'A model named {WORDS!r} is not the text copy a keyword index keeps; rename it '
                    f"(db.remove('model', {WORDS!r})) before adding a keyword index."
                )
        native = db.databackend.fulltext(self.language)
        if self.engine is None:
            self.engine = 'native' if native is not None else 'bm25'
        elif self.engine == 'native' and native is None:
            raise ComponentError(
                f'{db.databackend.name} has no full-text engine superduperdb can use here; '
                "use KeywordIndex(..., engine='bm25') (or leave engine= out)."
            )
        if self.engine == 'native':
            native.check_language()

    def on_added(self, db: Datalayer) -> list[Job]:
        """Build the index once the watcher's backfill is done."""
        waiting_for = [job.id for job in db.unfinished_jobs(self.indexing_watcher.unique_id)]  # type: ignore[union-attr]
        args = {'index': [self.identifier, self.version]}
        job = db.new_job('keyword_build', args, component=self.unique_id, dependencies=waiting_for)
        self.jobs_ = db.submit_jobs([job])
        return self.jobs_
