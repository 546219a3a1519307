"""Search that never drifts (issue 24): what ``like()`` returns is checked against the rows.

Each test reproduces a way the vector engine (a derived copy of the outputs) went apart
from its source, and compares what a user sees (search results, status) with the truth
(the rows and their stored outputs).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from superduperdb import Collection, VectorIndex, Watcher
from superduperdb.encoders.numpy import array
from superduperdb.models.function import FunctionModel

COLOURS = ('red', 'blue', 'green', 'black')


def colour(text: str) -> np.ndarray:
    """A one-hot vector of a text's first word: exact scores, no model download."""
    v = np.zeros(len(COLOURS), dtype='float32')
    v[COLOURS.index(text.split()[0])] = 1
    return v


def _index(db: Any, table: str, name: str = 'colours') -> VectorIndex:
    model = FunctionModel('colour', object=colour, encoder=array('float32', len(COLOURS)))
    watcher = Watcher(model=model, key='text', select=Collection(table).find())
    return db.add(VectorIndex(name, indexing_watcher=watcher))


def _found(db: Any, table: str, text: str, n: int = 10, where: Any = None) -> list[tuple[str, float]]:
    q = Collection(table).like({'text': text}, 'colours', n=n).find(where or {})
    return [(d['text'], round(d['_score'], 3)) for d in db.execute(q)]


# ----- item 2: keys MongoDB made ------------------------------------------------------------------
@pytest.mark.parametrize('backend', [pytest.param('mongodb', marks=pytest.mark.mongodb)], indirect=True)
def test_search_finds_documents_with_objectid_and_integer_keys(db, table_name):
    """The seed's headline scenario: an existing collection whose documents the application
    inserted itself (ObjectId ``_id``s), or with integer ``_id``s."""
    from bson import ObjectId

    raw = db.databackend.database[table_name]
    oids = raw.insert_many([{'text': t} for t in ('red shoe', 'blue hat', 'green sock')]).inserted_ids
    assert all(isinstance(i, ObjectId) for i in oids)
    raw.insert_one({'_id': 7, 'text': 'black belt'})
    _index(db, table_name)
    (status,) = db.status()
    assert (status['rows'], status['current']) == (4, 4)
    assert _found(db, table_name, 'blue x', n=2)[0] == ('blue hat', 1.0)
    assert _found(db, table_name, 'black x', n=1) == [('black belt', 1.0)]
    filtered = _found(db, table_name, 'green x', n=1, where={'text': {'$ne': 'x'}})  # filter, then search
    assert filtered == [('green sock', 1.0)]
    # more like a row given by its ObjectId
    q = Collection(table_name).like({'_id': oids[0]}, 'colours', n=1).find()
    assert [d['text'] for d in db.execute(q)] == ['red shoe']
    # a change to an ObjectId document moves it in the index; a deleted one leaves it
    db.execute(Collection(table_name).update_one({'_id': oids[1]}, {'$set': {'text': 'red hat'}}))
    db.execute(Collection(table_name).delete_one({'_id': oids[2]}))
    assert sorted(_found(db, table_name, 'red x', n=2)) == [('red hat', 1.0), ('red shoe', 1.0)]
    assert _found(db, table_name, 'green x', n=1) != [('green sock', 1.0)]
    assert {t for t, _ in _found(db, table_name, 'red x')} == {'red shoe', 'red hat', 'black belt'}


# ----- item 1: repairs that never reached the engines ---------------------------------------------
def _second(db: Any) -> Any:
    """Another process on the same database (a ``cdc`` service, a worker): its own Datalayer."""
    from superduperdb import superduper

    return superduper(str(db.databackend.engine.url.render_as_string(hide_password=False)))


def _rows_and_index(db: Any, table: str) -> None:
    db.execute(Collection(table).insert_many([{'_id': i, 'text': t} for i, t in enumerate(COLOURS)]))
    _index(db, table)


@pytest.mark.parametrize(
    'backend',
    [pytest.param('sqlite', marks=pytest.mark.sqlite), pytest.param('mysql', marks=pytest.mark.mysql)],
    indirect=True,
)
def test_a_reconcile_reaches_the_engines_of_running_processes(db, table_name):
    """Another program UPDATEs a row; change capture's reconcile (high-water marks here: updates
    are found only so) repairs its output. A long-running searcher saw the row at its old place."""
    import sqlalchemy as sa

    _rows_and_index(db, table_name)
    assert _found(db, table_name, 'blue x', n=1) == [('blue', 1.0)]  # the searcher's engine is built
    with db.databackend.engine.begin() as conn:  # another program moves row 1 from blue to red
        conn.execute(sa.text(f"UPDATE {table_name} SET text = 'red moved' WHERE _id = 1"))
    cdc = _second(db)
    try:
        cdc.cdc.poll_once()  # the reconcile: the output of row 1 computed again
    finally:
        cdc.close()
    assert ('red moved', 1.0) in _found(db, table_name, 'red x', n=2)
    assert _found(db, table_name, 'blue x', n=1) != [('red moved', 1.0)]
    (check,) = db.status().vector_indexes  # the check the reconcile asked for found the moved row
    assert (check['outputs'], check['missing'], check['stale'], check['repaired']) == (4, 0, 1, 1)
    clean = {'engine': 4, 'outputs': 4, 'missing': 0, 'stale': 0, 'extra': 0, 'repaired': 0}
    assert db.vectors.verify(db.vectors.get('colours')) == clean


