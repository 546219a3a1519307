"""The jobs of vector indexes: ``vector_build``, ``vector_update`` and ``vector_neighbours``.

Their bodies are registered by name (:func:`superduperdb.jobs.job.task`); ``jobs.job.BUILT_IN``
names this module, which is imported when a job of one of these methods is first made or run.
Each finished ``vector_update`` is appended to its index's journal (``AFTER_SUCCESS``), so that
other processes apply it before their next search (see :mod:`superduperdb.vector_search.journal`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from superduperdb.jobs.job import AFTER_SUCCESS, Job, job_log, report_progress, task
from superduperdb.vector_search.indexes import searched_in_database
from superduperdb.vector_search.journal import append_to_journal
from superduperdb.vector_search.keys import _key_type

if TYPE_CHECKING:
    from superduperdb.datalayer.datalayer import Datalayer


@task('vector_build')
def build(db: Datalayer, job: Job) -> dict[str, Any]:
    """Args: ``index`` [identifier, version]. (Re)build this process's engine from stored vectors."""
    identifier, version = job.args['index']
    index = db.load('vector_index', identifier, version)
    db.vectors.unload(identifier)
    if searched_in_database(db, index):  # type: ignore[arg-type]
        job_log('vector index %s: searched in the database, no engine built', identifier)
        return {'vectors': 0, 'in_database': True}
    state = db.vectors.loaded(index, progress=report_progress(db, job))  # type: ignore[arg-type]
    size = len(state.engine) if state.engine is not None else 0
    job_log('vector index %s: %d vectors', identifier, size)
    return {'vectors': size}


def _bump(db: Datalayer, job: Job) -> None:
    """After an update job is recorded as done: tell other processes to catch up."""
    append_to_journal(db, job.args['index'][0], job.id)


AFTER_SUCCESS.setdefault('vector_update', []).append(_bump)


@task('vector_update')
def update(db: Datalayer, job: Job) -> dict[str, Any]:
    """Args: ``index`` [identifier, version], ``ids``: rows whose vectors may have changed."""
    identifier, version = job.args['index']
    index = db.load('vector_index', identifier, version)
    if searched_in_database(db, index) and not db.vectors.holds(identifier):  # type: ignore[arg-type]
        return {'added': 0, 'deleted': 0}  # the database reads its outputs as they are
    progress = report_progress(db, job)
    added, deleted = db.vectors.sync(index, job.args['ids'], job_id=job.id, progress=progress)  # type: ignore[arg-type]
    return {'added': added, 'deleted': deleted}


NEIGHBOURS = '_neighbours'


@task('vector_neighbours')
def neighbours(db: Datalayer, job: Job) -> dict[str, Any]:
    """Args: ``index`` [identifier, version], ``ids`` (None: every row). Store each row's nearest rows.

    They are outputs like any other: ``doc['_outputs']['_neighbours'][index]`` is the list of
    the primary keys of the ``index.neighbours`` nearest rows, best first, the row itself left out.
    """
    from superduperdb.components.vector_index import VectorIndex

    identifier, version = job.args['index']
    index = db.load('vector_index', identifier, version)
    assert isinstance(index, VectorIndex)
    state = db.vectors.loaded(index)
    ids = job.args.get('ids')
    if state.engine is None:
        return {'rows': 0}
    backend = db.databackend
    pk = backend.primary_key(index.table)
    key_type = _key_type(backend, index.table, pk)
    out = db.outputs.register(index.table, NEIGHBOURS, identifier)
    done = 0
    for chunk_ids, vectors in db.vectors.stored_vectors(index, ids):
        rows = []
        for row_id, vector in zip(chunk_ids, vectors):
            with state.lock:
                found, _ = state.engine.search(vector, index.neighbours + 1)
            nearest = [key_type(i) for i in found if i != row_id][: index.neighbours]
            rows.append((key_type(row_id), nearest, index.version or 0, ''))
        db.outputs.write(index.table, NEIGHBOURS, identifier, out, rows)
        done += len(rows)
    return {'rows': done}


# ----- keyword indexes (superduperdb.vector_search.keywords) -------------------------------
@task('keyword_build')
def keyword_build(db: Datalayer, job: Job) -> dict[str, Any]:
    """Args: ``index`` [identifier, version]. Make the native full-text index over the texts,
    or build this process's BM25 engine from them."""
    identifier, version = job.args['index']
    index = db.load('keyword_index', identifier, version)
    result = db.keywords.build(index)  # type: ignore[arg-type]
    job_log('keyword index %s: %s', identifier, result)
    return result


def _bump_keywords(db: Datalayer, job: Job) -> None:
    """After a keyword update is recorded as done: other processes' BM25 engines catch up."""
    append_to_journal(db, job.args['index'][0], job.id, kind='keyword_index')


AFTER_SUCCESS.setdefault('keyword_update', []).append(_bump_keywords)


@task('keyword_update')
def keyword_update(db: Datalayer, job: Job) -> dict[str, Any]:
    """Args: ``index`` [identifier, version], ``ids``: rows whose texts may have changed (a BM25
    engine's; a native index follows its table by itself)."""
    identifier, version = job.args['index']
    index = db.load('keyword_index', identifier, version)
    added, deleted = db.keywords.sync(index, job.args['ids'], job_id=job.id)  # type: ignore[arg-type]
    return {'added': added, 'deleted': deleted}
