"""Jobs and the executors that run them: ``local`` (foreground) and ``dask`` (a cluster)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from superduperdb.base.config import CFG
from superduperdb.base.exceptions import ConfigError

if TYPE_CHECKING:
    from superduperdb.jobs.local import Executor


def executor_from_config(executor: str | None = None, **kwargs: Any) -> Executor:
    """The executor ``CFG.cluster.executor`` names (``local`` or ``dask``)."""
    name = executor or CFG.cluster.executor
    if name == 'local':
        from superduperdb.jobs.local import LocalExecutor

        return LocalExecutor()
    if name == 'dask':
        from superduperdb.jobs.dask import DaskExecutor

        return DaskExecutor(kwargs.get('address') or CFG.cluster.dask_scheduler)
    raise ConfigError(f'Unknown executor {name!r} (cluster.executor): use "local" or "dask".')
