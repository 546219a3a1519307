"""Tests that guard the codebase itself."""

from __future__ import annotations

import subprocess
import sys

import superduperdb


def test_all_is_sorted_and_importable():
    assert superduperdb.__all__ == sorted(superduperdb.__all__)
    assert set(superduperdb.__all__) == set(superduperdb._EXPORTS)
    for name in superduperdb.__all__:
        assert getattr(superduperdb, name) is not None
    for module in ('superduperdb.datalayer.mongodb', 'superduperdb.datalayer.sql'):
        mod = __import__(module, fromlist=['Collection'])
        assert mod.Collection is superduperdb.Collection is superduperdb.Table


def test_bare_import_pulls_no_heavy_or_driver_modules():
    heavy = [
        'torch',
        'lancedb',
        'sentence_transformers',
        'transformers',
        'psycopg',
        'pymysql',
        'duckdb',
        'pymongo',
        'mongomock',
        'sqlalchemy',
        'sklearn',
        'dask',
        'distributed',
        'PIL',
        'pandas',
        'pyarrow',
    ]
    code = (
        'import sys, superduperdb; from superduperdb import Collection, Document, Encoder;'
        f'print([m for m in {heavy!r} if m in sys.modules])'
    )
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == '[]', out.stdout


def test_sqlite_needs_no_other_driver():
    code = (
        "import sys; from superduperdb import superduper, Collection; db = superduper('sqlite:///:memory:');"
        "db.execute(Collection('t').insert_one({'a': 1}));"
        "heavy = ('torch', 'lancedb', 'psycopg', 'pymysql', 'duckdb', 'pymongo', 'pydantic', 'http.client');"
        'print([m for m in heavy if m in sys.modules])'
    )
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == '[]', out.stdout


def test_missing_extra_names_the_pip_command(monkeypatch):
    import pytest

    from superduperdb.base._deps import require
    from superduperdb.base.exceptions import MissingDependencyError

    with pytest.raises(MissingDependencyError, match=r"pip install 'superduperdb\[lancedb\]'"):
        require('lancedb_that_is_not_installed', extra='lancedb', what='LanceDB vector search')


def test_error_tree_is_documented():
    import inspect

    from superduperdb.base import exceptions

    doc = exceptions.__doc__
    for name, obj in inspect.getmembers(exceptions, inspect.isclass):
        if issubclass(obj, exceptions.SuperDuperError):
            assert name in doc, f'{name} missing from the tree in base/exceptions.py'


def _lock_tools():
    """requirements/drift.py, loaded from the repository (it is a script, not part of the package)."""
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location('drift', root / 'requirements' / 'drift.py')
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return root, module


def test_the_test_lock_pins_every_dependency_the_package_declares():
    """A dependency added to pyproject.toml without `make lock` would install unpinned in CI."""
    import re
    import tomllib

    root, drift = _lock_tools()
    project = tomllib.loads((root / 'pyproject.toml').read_text())['project']
    declared = list(project['dependencies'])
    for requirements in project['optional-dependencies'].values():
        declared += [r for r in requirements if not r.startswith('superduperdb[')]
    names = {re.sub(r'[-_.]+', '-', re.split(r'[\[<>=!~; ]', r, maxsplit=1)[0]).lower() for r in declared}
    locked = drift.pins((root / 'requirements' / 'test.lock').read_text().splitlines())
    assert sorted(names - set(locked)) == [], 'run `make lock` after changing dependencies in pyproject.toml'
    assert locked['torch'] == '2.13.0'  # the CPU build CI installs first (requirements/test.in)


