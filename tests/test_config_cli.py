"""Configuration precedence and the CLI commands, run as a user would (subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from superduperdb import CFG
from superduperdb.base.config import Config
from tests.helpers import run_cli


def test_precedence_defaults_file_env_code(tmp_path, monkeypatch):
    assert Config().chunk_size == 1000
    (tmp_path / 'superduperdb.toml').write_text(
        'chunk_size = 10\nlog_level = "INFO"\n[cluster]\nexecutor = "dask"\n'
    )
    monkeypatch.chdir(tmp_path)
    from_file = Config()
    assert (from_file.chunk_size, from_file.log_level, from_file.cluster.executor) == (10, 'INFO', 'dask')
    monkeypatch.setenv('SUPERDUPERDB_CHUNK_SIZE', '20')
    monkeypatch.setenv('SUPERDUPERDB_CLUSTER__EXECUTOR', 'local')
    from_env = Config()
    assert (from_env.chunk_size, from_env.log_level, from_env.cluster.executor) == (20, 'INFO', 'local')
    assert Config(chunk_size=30).chunk_size == 30


def test_override_restores_and_rejects_unknown_names():
    import pytest

    from superduperdb.base.exceptions import ConfigError

    with CFG.override(chunk_size=7, **{'server.port': 9999}):
        assert (CFG.chunk_size, CFG.server.port) == (7, 9999)
    assert (CFG.chunk_size, CFG.server.port) == (1000, 3223)
    with pytest.raises(ConfigError, match='Unknown setting'), CFG.override(chunk_sise=1):
        pass
    with CFG.override(vector_search={'engine': 'lancedb', 'path': '/tmp/vectors'}):  # a whole group
        assert (CFG.vector_search.engine, CFG.vector_search.path) == ('lancedb', '/tmp/vectors')
    assert (CFG.vector_search.engine, CFG.vector_search.path) == ('inmemory', None)


def test_cli_config_prints_effective_values(tmp_path):
    result = run_cli(
        'config', cwd=tmp_path, env={'SUPERDUPERDB_CHUNK_SIZE': '123', 'SUPERDUPERDB_SERVER__TOKEN': 's3cret'}
    )
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed['chunk_size'] == 123
    assert printed['server']['token'] == '***'  # secrets are not printed
    assert 's3cret' not in result.stdout


def test_cli_info_shows_backend_and_components(tmp_path):
    uri = f'sqlite:///{tmp_path}/info.sqlite'
    code = (
        'import numpy as np; from superduperdb import superduper, Collection;'
        'from superduperdb.encoders.numpy import array;'
        f'db = superduper({uri!r});'
        "db.execute(Collection('t').insert_one({'x': array('float32', 2)(np.zeros(2, dtype='float32'))}))"
    )
    env = {'SUPERDUPERDB_ARTIFACT_STORE': f'filesystem://{tmp_path}/artifacts'}
    subprocess.run(
        [sys.executable, '-c', code], cwd=tmp_path, env={**os.environ, **env}, check=True, timeout=120
    )
    result = run_cli('info', '--uri', uri, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert 'database: sqlite' in result.stdout
    assert 'encoder: numpy.float32[2] (versions 0)' in result.stdout
    bad = run_cli('info', '--uri', 'nosuch://x', cwd=tmp_path)
    assert bad.returncode == 1 and 'Unknown database URI scheme' in bad.stderr
    assert 'Traceback' not in bad.stderr


def test_cli_help_lists_commands(tmp_path):
    result = run_cli('--help', cwd=tmp_path)
    assert result.returncode == 0
    for command in ('config', 'info'):
        assert command in result.stdout


def test_cli_jobs_and_status(tmp_path):
    uri = f'sqlite:///{tmp_path}/jobs.sqlite'
    code = (
        'from superduperdb import superduper, Collection, Watcher;'
        f'db = superduper({uri!r}); coll = Collection("t");'
        'db.execute(coll.insert_many([{"x": i} for i in range(5)]));'
        'm = superduper(lambda x: 2 * x, identifier="double");'
        'db.add(Watcher(model=m, key="x", select=coll.find()));'
        'db.execute(coll.insert_one({"x": 9}));'
        'print(db.show("job")[0].id)'
    )
    env = {'SUPERDUPERDB_ARTIFACT_STORE': f'filesystem://{tmp_path}/artifacts', 'COLUMNS': '200'}
    made = subprocess.run(
        [sys.executable, '-c', code],
        cwd=tmp_path,
        env={**os.environ, **env},
        check=True,
        timeout=120,
        capture_output=True,
        text=True,
    )
    newest = made.stdout.strip()
    listed = run_cli('jobs', '--uri', uri, cwd=tmp_path, env=env)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.count('success') == 2 and newest in listed.stdout and '1/1' in listed.stdout
    followed = run_cli('jobs', '--uri', uri, '--follow', newest, cwd=tmp_path, env=env)
    assert followed.returncode == 0 and '1 computed' in followed.stdout and 'success (1/1)' in followed.stdout
    status = run_cli('status', '--uri', uri, cwd=tmp_path, env=env)
    assert status.returncode == 0, status.stderr
    assert 'double@t.x' in status.stdout and ' 6 ' in status.stdout
