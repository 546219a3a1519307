"""The fault-suite harness: a private PostgreSQL server that a test can kill and restart.

``private_postgres`` (a pytest fixture) starts a PostgreSQL 15 server of the test's own: a
data directory copied from one ``initdb`` made per session, on a free port, trust auth, in a
process group of its own. ``kill()`` sends SIGKILL to the whole group (postmaster and every
backend, as a crashed machine would lose them), ``start()`` starts it again on the same data
directory (PostgreSQL runs crash recovery), and the fixture always stops it at teardown.

The shared servers (127.0.0.1:5432) are never touched. initdb refuses to run as root, so when
the tests run as root (CI here) the server's programs run as the ``postgres`` OS user.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from superduperdb.server.spawn import free_port


def _pg_bin() -> Path:
    """The PostgreSQL server programs: ``SUPERDUPERDB_TEST_PG_BIN``, else the newest Debian install."""
    if os.environ.get('SUPERDUPERDB_TEST_PG_BIN'):
        return Path(os.environ['SUPERDUPERDB_TEST_PG_BIN'])
    installed = sorted(
        Path('/usr/lib/postgresql').glob('*/bin/initdb'),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
    )
    return installed[-1].parent if installed else Path('/usr/lib/postgresql/15/bin')


PG_BIN = _pg_bin()


def _as_owner() -> dict[str, object]:
    """Popen arguments that run a server program as an unprivileged user when we are root."""
    if os.geteuid() != 0:
        return {}
    return {'user': 'postgres', 'group': pwd.getpwnam('postgres').pw_gid}


def _chown(path: Path) -> None:
    if os.geteuid() == 0:
        entry = pwd.getpwnam('postgres')
        os.chown(path, entry.pw_uid, entry.pw_gid)


class PrivatePostgres:
    """One private PostgreSQL server; see the module docstring."""

    def __init__(self, template: Path) -> None:
        self.root = Path(tempfile.mkdtemp(prefix='sd_faults_pg_'))
        _chown(self.root)
        self.data = self.root / 'data'
        subprocess.run(['cp', '-a', str(template), str(self.data)], check=True)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f'postgresql://postgres@127.0.0.1:{self.port}/postgres'

    def start(self, timeout: float = 30.0) -> None:
        """Start the server (after a kill: crash recovery runs) and wait until it takes connections."""
        assert self.process is None or self.process.poll() is not None, 'already running'
        log = open(self.root / 'server.log', 'ab')  # noqa: SIM115 - the server writes it while it runs
        self.process = subprocess.Popen(
            [
                str(PG_BIN / 'postgres'),
                '-D',
                str(self.data),
                '-p',
                str(self.port),
                '-c',
                'listen_addresses=127.0.0.1',
                '-c',
                f'unix_socket_directories={self.root}',
                '-c',
                'fsync=off',  # only the server is killed, never the OS: the page cache survives
                '-c',
                'max_connections=100',
                '-c',
                'shared_buffers=16MB',
            ],  # fmt: skip
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so kill() reaches every backend
            **_as_owner(),  # type: ignore[arg-type]
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f'private PostgreSQL exited: {self.log()[-2000:]}')
            ready = subprocess.run(
                [str(PG_BIN / 'pg_isready'), '-h', '127.0.0.1', '-p', str(self.port), '-q'], check=False
            )
            if ready.returncode == 0:
                return
            time.sleep(0.05)
        raise RuntimeError(f'private PostgreSQL did not start in {timeout} s: {self.log()[-2000:]}')

    def kill(self) -> None:
        """SIGKILL the postmaster and all its backends at once (a crash, not a shutdown)."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        # backends are in the group too; wait until none holds the shared memory any more
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(self.process.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.02)

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        """Kill it (fast, nothing to keep) and remove its files."""
        self.kill()
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        path = self.root / 'server.log'
        return path.read_text(errors='replace') if path.exists() else ''


@pytest.fixture(scope='session')
def _postgres_template() -> Iterator[Path]:
    if not (PG_BIN / 'initdb').exists():
        pytest.skip(f'PostgreSQL server programs not found in {PG_BIN} (set SUPERDUPERDB_TEST_PG_BIN)')
    root = Path(tempfile.mkdtemp(prefix='sd_faults_template_'))
    _chown(root)
    data = root / 'data'
    subprocess.run(
        [str(PG_BIN / 'initdb'), '-D', str(data), '-A', 'trust', '-U', 'postgres', '--no-sync', '-E', 'UTF8'],
        check=True,
        stdout=subprocess.DEVNULL,
        **_as_owner(),  # type: ignore[arg-type]
    )
    yield data
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def private_postgres(_postgres_template: Path) -> Iterator[PrivatePostgres]:
    """A private PostgreSQL server, running; killed and removed at teardown whatever happened."""
    server = PrivatePostgres(_postgres_template)
    try:
        server.start()
        yield server
    finally:
        server.stop()
