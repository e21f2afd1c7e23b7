# Two commands do everything on a fresh machine: `make train` and `make test`.
# Each creates .venv when it is missing and installs the project (editable) with constraints.txt.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# An experiment is config layers: base, data set (+ its recipe), teacher/student pair, method, and the
# data set's adjustment of that method where one exists (configs/<data>/<method>.yaml, or the file named
# by the method's family, e.g. configs/digits/ctkd.yaml for ctkd_global and ctkd_instance, where the family
# is not a method of its own: kd_lskd_weights never takes configs/<data>/kd.yaml).
DATA ?= digits
PAIR ?= digits_cnn-mlp_small
METHOD ?= tals
FAMILY = $(firstword $(subst _, ,$(METHOD)))
ADJUSTMENT = $(or $(wildcard configs/$(DATA)/$(METHOD).yaml),$(if $(wildcard configs/methods/$(FAMILY).yaml),,$(wildcard configs/$(DATA)/$(FAMILY).yaml)))
CONFIG ?= configs/base.yaml configs/data/$(DATA).yaml configs/pairs/$(PAIR).yaml configs/methods/$(METHOD).yaml $(ADJUSTMENT)
CONFIG_ARGS = $(foreach layer,$(CONFIG),--config $(layer))
ARGS ?=
PYTEST_ARGS ?=
PYTEST_WORKERS ?= 2

.PHONY: install train teacher teacher-check test notebooks study fashion-mnist bench clean

# torch 2.14.1 from PyPI is its CUDA build: the venv takes about 6 GB. A disk with less free space gets one warning
# line first (pip's own "No space left on device" comes later and names no size).
INSTALL_NEEDS_GB := 7
$(STAMP): setup.cfg constraints.txt
	@free_kb=$$(df -Pk "$$(dirname "$(abspath $(VENV))")" | awk 'NR==2 {print $$4}'); \
	if [ -n "$$free_kb" ] && [ "$$free_kb" -lt $$(( $(INSTALL_NEEDS_GB) * 1024 * 1024 )) ]; then \
	  echo "make install: warning: $$(( free_kb / 1024 )) MB free for $(VENV); the install needs about $(INSTALL_NEEDS_GB) GB (torch's CUDA build)" >&2; \
	fi
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test,notebooks]'
	@touch $(STAMP)

install: $(STAMP)

## make train [DATA=digits PAIR=digits_cnn-mlp_small METHOD=tals] [ARGS="--trainer.max_epochs=3"]: one run,
## then its test and summary; CONFIG="a.yaml b.yaml" gives the layers explicitly instead
train: $(STAMP)
	$(BIN)/distill fit $(CONFIG_ARGS) $(ARGS)

.PHONY: experiment experiments
## make experiment NAME=<data>/<pair>/<method> [ARGS="--trainer.precision=bf16-mixed"]: one published experiment
## by name (docs/experiments.md) with all its layers; a grid runs as distill-sweep (its options: ARGS="--seeds 3 --")
experiment: $(STAMP)
	@test -n "$(NAME)" || { echo "make experiment: give NAME=<name>; make experiments lists the names" >&2; exit 2; }
	$(BIN)/python -m distill.experiments run $(NAME) $(ARGS)

## make experiments: every published experiment's name with its published top-1 (%)
experiments: $(STAMP)
	@$(BIN)/python -m distill.experiments list

## make teacher NAME=<teacher> DATA=<data>: train a teacher (configs/teachers/<NAME>.yaml) and write its checkpoint
teacher: $(STAMP)
	@test -n "$(NAME)" || { echo "make teacher: give NAME=<teacher> (a file in configs/teachers/) and DATA=<data>" >&2; exit 2; }
	$(BIN)/distill fit --config configs/base.yaml --config configs/data/$(DATA).yaml --config configs/teachers/$(NAME).yaml $(ARGS)

## make teacher-check NAME=<teacher> [ARGS="--data_dir=<folder>"]: a registered teacher's test top-1 next to
## its expected one; one warning line when more than 1 point below (published files: docs/models.md)
teacher-check: $(STAMP)
	$(BIN)/python -m teachers.check $(NAME) $(ARGS)

## make test: the whole suite (unit, CLI runs, CPU DDP, notebooks)
# The suite runs in PYTEST_WORKERS processes (pytest-xdist; 0: one process), the cores shared out among them as torch
# threads (tests/conftest.py): on these 2-core machines 573 s where one process took 826 s (the same clone, 2026-12-07).
test: $(STAMP) fashion-mnist
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

## make notebooks: two short real runs (TALS and CTKD) in a temporary folder, then every notebook
## executed against them with nbmake (DISTILL_RUN_DIRS); a failing cell fails the target
NOTEBOOK_RUN_ARGS ?= --trainer.max_epochs=2 --trainer.enable_progress_bar=false --per_sample_statistics.every_n_steps=5
notebooks: $(STAMP)
	@set -e; runs=$$(mktemp -d); trap 'rm -rf "$$runs"' EXIT; \
	for policy in SigmaAnchoredTemperature CurriculumTemperature; do \
	  $(BIN)/distill fit $(CONFIG_ARGS) $(NOTEBOOK_RUN_ARGS) --model.temperature_policy=$$policy \
	    --trainer.default_root_dir=$$runs --trainer.logger.init_args.save_dir=$$runs \
	    --trainer.logger.init_args.name=$$policy; \
	done; \
	export DISTILL_RUN_DIRS=$$(find "$$runs" -name config.yaml -printf '%h:' | sed 's/:$$//'); \
	echo "DISTILL_RUN_DIRS=$$DISTILL_RUN_DIRS"; \
	$(BIN)/python -m pytest --nbmake --nbmake-timeout=300 notebooks/ $(PYTEST_ARGS)

## make study [QUICK=1] [STUDIES="fashion_mnist digits"] [JOBS=2]: every method over seeds on real data through
## distill-sweep and distill-report; results and the generated report land in docs/results/ (QUICK=1: a few
## minutes: Fashion-MNIST, CE / the KD grid / TALS / Block-KD, 2 seeds, a tiny budget, under studies/quick/)
STUDIES ?= $(if $(QUICK),fashion_mnist,fashion_mnist digits)
JOBS ?= 2
study: $(STAMP) fashion-mnist
	$(BIN)/python -m distill.study run --study $(STUDIES) --jobs $(JOBS) \
	  $(if $(QUICK),--quick --runs studies/quick --out studies/quick/results,--runs studies --out docs/results)

## make fashion-mnist: the Fashion-MNIST files from Debian's dataset-fashion-mnist when they are missing
FASHION_MNIST_DIR ?= /usr/share/datasets/fashion-mnist
fashion-mnist:
	@test -f $(FASHION_MNIST_DIR)/train-images-idx3-ubyte.gz || { \
	  echo "installing Debian's dataset-fashion-mnist (needs root and apt)"; \
	  (apt-get install -y -q dataset-fashion-mnist || (apt-get update -q && apt-get install -y -q dataset-fashion-mnist)) > /dev/null; }

## make bench [BENCH_ARGS="--mode quick|full|tiny --only framework,policy,per_sample,gpu"]: every benchmark side by
## side in one process (quick on the CPU, full on a GPU), written to docs/benchmarks.json and docs/benchmarks.md
BENCH_ARGS ?=
bench: $(STAMP)
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

clean:
	rm -rf runs sweeps studies .pytest_cache
