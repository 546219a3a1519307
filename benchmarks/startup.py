"""Start-up: the first ``superduper()`` on the embedded default, and ``superduperdb --help``.

Each measurement is a new process (as a user's script or shell starts one), run ``--repeat``
times, alternating; the best and the median are printed:

- ``python``: the bare interpreter (``python -c pass``), the floor under everything else.
- ``sqlite3``: the hand-written equivalent of the embedded default: ``import sqlite3``, open
  the same database file (``.superduperdb/db.sqlite``) and read its schema.
- ``superduper()``: ``from superduperdb import superduper; superduper()`` on an existing
  ``.superduperdb`` SQLite file in the working directory; "in-process" is the time from before
  the import to after the call, measured inside the process; "wall" includes interpreter start.
- ``--help``: the ``superduperdb`` console script's help, wall time.

Modules are loaded from ``.pyc`` files as in a user's install: ``PYTHONDONTWRITEBYTECODE`` is
unset for the runs and one warm-up run of each compiles them.

    python benchmarks/startup.py --repeat 15
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CALL = (
    'import time; t = time.perf_counter(); from superduperdb import superduper; db = superduper(); '
    'print(time.perf_counter() - t)'
)
HAND = (
    'import time; t = time.perf_counter(); import sqlite3; c = sqlite3.connect(".superduperdb/db.sqlite"); '
    'c.execute("select count(*) from sqlite_master").fetchall(); print(time.perf_counter() - t)'
)


def timed(args: list[str], cwd: str, env: dict[str, str]) -> tuple[float, float | None]:
    """(wall seconds, the seconds the process printed, if any)."""
    started = time.perf_counter()
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f'{args} failed:\n{done.stderr}')
    wall = time.perf_counter() - started
    out = done.stdout.strip().splitlines()
    try:
        return wall, float(out[-1])
    except (IndexError, ValueError):
        return wall, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--repeat', type=int, default=15)
    args = parser.parse_args()

    env = {k: v for k, v in os.environ.items() if k != 'PYTHONDONTWRITEBYTECODE'}
    cli = str(Path(sys.executable).with_name('superduperdb'))
    with tempfile.TemporaryDirectory() as cwd:
        runs = {
            'python': [sys.executable, '-c', 'pass'],
            'sqlite3': [sys.executable, '-c', HAND],
            'superduper()': [sys.executable, '-c', CALL],
            '--help': [cli, '--help'],
        }
        for command in (runs['superduper()'], *runs.values()):  # makes the database; compiles .pyc files
            timed(command, cwd, env)
        walls: dict[str, list[float]] = {name: [] for name in runs}
        inner: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.repeat):
            for name, command in runs.items():
                wall, seconds = timed(command, cwd, env)
                walls[name].append(wall)
                if seconds is not None:
                    inner[name].append(seconds)
    load = ' / '.join(f'{x:.2f}' for x in os.getloadavg())
    print(f'{args.repeat} runs each, load average {load}; seconds, best / median')
    print(f'{"":14} {"wall":>16} {"in-process":>16}')
    for name in runs:
        w = walls[name]
        line = f'{name:14} {min(w):7.3f} / {statistics.median(w):6.3f}'
        if inner[name]:
            i = inner[name]
            line += f'  {min(i):7.3f} / {statistics.median(i):6.3f}'
        print(line)


if __name__ == '__main__':
    main()
