"""Model adapters, one module per framework, each imported only when used:

- :mod:`superduperdb.models.sklearn`: scikit-learn estimators and pipelines
- :mod:`superduperdb.models.function`: any Python callable
"""
