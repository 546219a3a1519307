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
