"""Change capture: writes made by other applications (raw drivers, never db.execute) reach the watchers."""

from __future__ import annotations

import operator
import os
import signal
import sqlite3
import subprocess
import sys

import pytest
import sqlalchemy as sa

from superduperdb import CFG, Collection, Watcher, superduper
from superduperdb.backends.changes import fold, key_time
from superduperdb.base.document import new_id
from superduperdb.base.exceptions import ConfigError
from superduperdb.freshness.cdc import ChangeCapture
from tests.helpers import outputs, run_cli, wait_for

SQL = ['sqlite', 'duckdb', 'postgres', 'mysql']
EVERY = [*SQL, 'mongodb', 'chdb']
NOTHING = {'inserted': 0, 'updated': 0, 'deleted': 0}


def watch(db, table: str, model=None) -> Watcher:
    model = model or superduper(lambda x: x * 2, identifier='double')
    return db.add(Watcher(model=model, key='x', select=Collection(table).find()))


def stored_ids(db, table: str) -> set:
    """The source keys that have a row in the table's output table."""
    (record,) = db.metadata.outputs_of(table)
    return {row['_id'] for chunk in db.databackend.find(record['_id'], {}) for row in chunk}


@pytest.mark.parametrize('backend', EVERY, indirect=True)
def test_inserts_updates_and_deletes_made_while_stopped_are_handled(db, app, table_name):
    app.create({1: 1, 2: 2, 3: 3})
    watch(db, table_name)
    assert outputs(db, table_name) == {1: 2, 2: 4, 3: 6}
    assert db.cdc.poll_once() == NOTHING  # starts following the table; nothing changed yet

    app.insert({4: 4, 5: 5})
    app.update(2, 20)
    app.delete(3)
    queued = 4 if db.databackend.name == 'postgresql' else 2  # a queue of every write, or new keys
    assert db.cdc.backlog() == {table_name: queued}

    assert db.cdc.poll_once() == {'inserted': 2, 'updated': 1, 'deleted': 1}
    assert outputs(db, table_name) == {1: 2, 2: 40, 4: 8, 5: 10}
    assert stored_ids(db, table_name) == {1, 2, 4, 5}  # the deleted row's output went too
    assert db.cdc.backlog() == {table_name: 0}
    assert db.cdc.poll_once() == NOTHING  # handled once


@pytest.mark.parametrize('backend', EVERY, indirect=True)
def test_a_restart_resumes_from_the_persisted_position(db, app, table_name):
    app.create({1: 1})
    watch(db, table_name)
    db.cdc.poll_once()
    app.insert({2: 2, 3: 3})
    assert db.cdc.poll_once()['inserted'] == 2

    # another process: a second Datalayer over the same database, with its own change capture
    second = type(db)(db.databackend, db.metadata, db.artifact_store)
    assert ChangeCapture(second).poll_once() == NOTHING  # not from zero
    app.insert({4: 4})
    assert ChangeCapture(second).poll_once() == {'inserted': 1, 'updated': 0, 'deleted': 0}
    assert outputs(db, table_name) == {1: 2, 2: 4, 3: 6, 4: 8}


@pytest.mark.parametrize('backend', EVERY, indirect=True)
def test_a_crash_while_handling_loses_nothing(db, app, table_name, monkeypatch):
    app.create({1: 1})
    watch(db, table_name)
    db.cdc.poll_once()
    app.insert({2: 2, 3: 3})

    def crash(table, ids, **kw):
        raise RuntimeError('killed mid-batch')

    monkeypatch.setattr(db, 'trigger_jobs', crash)
    with pytest.raises(RuntimeError, match='killed mid-batch'):
        db.cdc.poll_once()
    monkeypatch.undo()
    assert db.cdc.backlog() == {table_name: 2}  # position not advanced
    assert ChangeCapture(db).poll_once()['inserted'] == 2
    assert outputs(db, table_name) == {1: 2, 2: 4, 3: 6}


@pytest.mark.parametrize('backend', ['sqlite', 'postgres', 'mysql'], indirect=True)
def test_background_thread_follows_watchers_added_later_and_catches_up_after_a_stop(db, app, table_name):
    app.create({1: 1})
    with CFG.override(**{'cdc.poll_interval': 0.05}):
        db.cdc.start()
        try:
            assert db.cdc.running
            watch(db, table_name)  # added while running: its table is followed from the next pass
            app.insert({2: 21})
            wait_for(lambda: outputs(db, table_name).get(2) == 42, 'the row inserted while running')
        finally:
            db.cdc.stop()
        assert not db.cdc.running

        app.insert({3: 3})  # while stopped
        app.delete(1)
        db.cdc.start()
        try:
            wait_for(lambda: outputs(db, table_name).get(3) == 6, 'the row inserted while stopped')
            wait_for(lambda: 1 not in stored_ids(db, table_name), 'the deleted row losing its output')
        finally:
            db.cdc.stop()
    assert db.cdc.error is None


