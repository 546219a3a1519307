"""What a database holds, at a glance: its backend, its tables and their sizes, the
components by type with their versions, and which component uses which.

Read from the metadata records only: no model is loaded, no artifact read. The server's
``GET /overview`` and the dashboard's first page show it.

>>> from superduperdb import superduper, Collection, Watcher
>>> db = superduper('sqlite:///:memory:')
>>> _ = db.execute(Collection('t').insert_many([{'x': 1}, {'x': 2}]))
>>> same = superduper(lambda x: x, identifier='same')
>>> _ = db.add(Watcher(model=same, key='x', select=Collection('t').find()))
>>> found = overview(db)
>>> found['tables'], found['components']['model']
([{'name': 't', 'rows': 2}], {'same': [0]})
>>> found['dependencies']
[{'from': ['watcher', 'same@t.x', 0], 'to': ['model', 'same', 0]}]
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from superduperdb.base.masking import mask_secrets
from superduperdb.store.chunks import chunker_of
from superduperdb.store.metadata import SERVING

if TYPE_CHECKING:
    from superduperdb.datalayer.datalayer import Datalayer


def user_tables(db: Datalayer) -> list[str]:
    """The user's tables (superduperdb's own, ``_superduper*``, left out), sorted."""
    return sorted(t for t in db.databackend.list_tables() if not t.startswith('_superduper'))


def overview(db: Datalayer) -> dict[str, Any]:
    """``backend`` (a one-line description), ``dialect``, ``tables`` (name, rows, and for a
    chunk table ``chunks_of``: see :func:`chunker_of`),
    ``components`` ({type_id: {identifier: [versions]}}) and ``dependencies`` (one
    ``{'from': [type_id, identifier, version], 'to': [...]}`` per reference in the latest
    versions' configs)."""
    records = db.metadata.all_components()  # one query for every component
    versions: dict[str, dict[str, list[int]]] = {}
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for record in records:
        type_id, identifier = record['type_id'], record['identifier']
        versions.setdefault(type_id, {}).setdefault(identifier, []).append(record['version'])
        seen = latest.get((type_id, identifier))
        if seen is None or record['version'] > seen['version']:
            latest[(type_id, identifier)] = record
    components = {t: {i: sorted(v) for i, v in sorted(ids.items())} for t, ids in sorted(versions.items())}
    watchers = [r for (type_id, _), r in latest.items() if type_id == 'watcher']
    tables: list[dict[str, Any]] = []
    for name in user_tables(db):
        table: dict[str, Any] = {'name': name, 'rows': db.databackend.count(name, {})}
        if name.endswith('__chunks') and (chunks_of := chunker_of(db, name, watchers)) is not None:
            table['chunks_of'] = chunks_of
        tables.append(table)
    dependencies: list[dict[str, Any]] = []
    for (type_id, identifier), record in latest.items():
        source = [type_id, identifier, record['version']]
        for ref in _references(record['config'].get('params', {})):
            dependencies.append({'from': source, 'to': ref})
    dependencies.sort(key=lambda d: (d['from'], d['to']))
    return {
        # shown to every token holder, the read-only one too: never a password or a key
        'backend': mask_secrets(db.databackend.describe()),
        'artifacts': mask_secrets(db.artifact_store.describe()),
        'tables': tables,
        'components': components,
        'dependencies': dependencies,
        'indexes': vector_indexes(db),
    }


def vector_indexes(db: Datalayer) -> list[dict[str, Any]]:
    """Each vector index's ``identifier``, ``table`` and the ``keys`` a ``like()`` may
    search with: ``{'key': ..., 'encoder': ...}`` (the encoder of that column, e.g.
    ``pil_image`` for an image index; None for plain text and numbers). An index of a chunk
    table (:mod:`superduperdb.store.chunks`) also has ``chunks_of`` (see :func:`chunker_of`).

    Which version answers queries: ``versions`` (every version kept), ``serving`` (the one
    that serves: the pinned one when versions were staged, else the newest whose build
    succeeded, as :meth:`VectorIndexes.get` picks it) and ``staged``: for each version newer
    than the serving one, its build from the job records (see :func:`build_progress`)."""
    latest_watchers = db.metadata.latest('watcher')
    watchers = {(r['identifier'], r['version']): r for r in latest_watchers}
    found = []
    for record in db.metadata.latest('vector_index'):
        params = record['config']['params']
        keys, table = [], None
        for name in ('indexing_watcher', 'compatible_watcher'):
            ref = (params.get(name) or {}).get('_component')
            if not ref:
                continue
            watcher = watchers.get((ref[1], ref[2])) or db.metadata.get_component('watcher', ref[1], ref[2])
            w_params = watcher['config']['params']
            w_table = w_params['select']['_query']['table']
            table = table or w_table
            key = w_params['key'] if isinstance(w_params['key'], str) else ','.join(w_params['key'])
            encoder = db.encoders_of(w_table).get(key) if db.databackend.has_table(w_table) else None
            keys.append({'key': key, 'encoder': None if encoder is None else encoder.identifier})
        entry: dict[str, Any] = {'identifier': record['identifier'], 'table': table, 'keys': keys}
        entry.update(serving_versions(db, record['identifier']))
        if table is not None:
            chunks_of = chunker_of(db, table, latest_watchers)
            if chunks_of is not None:
                entry['chunks_of'] = chunks_of
        found.append(entry)
    return found


def serving_versions(db: Datalayer, identifier: str) -> dict[str, Any]:
    """``{'versions', 'serving', 'staged'}`` of vector index ``identifier``, from the records
    (no index is loaded): see :func:`vector_indexes`."""
    versions = db.metadata.versions('vector_index', identifier)
    pin = _pinned(db, identifier)
    serving: int | None
    if pin is not None and pin in versions:
        serving = pin
    else:  # the newest built (the newest at all while none is: what VectorIndexes.get serves)
        built = [
            v for v in versions if _jobs(db, f'vector_index/{identifier}/{v}', 'vector_build', 'success')
        ]
        serving = built[-1] if built else (versions[-1] if versions else None)
    staged = [build_progress(db, identifier, v) for v in versions if serving is not None and v > serving]
    return {'versions': versions, 'serving': serving, 'staged': staged}


def _pinned(db: Datalayer, identifier: str) -> int | None:
    """The version pinned to serve (the record ``superduperdb.vector_search.staging`` writes);
    None when nothing was staged."""
    raw = db.metadata.position(f'{SERVING}{identifier}') if db.metadata.present() else None
    return None if raw is None else int(json.loads(raw)['serving'])


def build_progress(db: Datalayer, identifier: str, version: int) -> dict[str, Any]:
    """How far the build of version ``version`` of vector index ``identifier`` is, from its job
    records: ``state`` ('building', 'built' or 'failed'), ``done``/``total`` rows of its
    watcher's backfill (``total`` None while not known), and ``jobs``: ``{'id', 'method',
    'component', 'status', 'done', 'total'}`` of the watcher's jobs and the index's build."""
    record = db.metadata.get_component('vector_index', identifier, version)
    ref = (record['config']['params'].get('indexing_watcher') or {}).get('_component')
    jobs: list[dict[str, Any]] = []
    if ref:
        jobs += _jobs(db, f'watcher/{ref[1]}/{ref[2]}')
    jobs += _jobs(db, f'vector_index/{identifier}/{version}', 'vector_build')
    rows = [j for j in jobs if j['method'] != 'vector_build']
    totals = [j['total'] for j in rows]
    done = sum(int(j['done'] or 0) for j in rows)
    total = None if not rows or any(t is None for t in totals) else sum(int(t) for t in totals)
    if any(j['status'] == 'failed' for j in jobs):
        state = 'failed'
    elif any(j['method'] == 'vector_build' and j['status'] == 'success' for j in jobs):
        state = 'built'
    else:
        state = 'building'
    shown = [{k: j.get(k) for k in ('id', 'method', 'component', 'status', 'done', 'total')} for j in jobs]
    return {'version': version, 'state': state, 'done': done, 'total': total, 'jobs': shown}


def _jobs(
    db: Datalayer, component: str, method: str | None = None, status: str | None = None
) -> list[dict[str, Any]]:
    """The job records of ``component`` (oldest first), of ``method`` and ``status`` if given."""
    where: dict[str, Any] = {'component': component}
    if method:
        where['method'] = method
    if status:
        where['status'] = status
    found = db.metadata.jobs(where, limit=1 if status else 1000)
    return [{**j, 'id': j.get('_id', j.get('id'))} for j in reversed(found)]


def _references(value: Any) -> list[list[Any]]:
    """The ``{'_component': [type_id, identifier, version]}`` references inside a config."""
    if isinstance(value, dict):
        ref = value.get('_component')
        if isinstance(ref, list) and len(ref) == 3 and len(value) == 1:
            return [list(ref)]
        return [r for v in value.values() for r in _references(v)]
    if isinstance(value, list):
        return [r for v in value for r in _references(v)]
    return []