@pytest.mark.parametrize(
    'backend',
    [pytest.param('sqlite', marks=pytest.mark.sqlite), pytest.param('postgres', marks=pytest.mark.postgres)],
    indirect=True,
)
def test_an_update_lost_between_outputs_and_engines_is_found_and_repaired(db, table_name, monkeypatch):
    """A writer stores outputs, then dies before its vector update (a kill, a lost connection):
    the searcher's engine is checked against the outputs and repaired; status says what it found."""
    from superduperdb import CFG

    _rows_and_index(db, table_name)
    assert len(_found(db, table_name, 'red x')) == 4
    writer = _second(db)
    try:

        def killed(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError('the process was killed here')

        monkeypatch.setattr(writer.vectors, 'sync', killed)
        writer.execute(Collection(table_name).insert_one({'_id': 10, 'text': 'green new'}))
        writer.execute(Collection(table_name).update_one({'_id': 0}, {'$set': {'text': 'black was red'}}))
        writer.execute(Collection(table_name).delete_one({'_id': 3}))
    finally:
        writer.close()
    with CFG.override(**{'vector_search.verify_interval': 3600.0}):  # not due yet: the engine is behind
        assert ('green new', 1.0) not in _found(db, table_name, 'green x')
    with CFG.override(**{'vector_search.verify_interval': 3600.0}):  # status says when it last checked
        (check,) = db.status().vector_indexes
        assert check['repaired'] == 0 and check['checked_s'] > 0
    with CFG.override(**{'vector_search.verify_interval': 0.0}):  # due: status checks, says what it found
        (check,) = db.status().vector_indexes
    assert (check['missing'], check['stale'], check['extra'], check['repaired']) == (1, 1, 1, 3)
    assert check['checked_s'] < 1
    assert {t for t, s in _found(db, table_name, 'green x') if s == 1.0} == {'green', 'green new'}
    assert _found(db, table_name, 'black x', n=1) == [('black was red', 1.0)]
    assert 'black' not in {t for t, _ in _found(db, table_name, 'black x')}
    clean = {'engine': 4, 'outputs': 4, 'missing': 0, 'stale': 0, 'extra': 0, 'repaired': 0}
    assert db.vectors.verify(db.vectors.get('colours')) == clean  # checked now, on demand


# ----- item 3: clocks --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    'backend',
    [pytest.param('sqlite', marks=pytest.mark.sqlite), pytest.param('postgres', marks=pytest.mark.postgres)],
    indirect=True,
)
@pytest.mark.parametrize('skew', [-60.0, 3600.0])
def test_a_writer_whose_clock_differs_is_caught_up_with(db, table_name, monkeypatch, skew):
    """A writer on a host whose clock is a minute behind (or an hour ahead): a searcher's
    engine applies its updates all the same (the journal numbers them; no clock compared)."""
    import time as clock

    from superduperdb import CFG

    _rows_and_index(db, table_name)
    assert len(_found(db, table_name, 'red x')) == 4
    writer = _second(db)
    real = clock.time
    try:
        monkeypatch.setattr(clock, 'time', lambda: real() + skew)  # the writer's clock
        for i in range(10):
            writer.execute(Collection(table_name).insert_one({'_id': 100 + i, 'text': f'blue {i}'}))
    finally:
        monkeypatch.setattr(clock, 'time', real)
        writer.close()
    with CFG.override(**{'vector_search.verify_interval': 3600.0}):  # the journal alone
        found = _found(db, table_name, 'blue x', n=20)
    assert sorted(t for t, s in found if s == 1.0) == ['blue', *(f'blue {i}' for i in range(10))]


@pytest.mark.parametrize(
    'backend',
    [pytest.param('postgres', marks=pytest.mark.postgres), pytest.param('mysql', marks=pytest.mark.mysql)],
    indirect=True,
)
def test_a_live_job_on_a_host_whose_clock_is_behind_is_not_taken_for_dead(db, tmp_path):
    """Job liveness compares heartbeats with now, both on the database server's clock: a job
    running on another host 30 s behind is running, not "failed, will not finish" (which made
    its rows computed twice), and a job whose process really stopped still reads as failed."""
    import os
    import subprocess
    import sys
    import time as clock

    from superduperdb import CFG
    from superduperdb.jobs import orphans

    env = {
        **os.environ,
        'SUPERDUPERDB_CLUSTER__HEARTBEAT': '0.3',
        'SUPERDUPERDB_ARTIFACT_STORE': CFG.artifact_store or '',
    }
    uri = db.databackend.engine.url.render_as_string(hide_password=False)
    worker = subprocess.Popen(
        [sys.executable, '-m', 'tests.clock_skewed_job', uri, '-30', '4'],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        job_id = worker.stdout.readline().strip()
        while db.metadata.get_job(job_id) is None:  # printed before it is recorded
            clock.sleep(0.05)
        with CFG.override(**{'cluster.heartbeat': 0.3}):
            deadline = clock.monotonic() + 3.0
            seen = set()
            while clock.monotonic() < deadline:
                status = db.job(job_id).status
                seen.add(status)
                assert status != 'failed', db.job(job_id).error
                assert orphans.orphaned(db) == []
                clock.sleep(0.2)
            assert 'running' in seen
            assert worker.wait(30) == 0
            assert db.job(job_id).status == 'success'
            # a job whose process stopped beating is still found dead, on the same clock
            record = db.metadata.get_job(job_id)
            db.metadata.update_job(job_id, status='running', heartbeat=float(record['ended_at']) - 60)
            assert db.job(job_id).status == 'failed'
    finally:
        worker.kill()
        worker.wait()
        worker.stdout.close()
