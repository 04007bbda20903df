# Plain runner: every target creates the virtual environment on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CONFIG ?= configs/relu.toml

# Read the MNIST copy beside the checkout (../shared/data) when there is one and
# NNHW_DATA_ROOT is not set already; otherwise configs download into data/.
ifneq ($(wildcard ../shared/data/MNIST/raw/train-images-idx3-ubyte),)
export NNHW_DATA_ROOT ?= $(abspath ../shared/data)
endif

.PHONY: train test venv clean-venv

# One-time set-up: a venv with nnhw (editable) and its dev extra.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(STAMP)

## make train [CONFIG=configs/relu.toml] [ARGS="section.key=value ..."]
train: $(STAMP)
	$(PY) -m nnhw.train $(CONFIG) $(ARGS)

## make test: the whole pytest suite
test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
