# The two commands a fresh machine needs (see README): `make demo` and `make test`.
# VENV may point elsewhere (CI keeps one per requirements hash, see .ci/run).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.physml-md-installed
PYTEST_ARGS ?=
# The second world CI proves (`make test-newest`): the newest torch physml-md supports, without openmm-torch.
NEWEST_VENV ?= .venv-newest
NEWEST_PY := $(NEWEST_VENV)/bin/python
NEWEST_STAMP := $(NEWEST_VENV)/.physml-md-installed

.PHONY: setup demo test test-newest lint bench clean

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

# `.[test]` lets pip take the newest torch the core requirements allow (no openmm-torch, whose extra pins
# torch 2.9.x); the TorchForce tests skip themselves there.
$(NEWEST_STAMP): pyproject.toml
	@test -x $(NEWEST_PY) || python3 -m venv $(NEWEST_VENV)
	$(NEWEST_PY) -m pip install --progress-bar off -e '.[test]'
	@touch $(NEWEST_STAMP)

test-newest: $(NEWEST_STAMP)
	@$(NEWEST_PY) -c "import importlib.util, torch; assert importlib.util.find_spec('openmmtorch') is None, \
		'openmmtorch is installed in $(NEWEST_VENV)'; print('torch', torch.__version__, 'without openmmtorch')"
	$(NEWEST_PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf demo_output .pytest_cache .ruff_cache
