# placematch — everyday commands. `make test` needs Java 17 + Maven (Kafka is assembled from Maven
# Central) and PostgreSQL binaries (`deploy/postgres.sh ensure` installs them as root).
.DEFAULT_GOAL := help
SHELL := /bin/bash

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?= -q -x tests/

.PHONY: help venv install bench-install run lint test unit integration bench kafka-fetch keycloak-fetch postgres-ensure console-assets browser clean distclean

help:
	@echo "make install      create .venv and install placematch with test extras (skipped if up to date)"
	@echo "make run          placematch up: all four services, embedded (SQLite, in-process bus)"
	@echo "make lint         ruff (style, imports, bugbear) and mypy (types) over the code: 0 findings"
	@echo "make test         all tests against a real Kafka and PostgreSQL (deploy/test-env.sh)"
	@echo "make unit         tests/unit only, no infrastructure"
	@echo "make bench        benchmarks vs baselines on a real Kafka + PostgreSQL (BENCH_ARGS=\"--quick\")"
	@echo "make kafka-fetch  download the Kafka broker jars (deploy/kafka/libs, cached)"
	@echo "make console-assets  GOV.UK Frontend, htmx and axe-core from npm for the console (gitignored)"
	@echo "make browser      the console's browser tests (Debian's chromium, Playwright)"
	@echo "make keycloak-fetch  download Keycloak, the tests' OpenID Connect provider (deploy/keycloak/dist, cached)"
	@echo "make clean        remove caches and build output; distclean also .venv and Kafka jars"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

venv: $(BIN)/python

# Reinstall only when pyproject.toml changes (or the venv is new); the editable install picks up
# code changes by itself.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	@touch $@

install: $(STAMP)

# The benchmarks' baselines (eventsourcing, ...): their own stamp, so `make bench` works on a fresh clone.
BENCH_STAMP := $(VENV)/.installed-bench
$(BENCH_STAMP): pyproject.toml | $(STAMP)
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	@touch $@

bench-install: $(BENCH_STAMP)

run: install console-assets
	$(BIN)/placematch up

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

kafka-fetch:
	deploy/kafka/kafka.sh fetch

keycloak-fetch:
	deploy/keycloak/keycloak.sh fetch

postgres-ensure:
	deploy/postgres.sh ensure

console-assets:
	deploy/console-assets.sh

test: install kafka-fetch keycloak-fetch console-assets
	deploy/test-env.sh $(BIN)/pytest $(PYTEST_ARGS)

unit: install
	$(BIN)/pytest -q tests/unit

integration: install kafka-fetch keycloak-fetch
	deploy/test-env.sh $(BIN)/pytest -q tests/integration

browser: install console-assets keycloak-fetch
	$(BIN)/pytest -q tests/browser

bench: bench-install kafka-fetch
	deploy/test-env.sh $(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf build dist *.egg-info .pytest_cache .hypothesis deploy/kafka/target .cache
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) deploy/kafka/libs deploy/keycloak/dist
