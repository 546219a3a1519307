"""Doctests in the package's docstrings run in a temporary directory.

An example's files (``superduper('sqlite:///x.db')`` and the artifacts beside it) land
there: without this, running the tests would write into the repository.
"""

from __future__ import annotations

import pytest
from _pytest.doctest import DoctestItem


@pytest.fixture(autouse=True)
def _doctests_in_a_temporary_directory(request, tmp_path, monkeypatch):
    if isinstance(request.node, DoctestItem) and request.node.path.suffix == '.py':
        from superduperdb import CFG

        monkeypatch.chdir(tmp_path)
        with CFG.override(artifact_store=None):
            yield
    else:
        yield
