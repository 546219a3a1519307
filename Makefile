# make test: install everything the tests need, then run the whole suite.
# make check: lint and type-check.
PYTHON ?= python

.PHONY: install test check demo

install:
	$(PYTHON) -m pip install --quiet torch==2.13.0
	$(PYTHON) -m pip install --quiet -e '.[all,test]'

test: install
	$(PYTHON) -m pytest

check:
	$(PYTHON) -m ruff check superduperdb tests benchmarks
	$(PYTHON) -m ruff format --check superduperdb tests benchmarks
	$(PYTHON) -m mypy

demo: install
	superduperdb demo
