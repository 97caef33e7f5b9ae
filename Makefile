# consent-ledger: `make help` lists every target.
.DEFAULT_GOAL := help
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
COMPILED := .venv-compiled
COMPILED_STAMP := $(COMPILED)/.installed
SOURCES := $(shell find services -name '*.py' -o -name '*.yaml' -o -name '*.sql')

LOCK_TOOLS := .venv-lock

.PHONY: help install lock compiled run test test-unit test-compiled lint fmt typecheck schemas scenarios bench soak clean

# Colour only on a terminal, so that `make help > file` or a pipe gets plain text.
help: ## list the targets
	@if [ -t 1 ]; then on=$$'\033[36m'; off=$$'\033[0m'; else on=; off=; fi; \
	grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | \
	awk -v on="$$on" -v off="$$off" 'BEGIN {FS = ":.*## "} {printf "  %s%-13s%s %s\n", on, $$1, off, $$2}'

$(STAMP): pyproject.toml requirements/dev.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c requirements/dev.lock -e '.[dev,embedded]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install the package with its dev tools

# pip-compile in a venv of its own, so that the tool is not part of what it locks.
LOCK_FLAGS := --quiet --strip-extras --no-emit-index-url --no-emit-find-links
lock: ## re-resolve requirements/*.lock from pyproject.toml (then make install)
	test -x $(LOCK_TOOLS)/bin/pip-compile || { $(PYTHON) -m venv $(LOCK_TOOLS) && $(LOCK_TOOLS)/bin/pip install --quiet pip-tools; }
	$(LOCK_TOOLS)/bin/pip-compile $(LOCK_FLAGS) --upgrade --extra dev --extra embedded --output-file requirements/dev.lock pyproject.toml
	$(LOCK_TOOLS)/bin/pip-compile $(LOCK_FLAGS) --upgrade --output-file requirements/image.lock pyproject.toml

# The core compiled with mypyc (setup.py), installed as a wheel, never in place:
# rebuilt whenever a source changes.
$(COMPILED_STAMP): pyproject.toml requirements/dev.lock setup.py $(SOURCES)
	rm -rf $(COMPILED)
	$(PYTHON) -m venv $(COMPILED)
	$(COMPILED)/bin/pip install --quiet --upgrade pip
	CONSENT_LEDGER_COMPILE=1 $(COMPILED)/bin/pip install --quiet -c requirements/dev.lock '.[dev,embedded]'
	touch $(COMPILED_STAMP)

compiled: $(COMPILED_STAMP) ## install the mypyc-compiled build into .venv-compiled

run: $(STAMP) ## the whole service on embedded Kafka + PostgreSQL, with a demo producer
	$(BIN)/consent-ledger dev --demo

test: $(STAMP) ## every test: unit, integration, end to end (real broker and PostgreSQL)
	$(BIN)/pytest

test-unit: $(STAMP) ## the fast unit tests of the pure core
	$(BIN)/pytest -m unit

test-compiled: $(COMPILED_STAMP) ## unit and integration tests (scenarios included) on the compiled build
	$(COMPILED)/bin/pytest -m "unit or integration" -p no:cacheprovider

lint: $(STAMP) ## ruff lint and format check
	$(BIN)/ruff check services tests bench
	$(BIN)/ruff format --check services tests bench

fmt: $(STAMP) ## format and autofix
	$(BIN)/ruff format services tests bench
	$(BIN)/ruff check --fix services tests bench

typecheck: $(STAMP) ## strict mypy on the package
	$(BIN)/mypy

schemas: $(STAMP) ## regenerate schemas/ from the event models
	$(BIN)/python -m consent_ledger.schemas schemas

scenarios: $(STAMP) ## run the acceptance scenarios (tests/data/scenarios) through `check`
	$(BIN)/python tests/tools/check_scenarios.py $(BIN)/consent-ledger tests/data/scenarios

bench: $(STAMP) $(COMPILED_STAMP) ## benchmarks: print figures (check rate and memory, end-to-end rates, rebuild, poison isolation, reports)
	$(BIN)/python bench/bench_check.py
	$(COMPILED)/bin/python bench/bench_check.py
	$(COMPILED)/bin/python bench/bench_service.py
	$(COMPILED)/bin/python bench/bench_rebuild.py
	$(COMPILED)/bin/python bench/bench_isolation.py
	$(COMPILED)/bin/python bench/bench_whatif.py
	$(COMPILED)/bin/python bench/bench_policy.py
	$(COMPILED)/bin/python bench/bench_subject_report.py
	$(BIN)/python bench/bench_reports.py
	$(COMPILED)/bin/python bench/bench_webhooks.py

SOAK_ARGS ?=
soak: $(STAMP) ## 10 minutes at 1,000 records/s with hostile ones (SOAK_ARGS="--workers 2" for two workers)
	cd bench && ../$(BIN)/python bench_soak.py $(SOAK_ARGS)

# Also faust's data folders that workers and tests of earlier versions left in
# the working directory (<app id>-data; now they live in temporary folders).
clean: ## remove the virtual environments, caches, build output and local data
	rm -rf $(VENV) $(COMPILED) $(LOCK_TOOLS) .pytest_cache .mypy_cache .ruff_cache .hypothesis .ledger-data \
	  build dist *.egg-info services/*.egg-info consent-ledger-worker-data app_*-data worker_*-data
	find services tests bench -name __pycache__ -type d -prune -exec rm -rf {} +
