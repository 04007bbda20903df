# Plain runner: every target creates the virtual environment on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CONFIG ?= configs/relu.toml
# Both test tiers: two pytest-xdist processes of one thread each, a test file (and its module fixtures)
# to a process; the subprocesses the tests start inherit the one thread
PYTEST := OMP_NUM_THREADS=1 $(PY) -m pytest -n 2 --dist loadfile

# Read the MNIST copy beside the checkout (../shared/data) when there is one and
# NNHW_DATA_ROOT is not set already; otherwise configs download into data/.
ifneq ($(wildcard ../shared/data/MNIST/raw/train-images-idx3-ubyte),)
export NNHW_DATA_ROOT ?= $(abspath ../shared/data)
endif

.PHONY: train test test-all venv clean-venv report report-only

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

## make test: the fast tier, a few minutes: every Function's gradcheck, config, optimiser, tape, data,
## policy and import checks, the replay check and one short real run (tests marked slow are left out)
test: $(STAMP)
	$(PYTEST) -m "not slow" $(PYTEST_ARGS)

## make test-all: every test, the slow ones too (what CI runs)
test-all: $(STAMP)
	$(PYTEST) --durations=20 $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)

## make report: full runs of every committed config, each over SEEDS, their learning-rate sweeps, the
## theory, autodiff and complexity outputs, then reports/REPORT.md and reports/REPORT.pdf. On a 2-core CPU
## the kept seed sets' training and evaluation add up to about 4.7 hours for the homework's configs and
## 8.9 more for the published recipes (mlp_maxnorm, mlp_vat, cnn_bn, cnn_bn_deep, cnn_bn_aug, cnn_bn_aug_deep, fast, fast995);
## SEEDS=0 for a third
REPORT_CONFIGS ?= softmax sigmoid relu wide deep mlp_aug mlp_maxnorm mlp_vat cnn cnn_aug cnn_bn cnn_bn_deep cnn_bn_aug cnn_bn_aug_deep fast fast995
SWEEP_CONFIGS  ?= softmax sigmoid relu
SEEDS          ?= 0,1,2
report: $(STAMP)
	set -e; for c in $(REPORT_CONFIGS); do $(PY) -m nnhw.train configs/$$c.toml --seeds $(SEEDS); done
	set -e; for c in $(SWEEP_CONFIGS); do $(PY) -m nnhw.sweep configs/$$c.toml; done
	$(PY) -m nnhw.theory --out reports/theory > reports/theory.txt
	$(PY) -m nnhw.autodiff --full --out reports > reports/autodiff.txt
	$(PY) tools/complexity.py
	$(PY) -m nnhw.report

## make report-only: rebuild reports/REPORT.md and reports/REPORT.pdf from what is already in tb_logs/ and reports/
report-only: $(STAMP)
	$(PY) -m nnhw.report
