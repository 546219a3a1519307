"""The journal of a vector index: which update jobs other processes have finished, in order.

Which jobs another process has not seen is told by the index's *journal*, a record in the
metadata store that each finished update appends its job id to, numbered in order (no
clock is compared: processes whose clocks differ agree on the numbers). A process that fell
behind the journal's last entries, or finds a ``verify`` entry (the reconcile repaired
outputs without update jobs), checks its engine against the outputs instead
(:meth:`superduperdb.vector_search.indexes.VectorIndexes.verify`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from superduperdb.datalayer.datalayer import Datalayer
    from superduperdb.jobs.job import Job

_JOURNAL = 100  # update-job ids a journal keeps: a process further behind verifies instead
VERIFY = 'verify'  # a journal entry that asks every process to check its engine against the outputs


def _counter(identifier: str, kind: str = 'vector_index') -> str:
    """The name of index ``identifier``'s journal record among the metadata store's positions
    (``kind``: ``keyword_index`` for a keyword index's BM25 engines)."""
    return f'{kind}:{identifier}'


@dataclass(frozen=True)
class _Journal:
    """The last entries appended to an index's journal: ``seq`` is the number of the last one.

    Stored as JSON in one metadata record, appended to by compare-and-swap, so every process
    reads the same order whatever its clock says.
    """

    seq: int = 0
    entries: tuple[str, ...] = ()

    @classmethod
    def parse(cls, record: str | None) -> _Journal:
        if record is None:
            return cls()
        try:
            data = json.loads(record)
            return cls(int(data['seq']), tuple(str(e) for e in data['entries']))
        except (ValueError, TypeError, KeyError):  # written by a version before journals
            return cls(-1)

    def after(self, seq: int) -> tuple[list[str], bool]:
        """The entries after ``seq``, and whether the journal still holds all of them."""
        first = self.seq - len(self.entries) + 1  # the number of the oldest entry kept
        if self.seq < 0 or seq < first - 1 or seq > self.seq:
            return list(self.entries), False
        return list(self.entries[seq - first + 1 :]), True

    def append(self, entry: str) -> str:
        entries = (*self.entries, entry)[-_JOURNAL:]
        return json.dumps({'seq': max(self.seq, 0) + 1, 'entries': entries}, separators=(',', ':'))


def append_to_journal(db: Datalayer, identifier: str, entry: str, kind: str = 'vector_index') -> None:
    """Append ``entry`` (an update job's id, or :data:`VERIFY`) to index ``identifier``'s journal."""
    name = _counter(identifier, kind)
    while True:
        record = db.metadata.position(name)
        if db.metadata.swap_position(name, record, _Journal.parse(record).append(entry)):
            return


def unseen(db: Datalayer, record: str | None, seq: int, applied: set[str]) -> tuple[list[Job], bool, int]:
    """What a process in step with entry ``seq`` has to do to be in step with the journal
    ``record`` (as :meth:`MetadataStore.position` read it): ``(update jobs to apply, in the
    journal's order; whether to check the engine against the outputs instead or as well; the
    journal's last entry number)``. A check is due when the process fell behind what the
    journal keeps, when it holds a :data:`VERIFY` entry, or when a job record is gone."""
    from superduperdb.jobs.job import Job

    journal = _Journal.parse(record)
    todo, complete = journal.after(seq)
    if not complete or VERIFY in todo:
        return [], True, journal.seq
    todo = [job_id for job_id in todo if job_id not in applied]
    if not todo:
        return [], False, journal.seq
    found = db.metadata.jobs({'_id': {'$in': todo}})
    order = {job_id: i for i, job_id in enumerate(todo)}
    jobs = [Job.from_record(r, db) for r in sorted(found, key=lambda r: order[r['_id']])]
    return jobs, len(found) < len(todo), journal.seq
