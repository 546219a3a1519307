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
        "heavy = ('torch', 'lancedb', 'psycopg', 'pymysql', 'duckdb', 'pymongo');"
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
