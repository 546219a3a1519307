"""Run the guides' examples (doctests in ``docs/*.md``) in a sandbox.

Each guide runs in a fresh temporary working directory (its databases, and the artifact
stores beside them, land there), so running the docs never writes into the repository:

    python -m pytest docs -q -p no:cacheprovider

Settings that a guide changes are put back afterwards, ``SUPERDUPERDB_*``
variables of the calling shell are hidden (so printed settings are the
defaults), and ``mongomock://`` databases start empty.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from superduperdb import CFG
from superduperdb.base.config import Config


@pytest.fixture(autouse=True)
def docs_sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh working directory and artifact store for each guide."""
    for name in list(os.environ):
        if name.startswith('SUPERDUPERDB_'):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)

    from superduperdb.backends import uri

    # one in-memory MongoDB per guide, not one per test session
    monkeypatch.setattr(uri, '_MOCK_CLIENTS', {}, raising=False)

    saved = CFG.to_dict()
    with CFG.override(
        artifact_store=None,  # the default: beside the database file, or in the database
        data_backend=Config.data_backend,
        metadata_store=None,
    ):
        yield tmp_path
    for name, value in saved.items():  # undo plain assignments made by a guide
        if CFG.to_dict()[name] != value:
            setattr(CFG, name, value)
