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

.PHONY: install train teacher teacher-check test notebooks bench clean

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

## make teacher-check NAME=<teacher> [ARGS="--data_dir=<folder>"]: a registered teacher's test top-1 next to
## its expected one; one warning line when more than 1 point below (published files: docs/models.md)
teacher-check: $(STAMP)
	$(BIN)/python -m teachers.check $(NAME) $(ARGS)

## make test: the whole suite (unit, CLI runs, CPU DDP, notebooks)
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## make notebooks: two short real runs (TALS and CTKD) in a temporary folder, then every notebook
## executed against them with nbmake (DISTILL_RUN_DIRS); a failing cell fails the target
NOTEBOOK_RUN_ARGS ?= --trainer.max_epochs=2 --trainer.enable_progress_bar=false --per_sample_statistics.every_n_steps=5
notebooks: $(STAMP)
	@set -e; runs=$$(mktemp -d); trap 'rm -rf "$$runs"' EXIT; \
	for policy in SigmaAnchoredTemperature CurriculumTemperature; do \
	  $(BIN)/distill fit --config configs/default.yaml $(NOTEBOOK_RUN_ARGS) --model.temperature_policy=$$policy \
	    --trainer.default_root_dir=$$runs --trainer.logger.init_args.save_dir=$$runs \
	    --trainer.logger.init_args.name=$$policy; \
	done; \
	export DISTILL_RUN_DIRS=$$(find "$$runs" -name config.yaml -printf '%h:' | sed 's/:$$//'); \
	echo "DISTILL_RUN_DIRS=$$DISTILL_RUN_DIRS"; \
	$(BIN)/python -m pytest --nbmake --nbmake-timeout=300 notebooks/ $(PYTEST_ARGS)

## make bench: every benchmark in benchmarks/ (timings only, nothing asserted)
bench: $(STAMP)
	@set -e; for script in benchmarks/*.py; do echo "== $$script"; $(BIN)/python $$script; done

clean:
	rm -rf runs sweeps .pytest_cache
