# Set-up is part of the product: `make demo` and `make test` each do all of it on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# FAISS build: cpu (faiss-cpu) or gpu (faiss-gpu-cu12); default: the one .venv has, else cpu. Never both: each
# installs the same `faiss` module, so switching (`make install FAISS=gpu`) uninstalls both, then installs one.
FAISS  ?= $(if $(wildcard $(VENV)/.installed-gpu),gpu,cpu)
ifeq ($(FAISS),cpu)
LOCK   := requirements-dev.lock
else ifeq ($(FAISS),gpu)
LOCK   := requirements-dev-gpu.lock
else
$(error FAISS=$(FAISS): use FAISS=cpu (faiss-cpu, the default) or FAISS=gpu (faiss-gpu-cu12))
endif
STAMP  := $(VENV)/.installed-$(FAISS)
FAISS_OTHER := $(if $(filter gpu,$(FAISS)),faiss-cpu,faiss-gpu-cu12)
# `make lock` compiles every lock from pyproject.toml alone, with pip-tools in a throwaway venv (Python 3.11).
# Existing pins are kept unless UPGRADE=1; each lock after the first is constrained to it, so shared pins agree.
LOCKENV := $(or $(TMPDIR),/tmp)/imgselect-lock-venv
PIP_COMPILE = CUSTOM_COMPILE_COMMAND="make lock" $(LOCKENV)/bin/pip-compile --quiet --allow-unsafe \
	--strip-extras --annotation-style=line --no-emit-index-url --no-emit-find-links $(if $(UPGRADE),--upgrade)
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
VIDEO  := /usr/share/doc/opencv-doc/examples/data/vtest.avi

.PHONY: install system-data demo test test-fast check lint format clean lock

install: $(STAMP) system-data  ## virtual env with the dev lock (FAISS=cpu|gpu) + the package + the built-in datasets

$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	rm -f $(VENV)/.installed*
	if $(BIN)/pip show --quiet $(FAISS_OTHER) 2>/dev/null; then \
	  $(BIN)/pip uninstall --quiet --yes faiss-cpu faiss-gpu-cu12; fi
	$(BIN)/pip install --quiet -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

lock:  ## recompile the four requirements*.lock from pyproject.toml (UPGRADE=1: newest versions allowed)
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11) and "make lock needs Python 3.11 (PYTHON=python3.11)")'
	rm -rf $(LOCKENV)
	$(PYTHON) -m venv $(LOCKENV)
	$(LOCKENV)/bin/pip install --quiet pip-tools==7.6.2
	$(PIP_COMPILE) --extra cpu --extra dev --extra slurm --extra joblib -o requirements-dev.lock pyproject.toml
	$(PIP_COMPILE) --extra cpu -c requirements-dev.lock -o requirements.lock pyproject.toml
	$(PIP_COMPILE) --extra gpu --extra dev --extra slurm --extra joblib -c requirements-dev.lock \
		-o requirements-dev-gpu.lock pyproject.toml
	$(PIP_COMPILE) --extra gpu -c requirements-dev-gpu.lock -o requirements-gpu.lock pyproject.toml
	rm -rf $(LOCKENV)

# Debian's Fashion-MNIST (and the opencv-doc sample video); without apt the code downloads Fashion-MNIST instead.
system-data:
	@if [ ! -f $(FMNIST) ] || [ ! -f $(VIDEO) ]; then \
	  if command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist opencv-doc >/dev/null \
	    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q dataset-fashion-mnist opencv-doc >/dev/null; } \
	    || echo "warning: apt-get could not install dataset-fashion-mnist; Fashion-MNIST will be downloaded"; \
	  else echo "note: no root apt-get; Fashion-MNIST will be read from data/ or downloaded"; fi; \
	fi

demo: install  ## the default job on the built-in dataset, CPU preset (measured on a fresh clone: 261 s on 2 cores, set-up included)
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
