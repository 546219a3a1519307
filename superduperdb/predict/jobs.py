"""The bodies of the predict and fit jobs (registered by name: :data:`superduperdb.jobs.job.BUILT_IN`).

Each task reads everything it needs from the job's JSON arguments and the
database (models are loaded from the metadata and artifact stores), so it runs
the same in the calling process and on a cluster worker.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from superduperdb.jobs.job import Job, job_log, report_progress, task
from superduperdb.predict.over_query import fit_over_query, predict_over_query
from superduperdb.predict.usage import add_usage
from superduperdb.query.objects import query_from_dict

if TYPE_CHECKING:
    from superduperdb.components.model import Model
    from superduperdb.datalayer.datalayer import Datalayer


def _model(db: Datalayer, args: dict[str, Any]) -> Model:
    """The model a job's ``model`` argument ([type_id, identifier, version]) names."""
    from superduperdb.components.model import Model

    type_id, identifier, version = args['model']
    model = db.load(type_id, identifier, version)
    assert isinstance(model, Model)
    return model


def _key(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


@task('predict')
def predict(db: Datalayer, job: Job) -> dict[str, Any]:
    """Args: ``model`` [type_id, identifier, version], ``key``, ``select`` (a serialized find),
    ``features``, ``overwrite``."""
    args = job.args
    model = _model(db, args)
    on_usage = None
    if args.get('watcher') and model.shares_budget:  # the watcher's usage, for status and the dashboard
        from superduperdb.store.usage import add_usage as record_usage

        limits = model.rate_limits()

        def on_usage(usage: dict[str, Any]) -> None:
            record_usage(db.metadata, args['watcher'], usage, limits)

    report = predict_over_query(
        db,
        model,
        key=_key(args['key']),
        select=query_from_dict(args['select']),
        features=args.get('features') or {},
        overwrite=bool(args.get('overwrite')),
        backoff=bool(args.get('backoff')),
        progress=report_progress(db, job),
        on_usage=on_usage,
        stored=True,  # _model loaded it from the metadata store
    )
    job_log('%s', report)
    if report.computed and args.get('verify_indexes'):
        _ask_indexes_to_verify(db, query_from_dict(args['select']).table, job.component)
    return {k: v for k, v in dataclasses.asdict(report).items() if k != 'errors'}


def _ask_indexes_to_verify(db: Datalayer, table: str, watcher: str | None) -> None:
    """Outputs written without update jobs (the reconcile's repairs): every process checks
    its engines of the watcher's vector indexes against them before its next search."""
    from superduperdb.vector_search.journal import VERIFY, append_to_journal

    name = (watcher or '').split('/')[1:2]
    for ref in db.vectors.refs_on(table):
        if ref.watcher in name:
            append_to_journal(db, ref.identifier, VERIFY)
            job_log('vector index %s: outputs repaired, engines will be checked', ref.identifier)
    for kw in db.keywords.refs_on(table):
        if kw.watcher in name and kw.engine == 'bm25':
            append_to_journal(db, kw.identifier, VERIFY, kind='keyword_index')
            job_log('keyword index %s: texts repaired, engines will be checked', kw.identifier)


@task('predict_parts')
def predict_parts(db: Datalayer, job: Job) -> dict[str, Any]:
    """Args: ``jobs``, the ids of a backfill's partition jobs (its dependencies, all done by now).
    The sum of their reports, and the worker each ran on."""
    total: dict[str, Any] = {'partitions': len(job.args['jobs']), 'workers': []}
    for job_id in job.args['jobs']:
        part = db.job(job_id)
        for name, value in (part.result or {}).items():
            if isinstance(value, int) and not isinstance(value, bool):
                total[name] = total.get(name, 0) + value
            elif name == 'usage' and isinstance(value, dict):
                total['usage'] = add_usage(total.get('usage'), value)
        total['workers'].append(part.worker)
    job_log('%d partitions: %s', total['partitions'], {k: v for k, v in total.items() if k != 'workers'})
    return total


@task('fit')
def fit(db: Datalayer, job: Job) -> dict[str, Any]:
    """Args: ``model`` [type_id, identifier, version], ``X``, ``y``, ``select``, ``kwargs``."""
    args = job.args
    model = _model(db, args)
    trained = fit_over_query(
        db,
        model,
        X=_key(args['X']),
        y=args.get('y'),
        select=query_from_dict(args['select']),
        **(args.get('kwargs') or {}),
    )
    job_log('trained %s -> version %s', model.identifier, trained.version)
    return {'version': trained.version, 'metrics': trained.metrics}
