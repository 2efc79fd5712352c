# nbcd: `make run` (the main job) and `make test` each set themselves up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# fixed BLAS/OpenMP threads: timings and results of the analysis stay steady on 2 cores
export OMP_NUM_THREADS ?= 1
export OPENBLAS_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1

.PHONY: install run test lint typecheck unit bench clean

install: $(STAMP)

$(STAMP): pyproject.toml examples/census/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' -e examples/census
	touch $(STAMP)

# the main job: the whole pipeline (lint, test, run, report, build) on the reference project
run: install
	cd examples/census && ../../$(BIN)/nbcd ci

lint: install
	$(BIN)/ruff check src tests bench examples/census/src examples/census/tests
	$(BIN)/ruff format --check src tests bench examples/census/src examples/census/tests

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/python -m pytest
	cd examples/census && ../../$(BIN)/python -m pytest

test: lint typecheck unit

bench: install
	$(BIN)/python bench/test_runner.py

clean:
	rm -rf $(VENV) build examples/census/build .pytest_cache .mypy_cache .ruff_cache
