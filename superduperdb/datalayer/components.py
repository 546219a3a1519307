"""The component registry of a Datalayer: storing, loading, showing and removing components.

A component is stored as its config and its artifacts (pickled, in the artifact store, keyed
by their hash) under a new version, unless it equals its latest version; loaded components
are cached and shared (versions never change). The Datalayer's ``add``, ``load``, ``show`` and
``remove`` are this registry's methods, with what the Datalayer itself caches (watchers,
vector indexes, encoders) forgotten around them.

>>> from superduperdb import superduper
>>> db = superduper('sqlite:///:memory:')
>>> db.show('modle')
Traceback (most recent call last):
...
superduperdb.base.exceptions.QueryError: There is no component type 'modle'. ...
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from superduperdb.base.exceptions import ComponentError, ComponentInUse, QueryError
from superduperdb.base.quiet import quiet
from superduperdb.components.component import Component

if TYPE_CHECKING:
    from superduperdb.datalayer.datalayer import Datalayer

logger = logging.getLogger(__name__)
C = TypeVar('C', bound=Component)


class ComponentRegistry:
    """The components of ``db``: written to its metadata and artifact stores, and the loaded
    ones cached (``loaded``: unique id -> component)."""

    def __init__(self, db: Datalayer) -> None:
        self.db = db
        self.loaded: dict[str, Component] = {}

    def store(self, component: C) -> C:
        """Store ``component`` (its children first, through ``db.add``) as a new version,
        unless it equals its latest version (then it takes that version)."""
        db = self.db
        if not isinstance(component, Component):
            raise QueryError(
                f'db.add() takes a component (Encoder, Model, Watcher, ...), got {type(component).__name__}.'
            )
        for child in component.child_components():
            db.add(child)
        config, artifacts = component.to_config()
        with quiet():  # the libraries saving a model draw bars of their own ("Writing model shards")
            keys = {name: db.artifact_store.put(_pickle(value)) for name, value in artifacts.items()}
        digest = hashlib.sha256(json.dumps([config, keys], sort_keys=True).encode()).hexdigest()
        dependencies = [child.unique_id for child in component.child_components()]
        type_id, identifier = component.type_id, component.identifier
        for _attempt in range(5):
            versions = db.metadata.versions(type_id, identifier)
            if versions:
                latest = db.metadata.get_component(type_id, identifier, versions[-1])
                if latest['hash'] == digest:
                    self._set_version(component, versions[-1])
                    return component
            version = versions[-1] + 1 if versions else 0
            try:
                db.metadata.add_component(
                    type_id,
                    identifier,
                    version,
                    config=config,
                    artifacts=keys,
                    dependencies=dependencies,
                    hash=digest,
                )
            except Exception:  # a concurrent add took this version: look again
                logger.debug('version %s of %s/%s taken; retrying', version, type_id, identifier)
                continue
            self._set_version(component, version)
            self.loaded[component.unique_id] = component
            logger.info('added %s', component.unique_id)
            return component
        raise QueryError(f'Could not add {type_id} {identifier!r}: version conflicts persisted.')

    def _set_version(self, component: Component, version: int) -> None:
        if component.version != version and self.loaded.get(component.unique_id) is component:
            del self.loaded[component.unique_id]  # cached as the version it was: now another
        component.version = version

    def load(
        self, type_id: str, identifier: str, version: int | None = None, *, cached: bool = True
    ) -> Component:
        """Load a component (its latest version unless ``version`` is given).

        Loaded components are cached and shared; ``cached=False`` builds a private copy (for
        a caller that changes it in place, such as a fit, while others may use the shared one).
        """
        db = self.db
        if cached and version is not None and f'{type_id}/{identifier}/{version}' in self.loaded:
            return self.loaded[f'{type_id}/{identifier}/{version}']  # versions never change
        record = db.metadata.get_component(type_id, identifier, version)
        uid = f'{type_id}/{identifier}/{record["version"]}'
        if cached and uid in self.loaded:
            return self.loaded[uid]
        keys = record['artifacts']

        def load_artifact(name: str) -> Any:
            try:
                # checked against its key first: swapped or cut-short bytes are never unpickled
                return _unpickle(db.artifact_store.get(keys[name], component=uid))
            except (ImportError, AttributeError) as exc:  # pickled by reference to missing code
                raise ComponentError(
                    f'Cannot load {type_id} {identifier!r} v{record["version"]} in this process: its '
                    f'{name!r} needs {type(exc).__name__}: {exc}. Install or put on the path the code '
                    f'that defines it, in every process that runs its jobs (workers, change capture).'
                ) from exc

        with quiet():  # "Loading weights" and the like
            component = Component.from_config(
                record['config'],
                load_artifact=load_artifact,
                load_component=db.load,
                version=record['version'],
            )
        if cached:
            self.loaded[uid] = component
        return component

    def show(self, type_id: str | None = None, identifier: str | None = None) -> Any:
        """What is registered (see :meth:`Datalayer.show`)."""
        db = self.db
        if type_id == 'job':
            return db.jobs() if identifier is None else db.job(identifier)
        if type_id is None:
            shown: dict[str, set[str]] = {}
            for record in db.metadata.all_components():
                shown.setdefault(record['type_id'], set()).add(record['identifier'])
            return {t: sorted(ids) for t, ids in sorted(shown.items())}
        if identifier is None:
            identifiers = db.metadata.identifiers(type_id)
            if not identifiers:
                _check_type_id(type_id)  # db.show('modle'): a typo, not an empty list
            return identifiers
        versions = db.metadata.versions(type_id, identifier)
        if not versions:
            _check_type_id(type_id)
            db.metadata.get_component(type_id, identifier)  # raises a helpful error
        return versions

    def remove(
        self,
        type_id: str,
        identifier: str,
        version: int | None,
        *,
        force: bool,
        forget: Callable[[], None],
    ) -> None:
        """Remove a component version (all versions if None), refused unless ``force`` while
        another depends on it (see :meth:`Datalayer.remove`). ``forget``: called once the
        versions are gone from the metadata store, before their artifacts go, to forget what
        the Datalayer cached of them."""
        metadata = self.db.metadata
        versions = [version] if version is not None else metadata.versions(type_id, identifier)
        for v in versions:
            metadata.get_component(type_id, identifier, v)  # raises if missing
        if not versions:
            metadata.get_component(type_id, identifier)
        doomed = {f'{type_id}/{identifier}/{v}' for v in versions}
        records = metadata.all_components()
        dependents = sorted(
            r['_id'] for r in records if r['_id'] not in doomed and doomed & set(r['dependencies'])
        )
        if type_id == 'encoder' and version is None:
            dependents += [f'column {c}' for c in metadata.columns_using(identifier)]
        if dependents and not force:
            raise ComponentInUse(
                f'Cannot remove {type_id} {identifier!r}: {", ".join(dependents)} depend(s) on it. '
                'Remove those first, or pass force=True.',
                dependents=dependents,
            )
        for v in versions:
            metadata.delete_component(type_id, identifier, v)
            self.loaded.pop(f'{type_id}/{identifier}/{v}', None)
        forget()
        still_used = {key for r in records if r['_id'] not in doomed for key in r['artifacts'].values()}
        for r in records:
            if r['_id'] in doomed:
                for key in r['artifacts'].values():
                    if key not in still_used:
                        self.db.artifact_store.delete(key)


def _check_type_id(type_id: str) -> None:
    """Refuse a component type no class declares (``db.show('modle')``), naming the close ones."""
    from superduperdb.store.names import suggest

    known = _known_type_ids()
    if type_id not in known:
        raise QueryError(
            f'There is no component type {type_id!r}.{suggest(type_id, known)} Types: '
            f'{", ".join(sorted(known))}.'
        )


def _known_type_ids() -> set[str]:
    """``type_id`` of superduperdb's components, of every Component class defined (the user's
    own), and 'job'. The built-in ones are named here: their modules may not be imported yet."""
    known = {'job', 'encoder', 'metric', 'model', 'vector_index', 'keyword_index', 'watcher'}
    pending: list[type[Component]] = [Component]
    while pending:
        cls = pending.pop()
        known.add(cls.type_id)
        pending.extend(cls.__subclasses__())
    known.discard('component')
    return known


def _pickle(value: Any) -> bytes:
    import cloudpickle

    return cloudpickle.dumps(value)


def _unpickle(data: bytes) -> Any:
    import pickle

    return pickle.loads(data)
