# make test         build .venv from the lock (requirements/test.lock) and run the whole suite.
# make test-latest  the same in .venv-latest with the newest releases the package's ranges allow.
# make lock         re-resolve requirements/test.lock (needs uv: pip install uv).
# make check        lint and type-check.
# make demo         install the package with every extra into .venv and run the demo.
#
# PYTHON is the interpreter that makes the virtualenvs; VENV=path picks another one
# (e.g. `make test VENV=$VIRTUAL_ENV` to use an environment you already have).
PYTHON ?= python3
VENV ?= .venv
LATEST ?= .venv-latest
LOCK := requirements/test.lock
# the CPU build on this machine's disk; on another machine pip takes it from PyPI
TORCH := torch==2.13.0

.PHONY: install test install-latest test-latest lock check demo

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(LATEST)/bin/python:
	$(PYTHON) -m venv $(LATEST)

install: $(VENV)/bin/python
	$(VENV)/bin/python -m pip install --quiet $(TORCH)
	$(VENV)/bin/python -m pip install --quiet -c $(LOCK) -e '.[all,test]'

# Test processes (pytest-xdist): one per core. Each works in a PostgreSQL schema and a MariaDB
# database of its own (tests/conftest.py); WORKERS=0 runs the suite in this process.
WORKERS ?= auto

test: install
	$(VENV)/bin/python -m pytest -n $(WORKERS)

# Newest allowed versions instead of the lock: what a user installing today gets. Prints the
# packages that differ from the lock, then runs the suite; a failure here is drift to fix
# (and then `make lock`), not a broken main. torch stays at the CPU build of requirements/test.in
# (a newer torch is a CUDA build of several GB).
install-latest: $(LATEST)/bin/python
	$(LATEST)/bin/python -m pip install --quiet $(TORCH)
	$(LATEST)/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager \
		-c requirements/test.in -e '.[all,test]'

test-latest: install-latest
	@$(LATEST)/bin/python -m pip freeze --exclude-editable \
		| $(PYTHON) requirements/drift.py $(LOCK)
	$(LATEST)/bin/python -m pytest -n $(WORKERS)

lock:
	uv pip compile pyproject.toml requirements/test.in --extra all --extra test \
		--python-version 3.11 --python-platform x86_64-manylinux_2_28 --no-header --upgrade \
		-o $(LOCK)

check: install
	$(VENV)/bin/python -m ruff check superduperdb tests benchmarks requirements
	$(VENV)/bin/python -m ruff format --check superduperdb tests benchmarks requirements
	$(VENV)/bin/python -m mypy

demo: install
	$(VENV)/bin/superduperdb demo
