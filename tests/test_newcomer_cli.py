"""A newcomer's first hour at the command line (issue 32, items 6, 12, 14, 16 and 17): the
commands and one-liners of the docs, run as a newcomer runs them, in a fresh folder."""

from __future__ import annotations

import functools
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
import tomllib
from pathlib import Path

import pytest

from superduperdb import CFG, Collection, Watcher, superduper
from superduperdb.base.exceptions import ConfigError, MissingDependencyError
from superduperdb.server.spawn import free_port
from tests.helpers import run_cli_80_columns

ROOT = Path(__file__).resolve().parents[1]
#: ``superduperdb <args>`` in ``cwd``, on an 80-column terminal, given up after 60 s by default.
run_cli = functools.partial(run_cli_80_columns, timeout=60)


def run_python(code: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, '-c', textwrap.dedent(code)],
        cwd=cwd,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
    )


def without(tmp_path: Path, *modules: str) -> dict[str, str]:
    """An environment in which ``modules`` cannot be imported, as where their extra is missing."""
    shim = tmp_path / 'missing'
    shim.mkdir(exist_ok=True)
    for module in modules:
        (shim / f'{module}.py').write_text(f'raise ImportError("No module named {module!r}")\n')
    return {'PYTHONPATH': os.pathsep.join([str(shim), str(ROOT)])}


