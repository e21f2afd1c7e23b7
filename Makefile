# Two commands do everything on a fresh machine: `make train` and `make test`.
# Each creates .venv when it is missing and installs the project (editable) with constraints.txt.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CONFIG ?= configs/default.yaml
ARGS ?=
PYTEST_ARGS ?=

.PHONY: install train teacher test notebooks bench clean

$(STAMP): setup.cfg constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,notebooks]'
	@touch $(STAMP)

install: $(STAMP)

## make train [CONFIG=configs/x.yaml] [ARGS="--trainer.max_epochs=3"]: one run, then its test and summary
train: $(STAMP)
	$(BIN)/distill fit --config $(CONFIG) $(ARGS)

## make teacher CONFIG=configs/teachers/<name>.yaml: train a teacher and write its checkpoint
teacher: $(STAMP)
	$(BIN)/distill fit --config $(CONFIG) $(ARGS)

## make test: the whole suite (unit, CLI runs, CPU DDP, notebooks)
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf runs sweeps .pytest_cache
