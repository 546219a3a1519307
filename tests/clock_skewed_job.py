"""Run in a subprocess by test_search_drift.py: a job on "another host" whose clock is behind.

Usage: python -m tests.clock_skewed_job <database uri> <clock offset s> <job seconds>
Prints the job's id, then runs it here (the local executor) for <job seconds>, beating.
"""

from __future__ import annotations

import socket
import sys
import time


def main(uri: str, offset: float, seconds: float) -> None:
    real = time.time
    time.time = lambda: real() + offset  # this host's clock
    socket.gethostname = lambda: 'another-host'  # so that no process can look this one up by pid

    from superduperdb import superduper
    from superduperdb.jobs.job import task

    @task('sleepy')
    def sleepy(db, job):  # type: ignore[no-untyped-def]
        time.sleep(seconds)
        return {'slept': seconds}

    db = superduper(uri)
    job = db.new_job('sleepy')
    print(job.id, flush=True)
    db.submit_jobs([job])
    db.close()


if __name__ == '__main__':
    main(sys.argv[1], float(sys.argv[2]), float(sys.argv[3]))
