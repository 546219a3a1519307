"""Model adapters, one module per framework, each imported only when used:

- :mod:`superduperdb.models.sklearn`: scikit-learn estimators and pipelines
- :mod:`superduperdb.models.function`: any Python callable
- :mod:`superduperdb.models.torch`: PyTorch modules (``torch`` extra)
- :mod:`superduperdb.models.sentence_transformers`: sentence-transformers models
- :mod:`superduperdb.models.transformers`: transformers pipelines
- :mod:`superduperdb.models.openai`: OpenAI-compatible embedding and chat APIs
"""
