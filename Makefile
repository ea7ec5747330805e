# The two commands a fresh machine needs (see README): `make demo` and `make test`.
# VENV may point elsewhere (CI keeps one per requirements hash, see .ci/run).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.physml-md-installed
PYTEST_ARGS ?=

.PHONY: setup demo test lint bench clean

setup: $(STAMP)

# Reinstall when pyproject.toml is newer than the last install (a fresh clone always is: the editable
# install then points at this checkout; packages already present are not downloaded again).
$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --progress-bar off -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) examples/demo.py --out demo_output

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf demo_output .pytest_cache .ruff_cache
