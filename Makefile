# Two commands from a fresh clone:
#   make test   create .venv, install the project with its test extra, run ruff and the whole suite
#   make run    the same environment, then T01 (MNIST, simple network) with its defaults
#   make bench  where the time goes: each lesson against its limit, offline, on full-size stand-ins (--synthetic)
PYTHON ?= python3
VENV   := .venv
ifeq ($(OS),Windows_NT)
  BIN := $(VENV)/Scripts
else
  BIN := $(VENV)/bin
endif
STAMP := $(VENV)/.installed

.PHONY: test run lint bench clean-venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -e ".[test]"
	@touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m ruff check .
	$(BIN)/python -m pytest -n auto  # one worker per CPU core (pytest-xdist)

run: $(STAMP)
	$(BIN)/python T01_mnist_nn/mnist_nn.py $(ARGS)

lint: $(STAMP)
	$(BIN)/python -m ruff check .

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_lessons.py --synthetic $(ARGS)

clean-venv:
	rm -rf $(VENV)
