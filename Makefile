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

.PHONY: train test venv clean-venv report report-only

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

## make report: full runs of every committed config, their learning-rate sweeps, then reports/REPORT.md
REPORT_CONFIGS ?= softmax sigmoid relu
report: $(STAMP)
	set -e; for c in $(REPORT_CONFIGS); do \
	  $(PY) -m nnhw.train configs/$$c.toml; \
	  $(PY) -m nnhw.sweep configs/$$c.toml; \
	done
	$(PY) -m nnhw.report

## make report-only: rebuild reports/REPORT.md from the runs already in tb_logs/
report-only: $(STAMP)
	$(PY) -m nnhw.report
