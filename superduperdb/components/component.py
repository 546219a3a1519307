"""The Component base class and its serialization.

A component follows the scikit-learn contract: constructor parameters are
typed dataclass fields, stored unchanged; nothing happens in ``__init__``;
state built later (weights loaded, handles opened) lives in fields whose
names end in ``_`` and is never serialized; declare those with
``field(default=None, repr=False)`` so reprs stay short. Artifact fields are
left out of reprs too: reprs never render weights or data.

Serialized, a component is ``{'cls': 'module:Class', 'params': {...}}``:
plain values stay as JSON, heavy values (fields declared with
:func:`artifact`) are pickled into the artifact store and referenced by hash,
and other components are referenced by ``(type_id, identifier, version)``.

>>> from dataclasses import dataclass
>>> @dataclass(kw_only=True)
... class Threshold(Component):
...     type_id = 'threshold'
...     value: float = 0.5
>>> Threshold('t', value=0.7).to_config()[0]['params']
{'identifier': 't', 'value': 0.7}
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import re
from collections.abc import Callable, Iterator
from dataclasses import KW_ONLY, dataclass
from typing import Any, ClassVar

from superduperdb.base.exceptions import ComponentError, ComponentNotAllowed, InvalidName

_ARTIFACT = 'superduperdb_artifact'
_QUERY_MODULE = 'superduperdb.query.objects'  # queries (a watcher's select) are stored as JSON


#: Every Component subclass defined in this process, by ``module:qualname`` (see resolve_class).
_REGISTRY: dict[str, type[Component]] = {}
_CLASS_PATH = re.compile(
    r'^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$'
)
#: Longest component identifier or type id.
MAX_IDENTIFIER = 255
_CONTROL = re.compile(r'[\x00-\x1f\x7f]')


def artifact(default: Any = None) -> Any:
    """Declare a dataclass field whose value is pickled into the artifact store."""
    return dataclasses.field(default=default, metadata={_ARTIFACT: True}, repr=False)


@dataclass
class Component:
    """Base of everything ``db.add`` can store: encoders, models, watchers, ..."""

    type_id: ClassVar[str] = 'component'

    identifier: str

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _REGISTRY[f'{cls.__module__}:{cls.__qualname__}'] = cls

    _: KW_ONLY
    version: int | None = None

    # ----- relationships -------------------------------------------------
    def child_components(self) -> Iterator[Component]:
        """Components referenced by this one's fields (added before it)."""
        for f in dataclasses.fields(self):
            if _is_state(f):
                continue
            yield from _components_in(getattr(self, f.name))

    def before_add(self, db: Any) -> None:
        """Checks to run before ``db.add`` stores anything; raise to refuse the component."""

    def check_from_request(self) -> None:
        """Checks for a component a server client sent (docs/security.md): raise
        :class:`~superduperdb.base.exceptions.ComponentNotAllowed` for settings only the
        operator may choose (where the server connects, with which credentials)."""

    def on_added(self, db: Any) -> list[Any]:
        """Work to start once ``db.add`` has stored this component; returns the jobs started."""
        return []

    @property
    def unique_id(self) -> str:
        return f'{self.type_id}/{self.identifier}/{self.version}'

    def artifact_names(self) -> list[str]:
        """The fields set to values that are stored pickled (what loading must unpickle)."""
        return [
            f.name
            for f in dataclasses.fields(self)
            if f.metadata.get(_ARTIFACT) and not _is_state(f) and getattr(self, f.name) is not None
        ]

    # ----- serialization -------------------------------------------------
    def to_config(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """``(config, artifacts)``: JSON-able config and the values to pickle.

        In the config each artifact is a placeholder ``{'_artifact': name}``.
        """
        params: dict[str, Any] = {}
        artifacts: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if _is_state(f) or f.name == 'version':
                continue
            value = getattr(self, f.name)
            if f.metadata.get(_ARTIFACT) and value is not None:
                artifacts[f.name] = value
                params[f.name] = {'_artifact': f.name}
            else:
                params[f.name] = _to_json(value, f'{type(self).__name__}.{f.name}')
        cls = type(self)
        return {'cls': f'{cls.__module__}:{cls.__qualname__}', 'params': params}, artifacts

    @classmethod
    def from_config(
        cls,
        config: dict[str, Any],
        *,
        load_artifact: Callable[[str], Any],
        load_component: Callable[[str, str, int], Component],
        version: int | None = None,
    ) -> Component:
        """Rebuild a component from :meth:`to_config` output."""
        target = resolve_class(config['cls'])
        params = {
            name: _from_json(value, name, load_artifact, load_component)
            for name, value in config['params'].items()
        }
        component = target(**params)
        component.version = version
        return component


def resolve_class(path: Any) -> type[Component]:
    """The Component class a stored config names (``'module:Class'``), if it is allowed.

    Allowed: superduperdb's own component classes, classes this process has defined or
    imported, and those the operator allows (``CFG.components.allowed_classes``, or the
    entry-point group ``superduperdb.components``). The check runs before anything is
    imported, and the name must be the class's own ``module:qualname``: a stored config can
    never reach a function (``os:system``) or an attribute of a module.

    >>> resolve_class('superduperdb.components.encoder:Encoder').__name__
    'Encoder'
    >>> resolve_class('os:system')
    Traceback (most recent call last):
    ...
    superduperdb.base.exceptions.ComponentNotAllowed: Component class 'os:system' is not allowed ...
    """
    if not isinstance(path, str) or not _CLASS_PATH.fullmatch(path):
        raise ComponentError(f'A component class is named "package.module:Class", got {path!r}.')
    found = _REGISTRY.get(path)
    if found is not None:
        return found
    module_name = path.partition(':')[0]
    if not _allowed(path):
        raise ComponentNotAllowed(
            f"Component class {path!r} is not allowed here: stored configs may name superduperdb's "
            'own components, classes this program defines, and classes the operator allows. Add it '
            'to components.allowed_classes (SUPERDUPERDB_COMPONENTS__ALLOWED_CLASSES) if you trust it.'
        )
    try:
        importlib.import_module(module_name)
    except ImportError as exc:
        raise ComponentError(
            f'Cannot import component class {path!r}: {exc}. '
            'Is the package that defines it installed in this environment?'
        ) from exc
    found = _REGISTRY.get(path)
    if found is None:
        raise ComponentNotAllowed(f'{path!r} is not a component class (a subclass of Component).')
    return found


def _allowed(path: str) -> bool:
    from superduperdb.base.config import CFG

    module = path.partition(':')[0]
    if module == 'superduperdb' or module.startswith('superduperdb.'):
        return True  # before the entry points: scanning every installed package takes ~50 ms
    allowed = [*CFG.components.allowed_classes, *_entry_point_classes()]
    for entry in allowed:
        if ':' in entry:
            if entry == path:
                return True
        elif module == entry or module.startswith(entry + '.'):
            return True
    return False


@functools.lru_cache(maxsize=1)
def _entry_point_classes() -> tuple[str, ...]:
    from importlib.metadata import entry_points

    return tuple(ep.value.replace(' ', '') for ep in entry_points(group='superduperdb.components'))


def check_identifier(value: Any, what: str = 'identifier') -> str:
    """A component identifier or type id: 1-255 characters, no control characters.

    >>> check_identifier('my-model')
    'my-model'
    >>> check_identifier('')
    Traceback (most recent call last):
    ...
    superduperdb.base.exceptions.InvalidName: Invalid component identifier '': ...
    """
    if (
        not isinstance(value, str)
        or not value
        or len(value) > MAX_IDENTIFIER
        or _CONTROL.search(value)
        or not _utf8(value)
    ):
        raise InvalidName(
            f'Invalid component {what} {value!r}: use 1-{MAX_IDENTIFIER} printable characters '
            '(no NUL or other control characters).',
            name=str(value),
        )
    return value


def _utf8(text: str) -> bool:
    try:
        text.encode('utf-8')
    except UnicodeEncodeError:
        return False
    return True


def _is_state(f: dataclasses.Field[Any]) -> bool:
    return f.name.endswith('_')


def _components_in(value: Any) -> Iterator[Component]:
    if isinstance(value, Component):
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _components_in(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _components_in(v)


def _to_json(value: Any, where: str) -> Any:
    if isinstance(value, Component):
        if value.version is None:
            raise ComponentError(
                f'{where} refers to {value.type_id} {value.identifier!r}, which has no version '
                'yet: add it with db.add() first (db.add does this for nested components).'
            )
        return {'_component': [value.type_id, value.identifier, value.version]}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if callable(getattr(value, 'to_dict', None)) and type(value).__module__ == _QUERY_MODULE:
        query = value.to_dict()
        _check_json(query, where)
        return {'_query': query}
    if isinstance(value, (list, tuple)):
        return [_to_json(v, where) for v in value]
    if isinstance(value, dict):
        return {str(k): _to_json(v, where) for k, v in value.items()}
    raise ComponentError(
        f'{where} holds a {type(value).__name__}, which is not JSON-serializable. '
        'Declare the field with artifact() to store it in the artifact store.'
    )


def _check_json(value: Any, where: str) -> None:
    import json

    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise ComponentError(
            f'{where} holds a query whose filter is not JSON-serializable ({exc}); '
            'use plain numbers, strings, lists and dicts in stored queries.'
        ) from exc


def _from_json(
    value: Any,
    name: str,
    load_artifact: Callable[[str], Any],
    load_component: Callable[[str, str, int], Component],
) -> Any:
    if isinstance(value, dict):
        if set(value) == {'_artifact'}:
            return load_artifact(name)
        if set(value) == {'_query'}:
            return importlib.import_module(_QUERY_MODULE).query_from_dict(value['_query'])
        if set(value) == {'_component'}:
            type_id, identifier, version = value['_component']
            return load_component(type_id, identifier, version)
        return {k: _from_json(v, name, load_artifact, load_component) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_json(v, name, load_artifact, load_component) for v in value]
    return value
