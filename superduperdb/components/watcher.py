"""Watchers: keep a model's outputs fresh over a query as rows arrive and change.

``db.add(Watcher(model=m, key='x', select=coll.find()))`` backfills every row
the query selects, as a job, then computes outputs for rows inserted or
updated through ``db.execute`` (and, with change capture running, through any
other application). Deleted rows lose their outputs. A watcher whose
``features`` read another watcher's outputs runs after it.

>>> from superduperdb import superduper, Collection, Watcher
>>> db = superduper('sqlite:///:memory:')
>>> double = superduper(lambda x: 2 * x, identifier='double')
>>> _ = db.execute(Collection('nums').insert_many([{'x': 1}, {'x': 2}]))
>>> w = db.add(Watcher(model=double, key='x', select=Collection('nums').find()))
>>> w.identifier, w.jobs_[0].status
('double@nums.x', 'success')
>>> result = db.execute(Collection('nums').insert_one({'x': 20}))
>>> db.execute(Collection('nums').find_one({'x': 20}))['_outputs']['x']['double']
40
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from superduperdb.base.exceptions import ComponentError, EncodingError, QueryError
from superduperdb.components.component import Component
from superduperdb.components.model import Model

if TYPE_CHECKING:
    from superduperdb.datalayer.datalayer import Datalayer
    from superduperdb.jobs.job import Job
    from superduperdb.query.objects import Find


_ODD = 100  # rows of another byte length checked one by one; more: every row is read


@dataclass(kw_only=True)
class Watcher(Component):
    """Outputs of ``model`` on ``key`` for every row of ``select``, kept up to date.

    ``identifier`` defaults to ``'<model>@<table>.<key>'``. ``active=False``
    keeps the record but stops reacting to writes.
    """

    type_id: ClassVar[str] = 'watcher'

    identifier: str = ''
    model: Model
    key: Any
    select: Find
    features: dict[str, str] = field(default_factory=dict)
    active: bool = True
    #: the jobs the last ``db.add`` of this watcher started (its backfill)
    jobs_: list[Job] = field(default_factory=list, repr=False, compare=False)
    #: set by a VectorIndex whose compatible watcher this is: its key names queries, not columns
    maps_queries_: bool = field(default=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        from superduperdb.query.objects import Find, FindOne

        if not isinstance(self.model, Model):
            raise ComponentError(
                'Watcher model= takes a Model (wrap yours with superduper(...)), '
                f'got {type(self.model).__name__}.'
            )
        if not isinstance(self.select, Find) or isinstance(self.select, FindOne):
            raise ComponentError(
                f'Watcher select= takes a find query such as Collection("docs").find(), got {self.select!r}.'
            )
        from superduperdb.query.filters import is_internal

        if is_internal(self.select.table):
            raise ComponentError(
                f"A watcher cannot follow {self.select.table!r}: it is one of superduperdb's own tables."
            )
        if self.select.limit_n is not None or self.select.skip_n:
            raise ComponentError(
                'A watcher follows every row its query selects: remove .limit()/.skip() from select= '
                '(filter with find({...}) instead).'
            )
        if isinstance(self.key, list):
            self.key = tuple(self.key)
        if not self.identifier:
            key = self.key if isinstance(self.key, str) else ','.join(self.key)
            self.identifier = f'{self.model.identifier}@{self.select.table}.{key}'

    @property
    def table(self) -> str:
        return self.select.table

    def upstream(self, others: list[Watcher]) -> list[Watcher]:
        """The watchers among ``others`` whose outputs this one reads through ``features``."""
        wanted = set(self.features.items())
        return [
            w
            for w in others
            if w is not self and isinstance(w.key, str) and (w.key, w.model.identifier) in wanted
        ]

    def predict_args(self, select: Find, *, overwrite: bool = False) -> dict[str, Any]:
        """The arguments of a ``predict`` job of this watcher over ``select``."""
        return {
            'model': [self.model.type_id, self.model.identifier, self.model.version],
            'key': list(self.key) if isinstance(self.key, tuple) else self.key,
            'select': select.to_dict(),
            'features': self.features,
            'overwrite': overwrite,
            'watcher': self.identifier,
        }

    def reads(self) -> frozenset[str] | None:
        """The top-level fields of a row that this watcher's outputs depend on: its key(s), its
        features' inputs and the fields its ``select`` filters on. None: the whole row (key
        ``'_base'``, a key that names queries). An update that changes none of them leaves the
        watcher's outputs as they are (:func:`superduperdb.freshness.triggers.trigger_jobs`)."""
        from superduperdb.query.filters import filter_fields

        keys = self.key if isinstance(self.key, tuple) else (self.key,)
        if self.maps_queries_ or not all(isinstance(k, str) and k != '_base' for k in keys):
            return None
        fields = {k.split('.')[0] for k in (*keys, *self.features)}
        return frozenset(fields | filter_fields(self.select.filter))

    @property
    def precomputed(self) -> bool:
        """True when the model only declares vectors the table already holds (nothing to compute)."""
        return not self.model.computes

    def before_add(self, db: Datalayer) -> None:
        """Refuse a key no row has (a typo) before anything is stored; precomputed vectors:
        check every stored one has the declared dimensions. A model whose backfill runs in this
        process starts preparing its runner (:meth:`Model.prepare`) while it is stored."""
        keys = self.key if isinstance(self.key, tuple) else (self.key,)
        named = all(isinstance(k, str) for k in keys) and not self.maps_queries_
        inputs = [k for k in keys if k not in self.features] if named else []
        db.check_keys(self.select, inputs, what='key', missing_table_ok=True)  # a table may come later
        if self.model.computes and db.databackend.has_table(self.table):
            db.check_cost(self.model, key=self.key, select=self.select, features=self.features)
            if db.executor.name == 'local':  # the backfill runs here, once the model is stored
                self.model.prepare()
        if not self.precomputed or not isinstance(self.key, str):
            return
        width = db.databackend.vector_width(self.table, self.key)
        if width is not None and width == getattr(self.model, 'dimensions', None):
            return  # a fixed-size array column (a lake's FLOAT[384]): its type says every row's size
        pk = db.databackend.primary_key(self.table)
        check = self.model.vector  # type: ignore[attr-defined]
        select = self.select
        odd = self._odd_rows(db)
        if odd is not None:  # the database measured every row: read only those of another length
            if not odd:
                return
            select = select.restrict(pk, odd)
        try:
            for docs in db.read(select.to_projection({self.key: 1}), attach=False).chunks():
                for doc in docs:
                    if doc.get(self.key) is not None:
                        check(doc[self.key], where=f'Row {doc[pk]!r} of {self.table!r}: {self.key!r}')
        except EncodingError as exc:  # bytes its encoder cannot read: name the rows it may be
            rows = (
                f'Row {odd[0]!r}' if odd and len(odd) == 1 else f'One of rows {odd[:5]!r}' if odd else 'A row'
            )
            raise QueryError(f'{rows} of {self.table!r}: {self.key!r}: {exc}') from exc

    def _odd_rows(self, db: Datalayer) -> list[Any] | None:
        """Precomputed vectors in a column of fixed-shape arrays of the declared dimensions: the
        keys of rows stored with another byte length (references, foreign writes), which need a
        closer look; None when that cannot be told without reading every row."""
        assert isinstance(self.key, str)
        encoder = db.encoders_of(self.table).get(self.key)
        if encoder is None or '.' in self.key:
            return None
        width = encoder.fixed_width()
        if not width or list(encoder.shape) != [self.model.dimensions]:  # type: ignore[attr-defined]
            return None
        if self.select.limit_n is not None or self.select.skip_n:
            return None
        odd = db.databackend.keys_of_other_width(self.table, self.key, width, self.select.filter, limit=_ODD)
        return None if odd is None or len(odd) >= _ODD else odd  # many: read them all

    def on_added(self, db: Datalayer) -> list[Job]:
        """Backfill: compute the outputs of every selected row, as a job."""
        if self.precomputed:
            self.jobs_ = []
            return []
        upstream = self.upstream(db.watchers_on(self.table)) if self.features else []
        waiting_for = [job.id for w in upstream for job in db.unfinished_jobs(w.unique_id)]
        parts = db.partitions(self.select)
        jobs = [
            db.new_job('predict', self.predict_args(part), component=self.unique_id, dependencies=waiting_for)
            for part in parts
        ]
        if len(jobs) > 1:  # one handle for the whole backfill: done when every partition is
            ids = [job.id for job in jobs]
            jobs.append(
                db.new_job('predict_parts', {'jobs': ids}, component=self.unique_id, dependencies=ids)
            )
        self.jobs_ = db.submit_jobs(jobs)
        return self.jobs_

    @property
    def backfill_(self) -> Job | None:
        """The job that says when the backfill is done (the last one: with partitions, it waits for all)."""
        return self.jobs_[-1] if self.jobs_ else None


def in_dependency_order(watchers: list[Watcher]) -> list[Watcher]:
    """Watchers sorted so that each comes after the ones whose outputs it reads."""
    ordered: list[Watcher] = []
    placing: set[str] = set()

    def place(w: Watcher) -> None:
        if w.identifier in placing:
            return  # placed, or a cycle (features reading each other): keep the given order
        placing.add(w.identifier)
        for upstream in w.upstream(watchers):
            place(upstream)
        ordered.append(w)

    for w in watchers:
        place(w)
    return ordered
