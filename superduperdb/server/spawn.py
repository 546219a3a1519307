"""``superduperdb serve`` in a process of its own, started and waited for.

For scripts, tests and benchmarks that need a real server process (killed, restarted, several
of them on one database); :func:`superduperdb.server.app.running` serves in a thread instead.

>>> port = free_port()
>>> 0 < port < 65536
True
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from superduperdb.base.exceptions import ConnectionFailed


def free_port(host: str = '127.0.0.1') -> int:
    """A TCP port nothing listens on now (the operating system's choice)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def serve_process(
    uri: str,
    *,
    env: dict[str, str],
    log: Path,
    port: int | None = None,
    timeout: float = 90.0,
) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``superduperdb serve --uri uri`` with ``env`` added to this process's environment
    (its token, artifact store, ...), its output appended to ``log`` (a pipe nobody reads would
    fill and stop the server); returns ``(process, url)`` once ``GET /health`` answers.

    Raises :class:`ConnectionFailed`, with the end of the log, if the process exits first or
    does not answer within ``timeout`` seconds (then it is killed).
    """
    import httpx

    port = port or free_port()
    with log.open('ab') as out:
        process = subprocess.Popen(
            [sys.executable, '-m', 'superduperdb', 'serve', '--uri', uri, '--port', str(port)],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f'http://127.0.0.1:{port}'
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            if httpx.get(f'{url}/health', timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.05)
    exited = process.poll() is not None
    if not exited:
        process.kill()
        process.wait()
    raise ConnectionFailed(
        f'superduperdb serve on port {port} {"exited" if exited else f"did not answer in {timeout:g} s"}; '
        f'the end of its log ({log}):\n{log.read_text(errors="replace")[-3000:]}',
        host='127.0.0.1',
        port=port,
    )
