"""``superduper(x)``: the one entry point that turns what you have into superduperdb objects."""

from __future__ import annotations

import sys
from typing import Any

from superduperdb.base.exceptions import ConfigError


def superduper(item: Any = None, **kwargs: Any) -> Any:
    """Wrap ``item``: a database becomes a Datalayer, a model becomes a Model.

    Databases:

    - ``superduper()``: the embedded default (a SQLite file under ``./.superduperdb``);
    - a URI: ``'sqlite:///my.db'``, ``'duckdb:///my.duckdb'``, ``'postgresql://user@host/db'``,
      ``'mysql://user@host/db'``, ``'mongodb://host/db'``, ``'mongomock://name'``; ClickHouse,
      ``'chdb:///path'`` (in process) or ``'clickhouse://host'``; any URL whose SQLAlchemy
      dialect is installed (``'snowflake://...'``, see docs/warehouses.md);
    - a server URL, ``'http://127.0.0.1:3223'`` (``token=`` optional): a remote client;
    - an SQLAlchemy ``Engine``, a ``pymongo`` Database, a mongomock Database.

    Models (``identifier=`` and other Model settings may be passed as keywords):

    - a scikit-learn estimator or pipeline;
    - a ``torch.nn.Module``;
    - a sentence-transformers model, a transformers pipeline, an ``openai`` client;
    - any Python callable.

    >>> db = superduper('sqlite:///:memory:')
    >>> db.databackend.name
    'sqlite'
    """
    if isinstance(item, str) and item.startswith(('http://', 'https://')):
        from superduperdb.server.client import Client  # a superduperdb server

        return Client(item, **kwargs)
    if item is None or isinstance(item, str) or _is_database(item):
        if kwargs:
            raise ConfigError(f'superduper(<database>) takes no keyword arguments, got {sorted(kwargs)}.')
        from superduperdb.connect import connect

        return connect(item)
    module = type(item).__module__.split('.')[0]
    identifier = kwargs.pop('identifier', None)
    adapter = _ADAPTERS.get(module)
    if adapter is not None and adapter[0](item):
        import importlib

        module_name, _, class_name = adapter[1].partition(':')
        wrapper = getattr(importlib.import_module(module_name), class_name)
        wrap = wrapper if class_name == 'wrap' else wrapper.wrap
        return wrap(item, identifier=identifier, **kwargs)
    if module == 'sklearn' or (module != 'builtins' and hasattr(item, 'fit') and hasattr(item, 'get_params')):
        from superduperdb.models.sklearn import SklearnModel

        return SklearnModel(identifier or type(item).__name__, object=item, **kwargs)
    if 'torch' in sys.modules and _is_torch_module(item):  # torch already imported if item is a Module
        from superduperdb.models.torch import TorchModel

        return TorchModel.wrap(item, identifier=identifier, **kwargs)
    if callable(item):
        from superduperdb.models.function import FunctionModel

        name = identifier or getattr(item, '__name__', type(item).__name__)
        if name == '<lambda>':
            raise ConfigError('superduper(<lambda>) needs a name: superduper(f, identifier="my-model").')
        return FunctionModel(name, object=item, **kwargs)
    raise ConfigError(
        f'superduper() does not know how to wrap a {type(item).__module__}.{type(item).__qualname__}. '
        'It takes a database URI, an SQLAlchemy Engine, a pymongo Database, a scikit-learn '
        'estimator, a torch module, a sentence-transformers model, a transformers pipeline, '
        'an openai client or a Python callable.'
    )


def _is_torch_module(item: Any) -> bool:
    import torch

    return isinstance(item, torch.nn.Module)


# top-level package of the wrapped object -> (check, 'module:Class' whose .wrap() builds the model)
_ADAPTERS: dict[str, tuple[Any, str]] = {
    'sentence_transformers': (
        lambda item: True,
        'superduperdb.models.sentence_transformers:wrap',  # a SentenceTransformer or a CrossEncoder
    ),
    'transformers': (lambda item: hasattr(item, 'task'), 'superduperdb.models.transformers:PipelineModel'),
    'openai': (lambda item: hasattr(item, 'embeddings'), 'superduperdb.models.openai:OpenAIModel'),
}


def _is_database(item: Any) -> bool:
    module = type(item).__module__.split('.')[0]
    return module in ('sqlalchemy', 'pymongo', 'mongomock')