@pytest.mark.parametrize('backend', [*SQL, 'chdb'], indirect=True)
def test_a_table_without_primary_key_is_refused_by_name(db, app, table_name, caplog):
    app.create({1: 1, 2: 2}, key=False)
    watch(db, table_name)  # its backfill fails (no key to write outputs against); the watcher stays
    with pytest.raises(ConfigError, match=f"cannot follow table '{table_name}': it has no primary key"):
        db.cdc.poll_once()
    with pytest.raises(ConfigError, match=table_name):
        db.cdc.start()
    assert not db.cdc.running


@pytest.mark.parametrize('backend', ['postgres'], indirect=True)
def test_postgres_triggers_queue_writes_while_stopped(db, app, table_name):
    app.create({1: 1, 2: 2})
    watcher = watch(db, table_name)
    assert db.cdc.poll_once() == NOTHING  # installs the triggers
    db.cdc.start()
    db.cdc.stop()
    app.insert({3: 3})  # the triggers stay installed: queued for the next start
    assert db.cdc.backlog() == {table_name: 1}
    lag = db.cdc.lag()
    assert lag is not None and lag >= 0
    source = db.cdc.source

    # another change-capture process is draining: this one leaves the queue alone
    with db.databackend.engine.connect() as other:
        other.execute(sa.text('SELECT pg_advisory_lock(:k)'), {'k': source.lock_key('drain')})
        assert db.cdc.poll_once() == NOTHING
        assert db.cdc.backlog() == {table_name: 1}
        other.execute(sa.text('SELECT pg_advisory_unlock(:k)'), {'k': source.lock_key('drain')})
    assert db.cdc.poll_once() == {'inserted': 1, 'updated': 0, 'deleted': 0}
    assert db.cdc.lag() is None

    app.sql('UPDATE {t} SET id = 10 WHERE id = 1')  # a new key: the old one is gone
    assert db.cdc.poll_once() == {'inserted': 0, 'updated': 1, 'deleted': 1}
    assert stored_ids(db, table_name) == {2, 3, 10}

    app.sql('TRUNCATE {t}')
    app.insert({7: 7})
    assert db.cdc.poll_once() == {'inserted': 1, 'updated': 0, 'deleted': 3}
    assert outputs(db, table_name) == {7: 14}

    def triggers() -> int:
        with db.databackend.engine.connect() as conn:
            return conn.execute(
                sa.text(
                    'SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass(:t) '
                    "AND tgname LIKE '\\_superduper\\_cdc\\_%'"
                ),
                {'t': app.name},
            ).scalar_one()

    assert triggers() == 4
    # writes through superduperdb start their jobs themselves: the triggers leave them out
    result = db.execute(Collection(table_name).insert_one({'id': 8, 'x': 8}))
    assert [j.status for j in result.jobs] == ['success']
    assert db.cdc.backlog() == {table_name: 0} and db.cdc.poll_once() == NOTHING
    assert outputs(db, table_name) == {7: 14, 8: 16}
    db.remove('watcher', watcher.identifier)
    db.cdc.poll_once()
    assert triggers() == 0  # a table nobody watches stops paying for triggers


@pytest.mark.parametrize('backend', ['sqlite'], indirect=True)
def test_high_water_mark_status_and_superduperdb_ids(db, table_name):
    coll = Collection(table_name)
    db.execute(coll.insert_one({'x': 1}))  # a table of superduperdb's own, keyed by time-ordered ids
    watch(db, table_name)
    db.cdc.poll_once()
    assert db.cdc.lag() is None
    with sqlite3.connect(db.databackend.engine.url.database) as other_app:
        other_app.execute(f'INSERT INTO {table_name} (_id, x) VALUES (?, 5)', (new_id(),))
    assert db.cdc.backlog() == {table_name: 1}
    lag = db.cdc.lag()
    assert lag is not None and 0 <= lag < 3600  # from the time inside the id
    assert db.cdc.poll_once() == {'inserted': 1, 'updated': 0, 'deleted': 0}
    assert sorted(d['_outputs']['x']['double'] for d in db.execute(coll.find())) == [2, 10]
    assert db.cdc.lag() is None


def test_in_memory_sqlite_cannot_be_followed_from_a_thread():
    db = superduper('sqlite:///:memory:')
    with pytest.raises(ConfigError, match='private to one connection'):
        db.cdc.start()
    db.close()


