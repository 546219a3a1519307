"""The user guides. A package, so that ``docs/conftest.py`` imports as ``docs.conftest`` and does
not clash with ``tests/conftest.py`` when pytest collects both (``--doctest-modules``)."""
