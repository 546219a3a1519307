"""Vector indexes: search a table by meaning, through a watcher's vector outputs.

``db.add(VectorIndex('my-index', indexing_watcher=Watcher(model=embedder, key='text',
select=coll.find())))`` computes the vectors (the watcher's backfill), indexes them in a
vector-search engine, and keeps the index in step with inserts, updates and deletes. Query
it with ``coll.like({'text': 'a query'}, 'my-index', n=10)`` (then ``.find(filter)``), or
``coll.find(filter).like(...)`` to search among the matching rows.

The engine's state can always be rebuilt from the outputs stored in the database: a new
process (a server, a cluster worker) loads it on first use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from superduperdb.base.config import VECTOR_ENGINES
from superduperdb.base.exceptions import ComponentError
from superduperdb.components.component import Component
from superduperdb.components.watcher import Watcher

if TYPE_CHECKING:
    from superduperdb.datalayer.datalayer import Datalayer
    from superduperdb.jobs.job import Job

MEASURES = ('cosine', 'dot', 'l2')


@dataclass(kw_only=True)
class VectorIndex(Component):
    """An index over the vectors ``indexing_watcher`` computes.

    ``compatible_watcher``: a second model mapping another kind of query into the same
    space (text queries against image vectors); ``like({key: value})`` uses the model of
    the watcher whose key is ``key``. ``measure``: ``cosine``, ``dot`` or ``l2``.
    ``engine``: ``inmemory`` (exact) or ``lancedb``; None uses ``CFG.vector_search.engine``.
    """

    type_id: ClassVar[str] = 'vector_index'

    indexing_watcher: Watcher
    compatible_watcher: Watcher | None = None
    measure: str = 'cosine'
    engine: str | None = None
    #: store each row's ``neighbours`` nearest rows beside it (``doc['_outputs']['_neighbours'][index]``)
    neighbours: int = 0
    jobs_: list[Job] = field(default_factory=list, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.indexing_watcher, Watcher):
            raise ComponentError(
                'VectorIndex indexing_watcher= takes a Watcher, e.g. '
                "Watcher(model=embedder, key='text', select=coll.find()), "
                f'got {type(self.indexing_watcher).__name__}.'
            )
        if self.compatible_watcher is not None and not isinstance(self.compatible_watcher, Watcher):
            raise ComponentError(
                'VectorIndex compatible_watcher= takes a Watcher, '
                f'got {type(self.compatible_watcher).__name__}.'
            )
        if isinstance(self.neighbours, bool) or not isinstance(self.neighbours, int) or self.neighbours < 0:
            raise ComponentError(
                f'VectorIndex neighbours= takes a number of rows (0: off), got {self.neighbours!r}.'
            )
        if self.engine is not None and self.engine not in VECTOR_ENGINES:
            choices = ', '.join(VECTOR_ENGINES)
            raise ComponentError(
                f'VectorIndex engine= is one of {choices} (or None: CFG.vector_search.engine), '
                f'got {self.engine!r}.'
            )
        if self.measure not in MEASURES:
            choices = ', '.join(MEASURES)
            raise ComponentError(f'VectorIndex measure= is one of {choices}, got {self.measure!r}.')

    @property
    def table(self) -> str:
        return self.indexing_watcher.table

    def model_for(self, key: str) -> Any:
        """The model that turns a query value at ``key`` into a vector."""
        for watcher in (self.indexing_watcher, self.compatible_watcher):
            if watcher is not None and watcher.key == key:
                return watcher.model
        watchers = (self.indexing_watcher, self.compatible_watcher)
        keys = ' or '.join(repr(w.key) for w in watchers if w is not None)
        raise ComponentError(
            f'Vector index {self.identifier!r} encodes queries on {keys}, not {key!r}. '
            'Add a compatible_watcher for that key, or pass a vector.'
        )

    def before_add(self, db: Datalayer) -> None:
        """A compatible watcher's key names queries, not the table's columns: not checked there."""
        if self.compatible_watcher is not None:
            self.compatible_watcher.maps_queries_ = True

    def on_added(self, db: Datalayer) -> list[Job]:
        """Build the index from the stored vectors once the watcher's backfill is done."""
        watcher = self.indexing_watcher
        # a precomputed watcher computes nothing: it never has jobs to wait for
        waiting_for = [] if watcher.precomputed else [job.id for job in db.unfinished_jobs(watcher.unique_id)]
        args = {'index': [self.identifier, self.version]}
        jobs = [db.new_job('vector_build', args, component=self.unique_id, dependencies=waiting_for)]
        if self.neighbours:
            jobs.append(
                db.new_job(
                    'vector_neighbours',
                    {**args, 'ids': None},
                    component=self.unique_id,
                    dependencies=[jobs[0].id],
                )
            )
        self.jobs_ = db.submit_jobs(jobs)
        return self.jobs_
