"""What a predict over a query (a watcher's backfill) would cost, before it runs.

``db.estimate(watcher)`` reads the selected rows' inputs as predict does (nothing is decoded
or sent), compares their fingerprints with the outputs stored, and counts the rows to compute
and those current already; for a model that calls an API (``shares_budget``: an
:class:`~superduperdb.models.openai.OpenAIModel`) it counts their tokens with the model's
tokenizer, the requests its batching makes, the cost at ``CFG.openai.prices`` and the time at
its rate limits.

A backfill whose estimated cost is above ``CFG.openai.confirm_cost_above`` is refused
(:class:`~superduperdb.base.exceptions.CostNotConfirmed`) until it is confirmed:
``db.estimate(watcher, confirm=True)`` records the confirmed amount in the metadata store,
where every process (a Dask worker, the server) finds it.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from superduperdb.base.exceptions import CostNotConfirmed

if TYPE_CHECKING:
    from superduperdb.components.model import Model
    from superduperdb.datalayer.datalayer import Datalayer
    from superduperdb.query.objects import Find

_CONFIRMED = '_superduper_confirmed_cost:'
#: a confirmed amount covers estimates up to this much more (rows added since)
_SLACK = 1.05


@dataclass
class Estimate:
    """Rows, tokens, requests, cost (USD; None without a price) and seconds at the rate limit
    (None without one) of predicting ``model`` on ``key`` over the rows of ``table``."""

    model: str
    table: str
    key: str
    rows: int = 0
    to_compute: int = 0
    current: int = 0
    tokens: int = 0
    requests: int = 0
    cost: float | None = None
    seconds: float | None = None
    tokenizer: str = 'none'

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        cost = 'no price set (openai.prices)' if self.cost is None else f'${self.cost:.4f}'
        when = 'no rate limit set' if self.seconds is None else f'{self.seconds:.1f} s at the rate limit'
        return (
            f'{self.model} on {self.table}.{self.key}: {self.to_compute} rows to compute, '
            f'{self.current} current (of {self.rows}); {self.tokens} tokens ({self.tokenizer}) in '
            f'{self.requests} requests; {cost}; {when}'
        )


def estimate(
    db: Datalayer, model: Model, *, key: Any, select: Find, features: dict[str, str] | None = None
) -> Estimate:
    """The :class:`Estimate` of ``model.predict(X=key, db=db, select=select)``."""
    from superduperdb.predict.readers import check_key, key_name, reader
    from superduperdb.store.outputs import output_table

    key = check_key(key)
    features = features or {}
    table = select.table
    out = output_table(table, key_name(key), model.identifier)
    version = model.version
    if version is None and model.identifier in db.metadata.identifiers(model.type_id):
        version = max(db.metadata.versions(model.type_id, model.identifier))
    has_outputs = version is not None and db.databackend.has_table(out)
    result = Estimate(model.identifier, table, key_name(key), tokenizer=_tokenizer_name(model))
    pk = db.databackend.primary_key(table)
    api = model.shares_budget
    size = db.chunk_size
    for ids, prints, inputs_of in reader(db, select, key, features, pk, size)(select):
        stored = db.outputs.fingerprints(out, ids) if has_outputs else {}
        todo = [i for i, (id_, fp) in enumerate(zip(ids, prints)) if stored.get(id_) != (version, fp)]
        result.rows += len(ids)
        result.to_compute += len(todo)
        if api and todo:
            inputs = list(inputs_of(todo))
            step = max(1, model.batch_size)
            for lo in range(0, len(inputs), step):
                tokens, requests = model.tokens_and_requests(inputs[lo : lo + step])
                result.tokens += tokens
                result.requests += requests
    result.current = result.rows - result.to_compute
    if api:
        result.cost = model.cost_of(result.tokens)
        result.seconds = model.seconds_at_limit(result.requests, result.tokens)
    return result


def estimate_for(
    db: Datalayer, what: Any, *, key: Any, select: Find | None, features: Any, confirm: bool
) -> Estimate:
    """``db.estimate``: of a watcher, a watcher's identifier, or a model on ``key`` over ``select``."""
    from superduperdb.base.exceptions import QueryError
    from superduperdb.components.watcher import Watcher

    if isinstance(what, str):
        what = db.load('watcher', what)
    if isinstance(what, Watcher):
        key, select, features, what = what.key, what.select, what.features, what.model
    if key is None or select is None:
        raise QueryError('db.estimate(model, key=..., select=...) needs the key and the query of a model.')
    result = estimate(db, what, key=key, select=select, features=features)
    if confirm:
        _confirm(db, result)
    return result


def _tokenizer_name(model: Model) -> str:
    if not model.shares_budget:
        return 'none'
    return str(getattr(model, 'tokenizer', None) or 'estimate: 4 characters a token')


def _record(result: Estimate) -> str:
    return f'{_CONFIRMED}{result.model}:{result.table}:{result.key}'


def _confirm(db: Datalayer, result: Estimate) -> None:
    """Record that a backfill of up to ``result.cost`` is confirmed (every process sees it)."""
    db.metadata.install()
    db.metadata.set_position(_record(result), json.dumps({'cost': result.cost, 'rows': result.rows}))


def check_cost(db: Datalayer, model: Model, *, key: Any, select: Find, features: Any = None) -> None:
    """Refuse a backfill whose estimated cost is above ``openai.confirm_cost_above`` unless a
    confirmed amount covers it; nothing is read when the setting is unset."""
    from superduperdb.base.config import CFG

    limit = CFG.openai.confirm_cost_above
    if limit is None or not model.shares_budget:
        return
    result = estimate(db, model, key=key, select=select, features=features)
    if result.cost is None or result.cost <= limit:
        return
    stored = db.metadata.position(_record(result)) if db.metadata.present() else None
    confirmed = json.loads(stored).get('cost') if stored else None
    if confirmed is not None and result.cost <= float(confirmed) * _SLACK:
        return
    raise CostNotConfirmed(
        f'Predicting {result.model} on {result.table}.{result.key} would cost about ${result.cost:.2f} '
        f'({result.tokens} tokens over {result.to_compute} rows), above openai.confirm_cost_above '
        f'(${limit:.2f}). Confirm it with db.estimate(watcher, confirm=True) or `superduperdb estimate '
        f'{result.model}@{result.table}.{result.key} --confirm`, or raise the setting '
        '(SUPERDUPERDB_OPENAI__CONFIRM_COST_ABOVE).',
        cost=result.cost,
        limit=limit,
    )
