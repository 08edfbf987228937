# Set-up is part of the product: `make demo` and `make test` each do all of it on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
VIDEO  := /usr/share/doc/opencv-doc/examples/data/vtest.avi

.PHONY: install system-data demo test test-fast check lint format clean

install: $(STAMP) system-data  ## virtual env with the pinned dependencies + the built-in datasets

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

# Debian's Fashion-MNIST (and the opencv-doc sample video); without apt the code downloads Fashion-MNIST instead.
system-data:
	@if [ ! -f $(FMNIST) ] || [ ! -f $(VIDEO) ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist opencv-doc >/dev/null \
	    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist opencv-doc >/dev/null; } \
	    || echo "warning: apt-get could not install dataset-fashion-mnist; Fashion-MNIST will be downloaded"; \
	  else echo "note: no root apt-get; Fashion-MNIST will be read from data/ or downloaded"; fi; \
	fi

demo: install  ## the default job on the built-in dataset, CPU preset (a few minutes on 2 cores)
	$(BIN)/python train.py experiment=cpu

test: install  ## the whole test suite
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

check: lint  ## ruff + mypy + tests: run before every commit
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
