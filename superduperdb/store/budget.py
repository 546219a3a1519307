"""Where the rate-limit budgets of API models live (see :mod:`superduperdb.base.budget`): a
record of the metadata store (``CFG.openai.budget = 'database'``, the default), on the
database server's clock, or Redis (``CFG.openai.budget = 'redis://...'``).

Every process that opens the database (local, Dask workers, the server, ``cdc``) finds the
same record under the same name, so one budget is honoured by all of them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from superduperdb.base.budget import Record, RedisRecord

if TYPE_CHECKING:
    from superduperdb.store.metadata import MetadataStore

#: budgets are internal records: the prefix keeps them out of the change-capture positions
PREFIX = '_superduper_budget:'


class MetadataRecord:
    """A budget record among the metadata store's positions, swapped by compare-and-swap."""

    def __init__(self, metadata: MetadataStore, name: str) -> None:
        self.metadata, self.name = metadata, PREFIX + name

    def read(self) -> str | None:
        return self.metadata.position(self.name)

    def swap(self, old: str | None, new: str) -> bool:
        return self.metadata.swap_position(self.name, old, new)

    def now(self) -> float:
        return self.metadata.now()


def budget_records(metadata: MetadataStore) -> Callable[[str], Record]:
    """A maker of shared budget records for this database, by budget name, as configured."""
    from superduperdb.base.config import CFG

    where = CFG.openai.budget
    if where == 'database':
        metadata.install()
        return lambda name: MetadataRecord(metadata, name)
    return lambda name: RedisRecord(where, PREFIX + name)