def test_drift_lists_versions_that_differ_from_the_lock(tmp_path):
    root, drift = _lock_tools()
    lock = tmp_path / 'test.lock'
    lock.write_text('numpy==2.0.0\n  # via superduperdb\nPyYAML==6.0 ; python_version < "4"\ntorch==2.13.0\n')
    frozen = 'numpy==2.1.0\npyyaml==6.0\nnew_thing==1.0\ntorch==2.13.0+cpu\n'
    out = subprocess.run(
        [sys.executable, str(root / 'requirements' / 'drift.py'), str(lock)],
        input=frozen,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.splitlines() == [
        f'drift from {lock}: 1 newer or different, 1 not in the lock',
        '  numpy: 2.0.0 -> 2.1.0',
        '  new-thing: (not locked) 1.0',
    ]


# ----- the house: imports point down ------------------------------------------------------------
# The layers, lowest first, are tests/house.py's LAYERS (docs/architecture.md draws them). A module
# may import from a lower layer, from its own folder, and sideways only along these arrows:
SIDEWAYS = {
    ('models', 'components'),  # a model framework's adapter is a Model
    ('encoders', 'components'),  # an encoder family's encoders are Encoders
    ('models', 'encoders'),  # a model declares how its outputs are stored
    ('predict', 'vector_search'),  # a repairing predict tells the vector indexes to check
    ('server', 'ui'),  # the server mounts the dashboard
    ('ui', 'server'),  # the dashboard logs in and answers errors as the server does
}
#: The only imports back up: lazy entry points that open a database in another process.
ENTRY_POINTS = {
    ('superduperdb.datalayer.datalayer', 'superduperdb.connect'),  # an unpickled Datalayer reopens
    ('superduperdb.jobs.dask', 'superduperdb.connect'),  # a Dask worker opens the database once
}


def _edges():
    import house

    return house, house.import_edges(house.load_modules())


def test_imports_point_down_the_layers():
    """A new import from a lower layer to a higher one (a component calling a service, a backend
    reading the store) fails here: call down, or pass what is needed in (see docs/architecture.md)."""
    house, edges = _edges()
    wrong = []
    for importer, imported, lazy in edges:
        (place_a, layer_a), (place_b, layer_b) = house.layer(importer), house.layer(imported)
        assert layer_a is not None and layer_b is not None, f'{importer} or {imported}: no layer in LAYERS'
        if place_a == place_b or layer_b < layer_a or (importer, imported) in ENTRY_POINTS:
            continue
        if layer_a == layer_b and ((place_a, place_b) in SIDEWAYS or layer_a == max(house.LAYERS.values())):
            continue
        wrong.append(f'{importer} -> {imported}{" (lazy)" if lazy else ""}')
    assert wrong == [], 'imports that do not point down:\n' + '\n'.join(wrong)


def test_no_import_circle_outside_base():
    """Modules that import each other (even lazily) are one piece: outside base/ there are none,
    but for the two entry points that reopen a database in another process."""
    house, edges = _edges()
    nodes = sorted({m for edge in edges for m in edge[:2]})
    kept = [(a, b) for a, b, _ in edges if (a, b) not in ENTRY_POINTS]
    circles = [c for c in house.cycles(nodes, kept) if not all(m.startswith('superduperdb.base.') for m in c)]
    assert circles == []


def test_no_module_uses_a_private_member_of_the_datalayer():
    """``db._x`` outside datalayer.py: what others need from the Datalayer is its public API."""
    import ast

    house, _ = _edges()
    found = []
    for name, (path, tree) in house.load_modules().items():
        if name == house.DATALAYER_FILE:
            continue
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith('_')
                and not node.attr.startswith('__')
            ):
                owner = ast.unparse(node.value)
                if owner in ('db', 'self.db', 'datalayer', 'self.datalayer') or owner.endswith('.db'):
                    found.append(f'{path.relative_to(house.ROOT)}:{node.lineno}: {owner}.{node.attr}')
    assert found == []


def test_backend_capabilities_are_declared_not_probed():
    """What a backend can do beyond the contract is declared (``DataBackend.capabilities`` and
    the optional members with "not here" defaults): no ``hasattr``/``getattr`` on a backend
    outside backends/, where a missing method used to stand for a missing capability."""
    import ast

    house, _ = _edges()
    found = []
    for name, (path, tree) in house.load_modules().items():
        if name.startswith('superduperdb.backends.'):
            continue
        for node in ast.walk(tree):
            probe = isinstance(node, ast.Call) and ast.unparse(node.func) in ('hasattr', 'getattr')
            if probe and node.args and 'backend' in ast.unparse(node.args[0]):  # type: ignore[attr-defined]
                found.append(f'{path.relative_to(house.ROOT)}:{node.lineno}: {ast.unparse(node)}')
    assert found == []


def test_no_module_is_over_800_lines():
    """A module a newcomer can read through: split one that grows past this by concern (the
    SQL backend's mixins, the server's routes, the Datalayer's registries show how)."""
    house, _ = _edges()
    long = {name: len(path.read_text().splitlines()) for name, (path, _) in house.load_modules().items()}
    assert {name: n for name, n in long.items() if n > 800} == {}
