"""Vector search: engines behind one small interface (``VectorEngine``), chosen by name, and
the vector indexes of a Datalayer built on them (:mod:`superduperdb.vector_search.indexes`).

Engines: ``inmemory`` (exact, numpy) and ``lancedb`` (persistent, with an ANN index once a
table is large). Each is imported only when used, so ``import superduperdb`` never imports
LanceDB; numpy is imported with the first engine (the names below are looked up lazily, so
that a Datalayer can hold its indexes without importing it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from superduperdb.vector_search.base import ENGINES, MEASURES, VectorEngine, engine_from_config

__all__ = ['ENGINES', 'MEASURES', 'VectorEngine', 'engine_from_config']


def __getattr__(name: str) -> Any:
    if name in __all__:
        from superduperdb.vector_search import base

        return getattr(base, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