def test_fold_keeps_the_last_word_per_key():
    changes = [('t', 'I', 1), ('t', 'U', 1), ('t', 'U', 2), ('t', 'D', 2), ('t', 'D', 3), ('t', 'I', 3)]
    assert fold(changes) == {'t': {'inserted': [1, 3], 'updated': [], 'deleted': [2]}}
    assert key_time('65f0c0de' + '0' * 16) == float(0x65F0C0DE)
    assert key_time(17) is None


def test_change_stream_events_skip_our_own_output_writes():
    from superduperdb.backends.mongodb.cdc import changes_from_events

    events = [
        {'operationType': 'insert', 'ns': {'coll': 't'}, 'documentKey': {'_id': 1}},
        {
            'operationType': 'update',
            'ns': {'coll': 't'},
            'documentKey': {'_id': 1},
            'updateDescription': {'updatedFields': {'_outputs.x.double': 2}, 'removedFields': []},
        },
        {
            'operationType': 'update',
            'ns': {'coll': 't'},
            'documentKey': {'_id': 2},
            'updateDescription': {'updatedFields': {'x': 5}, 'removedFields': []},
        },
        {'operationType': 'replace', 'ns': {'coll': 't'}, 'documentKey': {'_id': 3}},
        {'operationType': 'delete', 'ns': {'coll': 't'}, 'documentKey': {'_id': 4}},
        {'operationType': 'insert', 'ns': {'coll': 'unwatched'}, 'documentKey': {'_id': 5}},
        {'operationType': 'drop', 'ns': {'coll': 't'}},
    ]
    assert changes_from_events(events, {'t'}) == [('t', 'I', 1), ('t', 'U', 2), ('t', 'U', 3), ('t', 'D', 4)]


@pytest.mark.skipif(
    not os.environ.get('SUPERDUPERDB_TEST_MONGODB_URI'),
    reason='change streams need a real MongoDB replica set: set SUPERDUPERDB_TEST_MONGODB_URI '
    '(mongomock has none; its polling path runs in the tests above)',
)
@pytest.mark.parametrize('backend', ['mongodb'], indirect=True)
def test_mongodb_change_stream_resumes_from_its_token(db, app, table_name):
    from superduperdb.backends.mongodb.cdc import ChangeStream

    app.create({1: 1})
    watch(db, table_name)
    with CFG.override(**{'cdc.poll_interval': 0.05}):
        db.cdc.start()
        try:
            app.insert({2: 2})
            wait_for(lambda: outputs(db, table_name).get(2) == 4, 'the inserted document')
        finally:
            db.cdc.stop()
    app.insert({3: 3})  # while stopped: the next start resumes from the persisted token
    app.update(2, 20)
    counts = ChangeCapture(db).poll_once()
    if isinstance(db.cdc.source, ChangeStream):
        assert counts == {'inserted': 1, 'updated': 1, 'deleted': 0}
    assert outputs(db, table_name) == {1: 2, 2: 40, 3: 6}


# ----- the command line ---------------------------------------------------------------------------
@pytest.mark.parametrize('backend', ['sqlite'], indirect=True)
def test_cli_cdc_once_then_in_the_foreground_until_sigterm(db, app, table_name):
    uri = db.databackend.engine.url.render_as_string(hide_password=False)
    env = {'SUPERDUPERDB_ARTIFACT_STORE': CFG.artifact_store, 'SUPERDUPERDB_CDC__POLL_INTERVAL': '0.1'}
    app.create({1: 1})
    watch(db, table_name, superduper(operator.neg, identifier='double'))  # importable in the subprocess
    app.insert({2: 2})
    once = run_cli('cdc', '--uri', uri, '--once', env=env)
    assert once.returncode == 0, once.stderr
    assert once.stdout.strip() == 'inserted 0, updated 1, deleted 0'  # first pass: a catch-up reconcile
    app.insert({3: 3})
    once = run_cli('cdc', '--uri', uri, '--once', env=env)
    assert once.stdout.strip() == 'inserted 1, updated 0, deleted 0', once.stderr

    proc = subprocess.Popen(
        [sys.executable, '-m', 'superduperdb', 'cdc', '--uri', uri],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        app.insert({4: 4})
        wait_for(lambda: outputs(db, table_name).get(4) == -4, 'the foreground command to handle a row')
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    assert 'change capture stopped' in stderr
    assert outputs(db, table_name) == {1: -1, 2: -2, 3: -3, 4: -4}


def test_cli_cdc_is_listed_in_help():
    result = subprocess.run(
        [sys.executable, '-m', 'superduperdb', 'cdc', '--help'], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and '--once' in result.stdout
