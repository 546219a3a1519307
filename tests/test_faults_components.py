"""Fault suite: a write touches only the components on the written table, and a component that
cannot load in the writing process becomes a failed job, never an exception after the commit.

The model lives in a module that only the test process can import (a file in a temporary
directory put on ``sys.path`` here); a new process opens the same database without it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from superduperdb import CFG, Collection, VectorIndex, Watcher, superduper

_MODULE = """
import numpy as np

def embed(x):
    return np.array([float(x), 1.0, 0.5], dtype='float32')
"""

_WRITER = textwrap.dedent(
    """
    import json, sys, time
    from superduperdb import Collection, superduper
    uri, indexed, other = sys.argv[1:4]
    db = superduper(uri)
    report = {}
    started = time.perf_counter()
    result = db.execute(Collection(other).insert_many([{'y': i} for i in range(5)]))
    report['other_s'] = time.perf_counter() - started
    report['other_jobs'] = [job.method for job in result.jobs]
    report['imported_after_other'] = 'sd_private_embedder' in sys.modules
    try:
        result = db.execute(Collection(indexed).insert_many([{'x': i} for i in range(100, 103)]))
    except Exception as exc:
        report['raised'] = f'{type(exc).__name__}: {exc}'
    else:
        report['ids'] = len(result.ids)
        report['jobs'] = [(job.method, job.status, job.error) for job in result.jobs]
    print(json.dumps(report))
    """
)


@pytest.mark.parametrize('backend', ['sqlite', 'postgres'], indirect=True)
def test_a_write_loads_only_its_tables_components_and_an_unloadable_one_fails_as_a_job(
    db, table_name, tmp_path, monkeypatch
):
    """Item 8 of issue 13. Before: the write to the unrelated table imported the model's module
    (every vector index was loaded) and the write to the indexed table raised
    ModuleNotFoundError after its rows were committed."""
    (tmp_path / 'mods').mkdir()
    (tmp_path / 'mods' / 'sd_private_embedder.py').write_text(_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path / 'mods'))
    import sd_private_embedder  # only this process can import it

    coll = Collection(table_name)
    db.execute(coll.insert_many([{'x': i} for i in range(10)]))
    embedder = superduper(sd_private_embedder.embed, identifier='private-embedder')
    watcher = Watcher(model=embedder, key='x', select=coll.find())
    db.add(VectorIndex(f'{table_name}-index', indexing_watcher=watcher))
    other = f'{table_name}_other'

    env = {**os.environ, 'SUPERDUPERDB_ARTIFACT_STORE': CFG.artifact_store}
    env.pop('PYTHONPATH', None)
    done = subprocess.run(
        [sys.executable, '-c', _WRITER, db.spec['data_backend'], table_name, other],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    try:
        assert report['imported_after_other'] is False
        assert report['other_jobs'] == []
        assert report['other_s'] < 2.0, report
        assert 'raised' not in report, report['raised']  # the write returned
        assert report['ids'] == 3
        methods = {method: (status, error) for method, status, error in report['jobs']}
        status, error = methods['predict']
        assert status == 'failed'
        assert 'sd_private_embedder' in error and 'private-embedder' in error, error
        assert methods['vector_update'][0] == 'failed'
        assert db.execute(coll.count()) == 13  # the rows were committed, and are there
    finally:
        db.drop_table(other)
