# Two commands from a fresh clone:
#   make test   create .venv, install the project with its test extra, run ruff and every test that runs in
#               pytest's own processes (under 2 minutes here)
#   make test-processes  the tests that start real Python processes (torchrun, Ctrl-C, scripts run as programs)
#   make test-notebooks  every lesson notebook run top to bottom in a real Jupyter kernel, on stand-in data
#   make notebook   the same environment, then JupyterLab on T01's notebook (NB=... for another one)
#   make run    the same environment, then T01 (MNIST, simple network) with its defaults
#   make bench  where the time goes: each lesson against its limit, offline, on full-size stand-ins (--synthetic)
#   make test-floors  a second environment, .venv-floors, with the oldest versions pyproject.toml promises
#                     (pinned in constraints-floors.txt), and the whole suite run in it
PYTHON ?= python3
VENV   := .venv
ifeq ($(OS),Windows_NT)
  BIN := $(VENV)/Scripts
else
  BIN := $(VENV)/bin
endif
STAMP := $(VENV)/.installed

# The floors: the same install, constrained to the oldest versions we promise. torch 2.0.1 has wheels for
# Python 3.8 to 3.11 only; where python3 is newer, run e.g. `make test-floors FLOORS_PYTHON=python3.11`.
FLOORS_PYTHON      ?= $(PYTHON)
FLOORS_VENV        := .venv-floors
FLOORS_CONSTRAINTS := constraints-floors.txt
ifeq ($(OS),Windows_NT)
  FLOORS_BIN := $(FLOORS_VENV)/Scripts
else
  FLOORS_BIN := $(FLOORS_VENV)/bin
endif
FLOORS_STAMP := $(FLOORS_VENV)/.installed

.PHONY: test test-processes test-notebooks test-floors run notebook lint bench clean-venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -e ".[test]"
	@touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m ruff check .
	$(BIN)/python -m pytest -n auto -m "not processes and not notebooks"  # one worker per CPU core (pytest-xdist)

test-processes: $(STAMP)
	$(BIN)/python -m pytest -n auto -m processes

# --dist loadgroup: a notebook's tests share one worker, which runs the notebook once
test-notebooks: $(STAMP)
	$(BIN)/python -m pytest -n auto --dist loadgroup -m notebooks

# Rebuilt from empty (--clear) whenever pyproject.toml or the constraints change, so that nothing
# from an earlier set of pins is left behind.
$(FLOORS_STAMP): pyproject.toml $(FLOORS_CONSTRAINTS)
	$(FLOORS_PYTHON) -m venv --clear $(FLOORS_VENV)
	$(FLOORS_BIN)/python -m pip install -c $(FLOORS_CONSTRAINTS) -e ".[test]"
	@touch $(FLOORS_STAMP)

test-floors: $(FLOORS_STAMP)
	$(FLOORS_BIN)/python -m pytest -n auto --dist loadgroup

run: $(STAMP)
	$(BIN)/python T01_mnist_nn/mnist_nn.py $(ARGS)

NB ?= T01_mnist_nn/mnist_nn.ipynb
notebook: $(STAMP)
	$(BIN)/python -m jupyter lab --ServerApp.root_dir=. $(NB)  # the whole repository in its file browser

lint: $(STAMP)
	$(BIN)/python -m ruff check .

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_lessons.py --synthetic $(ARGS)

clean-venv:
	rm -rf $(VENV) $(FLOORS_VENV)
