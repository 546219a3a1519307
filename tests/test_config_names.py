"""Config names that fail silently no more (issue 14): unknown keys, a missing config file and
bad choices are errors naming where; the log level is applied; a job whose rows failed says so."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from superduperdb import CFG, Collection, VectorIndex, Watcher, superduper
from superduperdb.base.config import VECTOR_ENGINES, Config
from superduperdb.base.exceptions import ComponentError, ConfigError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in list(os.environ):
        if name.startswith('SUPERDUPERDB_') and not name.startswith('SUPERDUPERDB_TEST_'):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


@pytest.mark.parametrize(
    ('variable', 'suggestion'),
    [
        ('SUPERDUPERDB_CHUNK_SISE', 'SUPERDUPERDB_CHUNK_SIZE'),
        ('SUPERDUPERDB_VECTOR_SERCH__ENGINE', 'SUPERDUPERDB_VECTOR_SEARCH'),
        ('SUPERDUPERDB_CLUSTER__EXECUTR', 'SUPERDUPERDB_CLUSTER__EXECUTOR'),
    ],
)
def test_unknown_environment_variables(clean_env, variable, suggestion):
    clean_env.setenv(variable, '5')
    with pytest.raises(ConfigError, match=f'{variable}.*Did you mean {suggestion!r}'):
        Config()


@pytest.mark.parametrize(
    ('text', 'needles'),
    [
        ('chunk_sise = 3\n', ["'chunk_sise'", "'chunk_size'"]),
        ('[vector_serch]\nengine = "lancedb"\n', ["'vector_serch'", "'vector_search'"]),
        ('[vector_search]\nengin = "lancedb"\n', ["'engin'", '[vector_search]', "'engine'"]),
    ],
)
def test_unknown_keys_in_the_config_file(clean_env, tmp_path, text, needles):
    path = tmp_path / 'superduperdb.toml'
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        Config()
    for needle in [*needles, str(path.name)]:
        assert needle in str(info.value)
    clean_env.setenv('SUPERDUPERDB_CONFIG', str(path))  # named explicitly: the same
    with pytest.raises(ConfigError, match=str(path)):
        Config()


def test_a_config_file_that_is_not_there(clean_env, tmp_path):
    clean_env.setenv('SUPERDUPERDB_CONFIG', 'nosuch.toml')
    with pytest.raises(ConfigError, match="SUPERDUPERDB_CONFIG names 'nosuch.toml', which is not a file"):
        Config()


def test_bad_choices_are_refused_where_they_are_set(clean_env, tmp_path):
    (tmp_path / 'superduperdb.toml').write_text('[vector_search]\nengine = "faiss"\n')
    with pytest.raises(ConfigError, match=r'vector_search.engine \(config file .*inmemory, lancedb'):
        Config()
    (tmp_path / 'superduperdb.toml').unlink()
    clean_env.setenv('SUPERDUPERDB_VECTOR_SEARCH__ENGINE', 'faiss')
    with pytest.raises(ConfigError, match='SUPERDUPERDB_VECTOR_SEARCH__ENGINE'):
        Config()
    clean_env.delenv('SUPERDUPERDB_VECTOR_SEARCH__ENGINE')
    with (
        pytest.raises(ConfigError, match='one of inmemory, lancedb'),
        CFG.override(**{'vector_search.engine': 'faiss'}),
    ):
        pass
    assert CFG.vector_search.engine == 'inmemory'
    with pytest.raises(ConfigError, match="one of local, dask; got 'dsak'. Did you mean 'dask'"):
        Config(cluster={'executor': 'dsak'})
    with pytest.raises(ConfigError, match='log_level'):
        Config(log_level='LOUD')
    assert Config(log_level='debug').log_level == 'DEBUG'
    watcher = Watcher(model=superduper(lambda x: x, identifier='m'), key='x', select=Collection('t').find())
    with pytest.raises(ComponentError, match='engine= is one of inmemory, lancedb'):
        VectorIndex('v', indexing_watcher=watcher, engine='faiss')


def test_engine_choices_match_the_engines():
    from superduperdb.vector_search import ENGINES

    assert tuple(sorted(ENGINES)) == VECTOR_ENGINES  # noqa: SIM300


LOGS = """
from superduperdb import Collection, superduper
db = superduper('sqlite:///:memory:')
db.execute(Collection('t').insert_many([{'x': 'ab'}, {'x': None}]))
superduper(len, identifier='length').predict(X='x', db=db, select=Collection('t').find())
print('done')
"""


def test_the_log_level_is_applied(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith('SUPERDUPERDB_')}
    env['PYTHONPATH'] = str(ROOT)

    def run(**extra: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, '-c', LOGS], cwd=tmp_path, env={**env, **extra}, capture_output=True, text=True
        )

    quiet = run()
    assert quiet.returncode == 0 and quiet.stdout == 'done\n'
    assert 'added model/length/0' not in quiet.stderr
    assert '1 failed (of 2)' in quiet.stderr  # warnings show by default
    loud = run(SUPERDUPERDB_LOG_LEVEL='DEBUG')
    assert loud.returncode == 0 and loud.stdout == 'done\n'  # logs on stderr, not stdout
    assert 'INFO superduperdb.datalayer.components: added model/length/0' in loud.stderr
    assert 'DEBUG superduperdb.predict.over_query: batch at 0 failed' in loud.stderr


def test_a_job_whose_rows_failed_says_so(db, table_name, tmp_path):
    coll = Collection(table_name)
    db.execute(coll.insert_many([{'x': 1}, {'x': 2}, {'x': 3}, {'x': 4}]))

    def picky(x):
        if x % 2 == 0:
            raise ValueError('even')
        return x

    job = superduper(picky, identifier='picky').predict(X='x', db=db, select=coll.find(), watch=True)
    assert job.status == 'success'
    assert job.outcome == 'success, 2 rows failed'
    assert db.jobs()[0].outcome == 'success, 2 rows failed'
    assert 'success, 2 rows failed' in repr(db.jobs())
    done = db.execute(coll.insert_one({'x': 5}))
    assert [j.outcome for j in done.jobs] == ['success']
    if db.spec is not None and not db.databackend.single_writer:  # the CLI reads the same records
        env = {**os.environ, 'COLUMNS': '250', 'SUPERDUPERDB_ARTIFACT_STORE': CFG.artifact_store or ''}
        out = subprocess.run(
            [sys.executable, '-m', 'superduperdb', 'jobs', '--uri', db.spec['data_backend']],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0, out.stderr
        assert 'success, 2 rows failed' in out.stdout


def test_values_are_converted_and_checked_wherever_they_are_set(clean_env, tmp_path):
    """Text from the environment is parsed to each setting's type; a value of the wrong type or
    out of bounds is refused naming the setting, its source and what it takes."""
    clean_env.setenv('SUPERDUPERDB_CHUNK_SIZE', 'lots')
    with pytest.raises(
        ConfigError,
        match=r"\(environment variable SUPERDUPERDB_CHUNK_SIZE\): expected a whole number, got 'lots'",
    ):
        Config()
    clean_env.delenv('SUPERDUPERDB_CHUNK_SIZE')
    (tmp_path / 'superduperdb.toml').write_text('[cluster]\nbackfill_partitions = 0\n')
    with pytest.raises(ConfigError, match=r'cluster.backfill_partitions \(config file .*at least 1; got 0'):
        Config()
    (tmp_path / 'superduperdb.toml').write_text('cluster = "dask"\n')
    with pytest.raises(ConfigError, match=r'Bad setting cluster .*takes a table .*executor, dask_scheduler'):
        Config()
    (tmp_path / 'superduperdb.toml').unlink()

    clean_env.setenv('SUPERDUPERDB_SERVER__PUBLIC_DOCS', 'yes')
    clean_env.setenv('SUPERDUPERDB_DOWNLOADS__SCHEMES', '["https", "s3"]')
    clean_env.setenv('SUPERDUPERDB_SERVER__FILE_ROOTS', '/srv/a, /srv/b')
    clean_env.setenv('SUPERDUPERDB_VECTOR_SEARCH__PROBE_FRACTION', '0.05')
    clean_env.setenv('SUPERDUPERDB_VECTOR_SEARCH__REFINE_FACTOR', '')  # empty: unset (None)
    clean_env.setenv('SUPERDUPERDB_CLUSTER', '{"executor": "dask", "heartbeat": 2}')  # a whole group
    clean_env.setenv('SUPERDUPERDB_CLUSTER__HEARTBEAT', '3')  # a single setting wins over the group
    config = Config()
    assert config.server.public_docs is True
    assert config.downloads.schemes == ['https', 's3']
    assert config.server.file_roots == ['/srv/a', '/srv/b']
    assert config.vector_search.probe_fraction == 0.05
    assert config.vector_search.refine_factor is None
    assert (config.cluster.executor, config.cluster.heartbeat) == ('dask', 3.0)
    clean_env.setenv('SUPERDUPERDB_VECTOR_SEARCH__PROBE_FRACTION', '2')
    with pytest.raises(ConfigError, match='PROBE_FRACTION.*must be at most 1; got 2.0'):
        Config()


def test_assignments_in_code_are_checked_and_leave_nothing_half_set(clean_env):
    config = Config()
    with pytest.raises(ConfigError, match=r"chunk_size \(code\): expected a whole number, got 'x'"):
        config.chunk_size = 'x'
    assert config.chunk_size == 1000
    with pytest.raises(ConfigError, match="Unknown setting 'chunk_sise' .*Did you mean 'chunk_size'"):
        config.chunk_sise = 5
    with pytest.raises(ConfigError, match="Unknown setting 'cluster.executr'.*Did you mean 'executor'"):
        config.cluster.executr = 'dask'
    with pytest.raises(ConfigError, match='server.port.*at most 65535'):
        config.server = {'host': '0.0.0.0', 'port': 70000}
    assert (config.server.host, config.server.port) == ('127.0.0.1', 3223)  # not half set
    config.chunk_size = '250'  # text is parsed as from the environment
    config.cluster = {'executor': 'dask'}  # merged into the group
    assert (config.chunk_size, config.cluster.executor, config.cluster.heartbeat) == (250, 'dask', 5.0)
    with (
        pytest.raises(ConfigError, match="Unknown setting 'cluster.nosuch'"),
        config.override(**{'chunk_size': 7, 'cluster.nosuch': 1}),
    ):
        pass
    assert config.chunk_size == 250  # the override's first change was undone


def test_secrets_are_masked_when_printed(clean_env):
    clean_env.setenv('SUPERDUPERDB_SERVER__TOKEN', 'writer-secret')
    clean_env.setenv('SUPERDUPERDB_SERVER__READ_TOKEN', 'reader-secret')
    clean_env.setenv('SUPERDUPERDB_OPENAI__API_KEY', 'sk-secret')
    clean_env.setenv('SUPERDUPERDB_METADATA_STORE', 'postgresql://bob:pw-secret@db.example/meta')
    config = Config()
    assert config.server.token == 'writer-secret'
    shown = repr(config) + repr(config.to_dict(hide_secrets=True))
    assert 'secret' not in shown and shown.count("'***'") == 6
    assert shown.count('postgresql://bob:***@db.example/meta') == 2
    assert config.to_dict()['server']['read_token'] == 'reader-secret'
    out = subprocess.run(
        [sys.executable, '-m', 'superduperdb', 'config'],
        env={**os.environ, 'PYTHONPATH': str(ROOT)},
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert '"read_token": "***"' in out.stdout and 'secret' not in out.stdout
    assert '"metadata_store": "postgresql://bob:***@db.example/meta"' in out.stdout
