"""Fault suite for writes (issue 13, items 1, 3, 4 and 5): forked writers, outputs that cannot be
stored, a first insert that fails or is killed half-way, and processes starting together.

Everything here runs real processes (multiprocessing with the fork and the spawn start methods,
and ``subprocess`` children killed with SIGKILL) against real databases.
"""

from __future__ import annotations

import multiprocessing
import os

import pytest

from superduperdb import CFG, Collection, superduper
from tests.conftest import backend_uri

# ----- item 1: ids stay unique across forks --------------------------------------------------


def _forked_writer(uri: str, table: str, artifacts: str, batches: int, per_batch: int, results) -> None:
    """Insert ``batches`` x ``per_batch`` documents; report how many batches failed and why."""
    failed: list[str] = []
    with CFG.override(artifact_store=artifacts, metadata_store=None):
        db = superduper(uri)
        try:
            for b in range(batches):
                try:
                    docs = [{'n': b * per_batch + i} for i in range(per_batch)]
                    db.execute(Collection(table).insert_many(docs))
                except Exception as exc:  # counted and reported to the parent, which asserts
                    failed.append(f'{type(exc).__name__}: {exc}')
        finally:
            db.close()
    results.put(failed)


@pytest.mark.parametrize(
    'backend',
    [pytest.param('sqlite', marks=pytest.mark.sqlite), pytest.param('postgres', marks=pytest.mark.postgres)],
)
def test_writers_forked_after_import_make_unique_ids(backend, db, table_name, tmp_path):
    """Issue 13.1: children forked after the parent made ids continue no shared sequence.

    Before the fix: 3 of 4 forked writers failed (``UNIQUE constraint failed: <table>._id``).
    """
    table = table_name
    artifacts = f'filesystem://{tmp_path}/artifacts'
    uri = backend_uri(backend, tmp_path)
    db.execute(Collection(table).insert_one({'n': -1}))  # the parent makes an id before forking
    ctx = multiprocessing.get_context('fork')
    results = ctx.Queue()
    writers, batches, per_batch = 4, 5, 20  # 400 rows, and the parent's one
    procs = [
        ctx.Process(target=_forked_writer, args=(uri, table, artifacts, batches, per_batch, results))
        for _ in range(writers)
    ]
    for p in procs:
        p.start()
    failures = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    failed_writers, failed_batches = sum(1 for f in failures if f), sum(map(len, failures))
    ids = [doc['_id'] for doc in db.execute(Collection(table).find())]
    assert (failed_writers, failed_batches, len(ids), len(set(ids))) == (0, 0, 401, 401), failures


def test_new_id_is_reseeded_in_a_forked_child():
    """The random part of the id differs between a parent and a child forked after import."""
    from superduperdb.base.document import new_id

    parent = new_id()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next id and leave at once
        os.write(write, new_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert len(child) == 24
    assert child[8:18] != parent[8:18]  # the per-process random bytes
