"""Components: versions, show, load, remove, dependencies, artifacts; on every backend."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from superduperdb import Component, Encoder
from superduperdb.base.exceptions import ComponentError, ComponentInUse, ComponentNotFound
from superduperdb.components.component import artifact
from superduperdb.components.encoder import BaseEncoder
from superduperdb.encoders.numpy import array


@dataclass(kw_only=True)
class Scaler(Component):
    """A test component: a plain parameter, an artifact and a reference to an encoder."""

    type_id = 'scaler'
    factor: float = 1.0
    table: Any = artifact()
    encoder: BaseEncoder | None = None
    cache_: dict | None = None  # loaded state: never serialized


def test_versions_show_load(db):
    first = db.add(Scaler('scale', factor=2.0, table={'a': [1, 2]}))
    assert first.version == 0
    assert db.add(Scaler('scale', factor=2.0, table={'a': [1, 2]})).version == 0  # identical: same version
    assert db.add(Scaler('scale', factor=3.0)).version == 1
    assert db.add(Scaler('scale', factor=2.0, table={'a': [1, 2, 3]})).version == 2  # artifact changed
    assert db.show('scaler') == ['scale']
    assert db.show('scaler', 'scale') == [0, 1, 2]
    assert db.show() == {'scaler': ['scale']}
    fresh = type(db)(db.databackend, db.metadata, db.artifact_store)
    latest = fresh.load('scaler', 'scale')
    assert (latest.version, latest.factor, latest.table) == (2, 2.0, {'a': [1, 2, 3]})
    assert fresh.load('scaler', 'scale', version=0).table == {'a': [1, 2]}
    assert isinstance(latest, Scaler) and latest.cache_ is None


def test_missing_components_say_what_exists(db):
    db.add(Scaler('scale'))
    with pytest.raises(ComponentNotFound, match=r"'scale' has no version 3; versions are 0\. See db.show"):
        db.load('scaler', 'scale', version=3)
    with pytest.raises(
        ComponentNotFound, match=r"No scaler 'other' is registered. Registered scalers: scale"
    ):
        db.load('scaler', 'other')
    with pytest.raises(KeyError):  # also a KeyError, as a Python user expects
        db.remove('scaler', 'nope')


def test_remove_refuses_while_others_depend(db, tmp_path):
    enc = array('float32', 8)
    db.add(Scaler('uses-encoder', encoder=enc, table=[1, 2, 3]))
    assert db.show('encoder') == ['numpy.float32[8]']  # added first, as a dependency
    with pytest.raises(ComponentInUse, match='scaler/uses-encoder/0 depend') as info:
        db.remove('encoder', 'numpy.float32[8]')
    assert info.value.dependents == ['scaler/uses-encoder/0']
    assert db.show('encoder') == ['numpy.float32[8]']  # nothing removed
    db.remove('scaler', 'uses-encoder')
    db.remove('encoder', 'numpy.float32[8]')
    assert db.show() == {}


def test_force_remove_and_artifacts_are_freed(db):
    db.add(Scaler('s', table=list(range(1000))))
    record = db.metadata.get_component('scaler', 's')
    (key,) = record['artifacts'].values()
    assert db.artifact_store.exists(key)
    db.add(Scaler('t', encoder=array('int8', 2)))
    db.remove('encoder', 'numpy.int8[2]', force=True)
    db.remove('scaler', 's')
    assert not db.artifact_store.exists(key)


def test_user_encoder_functions_are_stored_as_artifacts(db):
    db.add(Encoder('upper', encode=lambda s: s.upper().encode(), decode=lambda b: b.decode()))
    fresh = type(db)(db.databackend, db.metadata, db.artifact_store)
    loaded = fresh.load('encoder', 'upper')
    assert loaded.decode(loaded.encode('abc')) == 'ABC'


def test_non_json_field_needs_artifact(db):
    @dataclass(kw_only=True)
    class Bad(Component):
        type_id = 'bad'
        thing: Any = None

    with pytest.raises(ComponentError, match='Declare the field with artifact'):
        db.add(Bad('b', thing=object()))
    with pytest.raises(Exception, match='takes a component'):
        db.add('not a component')
