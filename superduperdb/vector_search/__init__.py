"""Vector search: engines behind one small interface (``VectorEngine``), chosen by name.

Engines: ``inmemory`` (exact, numpy) and ``lancedb`` (persistent, with an ANN index once a
table is large). Each is imported only when used, so ``import superduperdb`` never imports
LanceDB.
"""

from superduperdb.vector_search.base import ENGINES, MEASURES, VectorEngine, engine_from_config

__all__ = ['ENGINES', 'MEASURES', 'VectorEngine', 'engine_from_config']
