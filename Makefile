# reconciler — make help lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
SANDBOX := .sandbox

.DEFAULT_GOAL := help
.PHONY: help deps venv test test-unit run lint bench bench-fleet clean sandbox-down

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

deps: ## install the system packages the tests need (apt; only what is missing)
	@bash scripts/install-deps.sh

$(STAMP): pyproject.toml
	@$(PYTHON) -m venv --help >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,dev,postgres,bench]'
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP) ## create .venv with the project and its test tools

test: deps venv lint ## contracts, lint, types, then every test (real engines and PostgreSQL)
	$(BIN)/python -m pytest -q

test-unit: venv ## the pure tests only (no engine, no PostgreSQL): seconds
	$(BIN)/python -m pytest -q -m "not engine and not postgres"

run: deps venv ## db upgrade, a sandbox engine if none, example rows, then reconciler run
	@bash scripts/run-local.sh

lint: venv ## import contracts, ruff (lint + format) and mypy
	$(BIN)/lint-imports
	$(BIN)/ruff check reconciler sandbox tests bench
	$(BIN)/ruff format --check reconciler sandbox tests bench
	$(BIN)/mypy

bench: deps venv ## benchmarks against raw API, swarm mode, compose (see bench/README)
	$(BIN)/python -m bench $(BENCH_ARGS)

bench-fleet: deps venv ## 1,000 simulated nodes, 30,000 rows, SQLite and PostgreSQL (bench/fleet_scale.py)
	$(BIN)/python -m bench.fleet_scale $(BENCH_ARGS)

sandbox-down: venv ## stop the sandbox engine that make run started
	$(BIN)/python -m sandbox engines down --dir $(SANDBOX)

clean: ## remove the venv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