def error_lines(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


# ----- item 6: SUPERDUPERDB_LOG_LEVEL=DEBUG says what runs, never the data ---------------------


def test_debug_log_says_what_an_insert_a_find_and_a_job_run_without_the_values(tmp_path):
    secret = 'hunter2-do-not-log'
    result = run_python(
        f"""
        from superduperdb import superduper, Collection, Watcher
        db = superduper('sqlite:///shop.db')
        coll = Collection('customers')
        db.execute(coll.insert_many([{{'n': i, 'card': {secret!r}}} for i in range(7)]))
        db.add(Watcher(model=superduper(lambda n: n + 1, identifier='plus'), key='n', select=coll.find()))
        print(len(list(db.execute(coll.find({{'card': {secret!r}}})))))
        """,
        tmp_path,
        env={'SUPERDUPERDB_LOG_LEVEL': 'DEBUG'},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == '7'
    log = result.stderr
    assert secret not in log  # neither in a statement nor in a query's description
    assert 'superduperdb.sql: INSERT INTO customers' in log and '[7 rows]' in log  # statements
    assert 'SELECT customers._id' in log
    assert "execute Insert on 'customers', 7 rows" in log
    assert "execute Find on 'customers', filtering on card" in log
    assert "wrote 7 rows to 'customers'" in log  # chunks written and read, with counts
    assert "read a chunk of 7 rows from 'customers'" in log
    assert "a chunk of 7 rows of 'customers' done: plus" in log
    for step in (
        'submitted: predict of watcher/plus@customers.n',
        'started: predict',
        'ended: success (7/7)',
    ):
        assert step in log, step


def test_the_default_log_level_stays_quiet(tmp_path):
    result = run_python(
        """
        from superduperdb import superduper, Collection
        db = superduper('sqlite:///shop.db')
        db.execute(Collection('t').insert_one({'n': 1}))
        db.execute(Collection('t').find())
        """,
        tmp_path,
        env={'SUPERDUPERDB_LOG_LEVEL': 'WARNING'},
    )
    assert result.returncode == 0 and result.stderr == ''


# ----- item 12: superduperdb ui / serve fail in one line, before anything is printed ---------------


@pytest.fixture
def existing_db(tmp_path):
    superduper(f'sqlite:///{tmp_path}/db.sqlite').close()
    return f'sqlite:///{tmp_path}/db.sqlite'


def test_ui_on_a_taken_port_is_one_line_with_a_port_hint_and_no_token(tmp_path, existing_db):
    with socket.socket() as taken:
        taken.bind(('127.0.0.1', 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli('ui', '--uri', existing_db, '--port', str(port), cwd=tmp_path)
    assert result.returncode == 1
    (line,) = error_lines(result)
    assert line.startswith(f'Error: Port {port} on 127.0.0.1 is in use')
    assert 'superduperdb ui --port ' in line
    assert 'token' not in result.stderr and 'Traceback' not in result.stderr


def test_ui_and_serve_refuse_a_port_out_of_range_in_one_line(tmp_path, existing_db):
    for command in (['ui'], ['serve', '--insecure']):
        result = run_cli(*command, '--uri', existing_db, '--port', '99999', cwd=tmp_path)
        assert result.returncode == 1
        assert error_lines(result) == ['Error: --port 99999 is not a port: use a number from 1 to 65535.']


def test_serve_and_ui_without_the_server_extra_name_it(tmp_path, existing_db):
    env = without(tmp_path, 'fastapi', 'uvicorn')
    for command in ('serve', 'ui'):
        result = run_cli(command, '--uri', existing_db, '--port', str(free_port()), cwd=tmp_path, env=env)
        assert result.returncode == 1
        (line,) = error_lines(result)
        assert line.startswith('Error: ') and "pip install 'superduperdb[server]'" in line, line


def test_ui_in_a_folder_without_a_database_says_so_and_creates_none(tmp_path):
    try:
        result = run_cli('ui', '--port', str(free_port()), cwd=tmp_path, timeout=30)
    except subprocess.TimeoutExpired:  # the dashboard started over a new, empty database
        pytest.fail('superduperdb ui served a database it created')
    assert result.returncode == 1
    (line,) = error_lines(result)
    assert line.startswith('Error: No database file at .superduperdb/db.sqlite')
    assert 'does not create one' in line and 'superduperdb demo' in line
    assert list(tmp_path.iterdir()) == []


# ----- item 14: progress while a job runs; status in 80 columns ------------------------------------


def test_a_small_backfill_shows_its_total_at_once_and_moves_within_its_chunk(tmp_path):
    """40 rows are one chunk of 1000: the record said 0/? until the job ended."""
    uri = f'sqlite:///{tmp_path}/p.db'
    db = superduper(uri)
    coll = Collection('slow_rows')
    db.execute(coll.insert_many([{'n': i} for i in range(40)]))

    def slow(n):
        time.sleep(0.03)
        return n

    seen: list[tuple[str, str]] = []
    stop = threading.Event()

    def watch() -> None:
        other = superduper(uri)
        try:
            while not stop.is_set():
                seen.extend(
                    (job.status, job.progress) for job in other.jobs(limit=5) if job.method == 'predict'
                )
                time.sleep(0.02)
        finally:
            other.close()

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        db.add(Watcher(model=superduper(slow, identifier='slow', batch_size=4), key='n', select=coll.find()))
    finally:
        stop.set()
        watcher.join(30)
    (job,) = [job for job in db.jobs(limit=5) if job.method == 'predict']
    db.close()
    assert (job.status, job.progress) == ('success', '40/40')
    running = [progress for status, progress in seen if status == 'running']
    assert running, seen
    # the total is written with the first progress, 0.25 s in (before, '0/?' until the job ended)
    counted = [p.endswith('/40') for p in running]
    assert True in counted and all(counted[counted.index(True) :]), running
    assert sum(counted) > len(counted) / 2, running
    assert any(0 < int(p.split('/')[0]) < 40 and p.endswith('/40') for p in running), running


@pytest.fixture
def watched(tmp_path):
    uri = f'sqlite:///{tmp_path}/status.db'
    db = superduper(uri)
    coll = Collection('customer_reviews')
    db.execute(coll.insert_many([{'text': f'review {i}'} for i in range(5)]))
    db.add(Watcher(model=superduper(len, identifier='review_length'), key='text', select=coll.find()))
    db.close()
    return uri


def test_status_fits_80_columns_with_its_headers_whole(tmp_path, watched):
    result = run_cli('status', '--uri', watched, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert max(map(len, lines)) <= 80, result.stdout
    header = next(line for line in lines if 'watcher' in line)
    for name in ('watcher', 'rows', 'current', 'backlog', 'failed', 'lag s'):
        assert name in header, (name, header)
    assert 'notes' not in header  # only when a watcher has one
    row = next(line for line in lines if 'review_length' in line)
    assert row.split()[:5] == ['review_length@customer_reviews.text', '5', '5', '0', '0']  # whole


def test_status_json_keeps_every_field(tmp_path, watched):
    import json

    result = run_cli('status', '--uri', watched, '--json', cwd=tmp_path)
    (row,) = json.loads(result.stdout)
    assert {'stale', 'queued', 'table_missing', 'jobs', 'active', 'compared_s_ago'} <= set(row)
    assert (row['rows'], row['current'], row['backlog']) == (5, 5, 0)


def test_status_notes_say_what_is_not_as_usual():
    from superduperdb.cli import _status_notes

    usual = {'watcher': 'm@t.x', 'table': 't', 'active': True, 'stale': 0, 'queued': 0, 'jobs': 0}
    assert _status_notes({**usual, 'table_missing': False}) == ''
    assert _status_notes({**usual, 'table_missing': True, 'stale': 3, 'queued': 2}) == (
        'table missing, 3 stale, 2 queued'
    )
    assert _status_notes({**usual, 'active': False, 'jobs': 1}) == 'inactive, 1 jobs'
    assert _status_notes({**usual, 'watcher': 'mine'}) == 'on t'


# ----- item 16: a typo in a path is an error, not a new folder -------------------------------------


@pytest.mark.parametrize('uri', ['sqlite:///nodir/x.db', 'duckdb:///nodir/x.duckdb'])
def test_a_database_file_in_a_missing_folder_is_an_error_naming_it(tmp_path, monkeypatch, uri):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r'The folder nodir does not exist .*mkdir -p nodir.*\?create=true'):
        superduper(uri)
    assert list(tmp_path.iterdir()) == []


def test_a_file_lake_in_a_missing_folder_is_an_error(tmp_path):
    pytest.importorskip('pyarrow')
    with pytest.raises(ConfigError, match=f'The folder {tmp_path}/nodir does not exist'):
        superduper(f'file://{tmp_path}/nodir/lake')
    assert list(tmp_path.iterdir()) == []
    lake = superduper(f'file://{tmp_path}/lake')  # the lake's own folder is made: its parent is there
    lake.close()
    assert (tmp_path / 'lake').is_dir()


def test_the_cli_names_the_missing_folder_in_one_line(tmp_path):
    result = run_python("from superduperdb import superduper; superduper('sqlite:///nodir/x.db')", tmp_path)
    assert result.returncode == 1 and 'The folder nodir does not exist' in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_asking_to_create_makes_the_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    db = superduper('sqlite:///new/x.db?create=true')
    db.execute(Collection('t').insert_one({'n': 1}))
    db.close()
    assert (tmp_path / 'new' / 'x.db').is_file()
    assert superduper('sqlite:///new/x.db').execute(Collection('t').count()) == 1  # found again as is
    with pytest.raises(ConfigError, match='create=true or create=false'):
        superduper('sqlite:///other/x.db?create=maybe')


def test_the_default_embedded_database_is_still_made(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with CFG.override(data_backend='sqlite:///./.superduperdb/db.sqlite', artifact_store=None):
        superduper().close()
    assert (tmp_path / '.superduperdb' / 'db.sqlite').is_file()


# ----- item 17: mongomock:// comes with the mongodb extra ----------------------------------------


def test_mongomock_is_part_of_the_mongodb_extra():
    extras = tomllib.loads((ROOT / 'pyproject.toml').read_text())['project']['optional-dependencies']
    assert any(r.startswith('mongomock') for r in extras['mongodb'])


def test_mongomock_missing_names_the_mongodb_extra(tmp_path):
    result = run_python(
        "from superduperdb import superduper; superduper('mongomock://shop')",
        tmp_path,
        env=without(tmp_path, 'mongomock'),
    )
    assert result.returncode == 1
    assert "pip install 'superduperdb[mongodb]'" in result.stderr
    assert MissingDependencyError.__name__ in result.stderr
