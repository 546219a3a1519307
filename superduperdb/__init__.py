"""superduperdb: bring AI models to the database you already have.

>>> from superduperdb import superduper, Collection
>>> db = superduper('sqlite:///:memory:')
>>> _ = db.execute(Collection('notes').insert_many([{'text': 'a'}, {'text': 'b'}]))
>>> db.execute(Collection('notes').count())
2

Names are imported on first use, so ``import superduperdb`` stays fast and
pulls in no database driver, torch or lancedb.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from superduperdb.base.version import __version__ as __version__

_EXPORTS = {
    'CFG': 'superduperdb.base.config',
    'Collection': 'superduperdb.query.objects',
    'Component': 'superduperdb.components.component',
    'Datalayer': 'superduperdb.datalayer.datalayer',
    'Document': 'superduperdb.base.document',
    'Encodable': 'superduperdb.base.document',
    'Encoder': 'superduperdb.components.encoder',
    'EvaluationSet': 'superduperdb.components.evaluation',
    'KeywordIndex': 'superduperdb.components.keyword_index',
    'Metric': 'superduperdb.components.metric',
    'Model': 'superduperdb.components.model',
    'OpenAIEmbedding': 'superduperdb.models.openai',
    'SuperDuperError': 'superduperdb.base.exceptions',
    'Table': 'superduperdb.query.objects',
    'VectorIndex': 'superduperdb.components.vector_index',
    'Watcher': 'superduperdb.components.watcher',
    'superduper': 'superduperdb.superduper',
}

__all__ = [
    'CFG',
    'Collection',
    'Component',
    'Datalayer',
    'Document',
    'Encodable',
    'Encoder',
    'EvaluationSet',
    'KeywordIndex',
    'Metric',
    'Model',
    'OpenAIEmbedding',
    'SuperDuperError',
    'Table',
    'VectorIndex',
    'Watcher',
    'superduper',
]

if TYPE_CHECKING:
    from superduperdb.base.config import CFG
    from superduperdb.base.document import Document, Encodable
    from superduperdb.base.exceptions import SuperDuperError
    from superduperdb.components.component import Component
    from superduperdb.components.encoder import Encoder
    from superduperdb.components.evaluation import EvaluationSet
    from superduperdb.components.keyword_index import KeywordIndex
    from superduperdb.components.metric import Metric
    from superduperdb.components.model import Model
    from superduperdb.datalayer.datalayer import Datalayer
    from superduperdb.models.openai import OpenAIEmbedding
    from superduperdb.query.objects import Collection, Table
    from superduperdb.superduper import superduper


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
