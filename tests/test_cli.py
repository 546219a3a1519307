"""The command line as a user meets it: whole ids, prefixes, one-line errors, JSON, read-only commands."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections import Counter

import pytest

from superduperdb import Collection, Watcher, superduper
from superduperdb.base.exceptions import QueryError
from tests.helpers import run_cli_80_columns as run_cli


@pytest.fixture(scope='module')
def made(tmp_path_factory):
    """A SQLite database with a watcher, its backfill job and the job of one insert."""
    tmp_path = tmp_path_factory.mktemp('cli')
    uri = f'sqlite:///{tmp_path}/jobs.sqlite'
    env = {'SUPERDUPERDB_ARTIFACT_STORE': f'filesystem://{tmp_path}/artifacts'}
    code = (
        'import json; from superduperdb import superduper, Collection, Watcher;'
        f'db = superduper({uri!r}); coll = Collection("t");'
        'db.execute(coll.insert_many([{"x": i} for i in range(5)]));'
        'm = superduper(lambda x: 2 * x, identifier="double");'
        'db.add(Watcher(model=m, key="x", select=coll.find()));'
        'db.execute(coll.insert_one({"x": 9}));'
        'print(json.dumps([j.id for j in db.show("job")]))'
    )
    done = subprocess.run(
        [sys.executable, '-c', code],
        cwd=tmp_path,
        env={**os.environ, **env},
        check=True,
        timeout=120,
        capture_output=True,
        text=True,
    )
    return tmp_path, uri, env, json.loads(done.stdout)


def test_version(tmp_path):
    from superduperdb import __version__

    done = run_cli('--version', cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == f'superduperdb {__version__}'


def test_jobs_prints_whole_ids_at_80_columns_and_follows_a_prefix(made):
    tmp_path, uri, env, ids = made
    listed = run_cli('jobs', '--uri', uri, cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    for job_id in ids:
        assert job_id in listed.stdout  # not cut, not wrapped
    followed = run_cli('jobs', '--uri', uri, '--follow', ids[0][:8], cwd=tmp_path, env=env)
    assert followed.returncode == 0, followed.stderr
    assert f'{ids[0]} success' in followed.stdout


def test_json_output_of_info_status_and_jobs(made):
    tmp_path, uri, env, ids = made
    jobs = json.loads(run_cli('jobs', '--uri', uri, '--json', cwd=tmp_path, env=env).stdout)
    assert [j['id'] for j in jobs] == ids
    assert {j['status'] for j in jobs} == {'success'} and jobs[0]['progress'] == '1/1'
    followed = run_cli('jobs', '--uri', uri, '--follow', ids[1][:6], '--json', cwd=tmp_path, env=env)
    assert json.loads(followed.stdout)['id'] == ids[1]
    (status,) = json.loads(run_cli('status', '--uri', uri, '--json', cwd=tmp_path, env=env).stdout)
    assert (status['watcher'], status['rows'], status['current'], status['backlog']) == (
        'double@t.x',
        6,
        6,
        0,
    )
    info = json.loads(run_cli('info', '--uri', uri, '--json', cwd=tmp_path, env=env).stdout)
    assert info['database'].startswith('sqlite') and info['components']['watcher'] == {'double@t.x': [0]}
    assert info['components']['model'] == {'double': [0]} and 'numpy' in info['installed']


def test_errors_are_one_line_unless_debug(made):
    tmp_path, uri, env, _ = made
    bad = run_cli('jobs', '--uri', uri, '--status', 'finished', cwd=tmp_path, env=env)
    assert bad.returncode == 1 and bad.stdout == ''
    assert bad.stderr.strip().splitlines() == [
        "Error: Job status is one of pending, running, success, failed, got 'finished'."
    ]
    unknown = run_cli('jobs', '--uri', uri, '--follow', 'zzzz', cwd=tmp_path, env=env)
    assert unknown.returncode == 1 and len(unknown.stderr.strip().splitlines()) == 1
    assert "No job 'zzzz'" in unknown.stderr
    debug = run_cli('--debug', 'jobs', '--uri', uri, '--status', 'finished', cwd=tmp_path, env=env)
    assert debug.returncode == 1 and 'Traceback' in debug.stderr and 'QueryError' in debug.stderr


@pytest.mark.parametrize('command', ['status', 'info', 'jobs'])
def test_read_only_commands_refuse_a_missing_database_file(tmp_path, command):
    typo = run_cli(command, '--uri', f'sqlite:///{tmp_path}/sub/typo.db', cwd=tmp_path)
    assert typo.returncode == 1 and 'No database file at' in typo.stderr and 'typo.db' in typo.stderr
    default = subprocess.run(  # the default database, ./.superduperdb/db.sqlite, not made yet
        [sys.executable, '-m', 'superduperdb', command],
        cwd=tmp_path,
        env={
            k: v
            for k, v in os.environ.items()
            if k not in ('SUPERDUPERDB_DATA_BACKEND', 'SUPERDUPERDB_METADATA_STORE')
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert default.returncode == 1 and 'db.sqlite' in default.stderr
    assert 'Traceback' not in typo.stderr + default.stderr
    assert not (tmp_path / 'sub').exists() and not (tmp_path / '.superduperdb' / 'db.sqlite').exists()


def test_status_reads_records_only(made, tmp_path):
    """`status` loads no model: it works with the artifact store gone (and fast)."""
    src, uri, env, _ = made
    copy = tmp_path / 'copy.sqlite'
    shutil.copy(src / 'jobs.sqlite', copy)
    env = {'SUPERDUPERDB_ARTIFACT_STORE': f'filesystem://{tmp_path}/no-artifacts-here'}
    done = run_cli('status', '--uri', f'sqlite:///{copy}', '--json', cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)[0]['current'] == 6


def test_db_status_loads_no_component(db, table_name, monkeypatch):
    from superduperdb.components.component import Component

    coll = Collection(table_name)
    db.execute(coll.insert_many([{'x': i} for i in range(3)]))
    db.add(
        Watcher(
            model=superduper(lambda x: x + 1, identifier='inc'), key='x', select=coll.find({'x': {'$gt': 0}})
        )
    )
    db.forget_caches()  # nothing loaded: status must not load anything either

    def refuse(*args, **kwargs):
        raise AssertionError('status() loaded a component')

    monkeypatch.setattr(Component, 'from_config', refuse)
    (row,) = db.status()
    assert (row['watcher'], row['rows'], row['current'], row['backlog'], row['active']) == (
        f'inc@{table_name}.x',
        2,
        2,
        0,
        True,
    )


def test_job_by_unique_prefix(db):
    jobs = [db.submit_job('noop') for _ in range(17)]  # 16 hex digits: two share a first digit
    job = jobs[0]
    assert db.job(job.id[:10]).id == job.id
    assert db.job(job.id).id == job.id
    first = Counter(j.id[0] for j in jobs).most_common(1)[0][0]
    with pytest.raises(QueryError, match='matches several jobs'):
        db.job(first)
    with pytest.raises(QueryError, match='No job'):
        db.job('not-a-job')
