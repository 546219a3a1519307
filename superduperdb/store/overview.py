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

from typing import TYPE_CHECKING, Any

from superduperdb.base.masking import mask_secrets

if TYPE_CHECKING:
    from superduperdb.datalayer.datalayer import Datalayer


def user_tables(db: Datalayer) -> list[str]:
    """The user's tables (superduperdb's own, ``_superduper*``, left out), sorted."""
    return sorted(t for t in db.databackend.list_tables() if not t.startswith('_superduper'))


def overview(db: Datalayer) -> dict[str, Any]:
    """``backend`` (a one-line description), ``dialect``, ``tables`` (name, rows),
    ``components`` ({type_id: {identifier: [versions]}}) and ``dependencies`` (one
    ``{'from': [type_id, identifier, version], 'to': [...]}`` per reference in the latest
    versions' configs)."""
    tables = [{'name': t, 'rows': db.databackend.count(t, {})} for t in user_tables(db)]
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
    ``pil_image`` for an image index; None for plain text and numbers)."""
    watchers = {(r['identifier'], r['version']): r for r in db.metadata.latest('watcher')}
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
        found.append({'identifier': record['identifier'], 'table': table, 'keys': keys})
    return found


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
