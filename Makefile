# invoice-sync: `make run` (demo nightly run on embedded defaults), `make ui` (Airflow's UI on the same
# defaults, until Ctrl-C) and `make test` (the full suite).
# All set everything up themselves: venv, locked install, Airflow metadata DB, invoicing DB.

SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

export AIRFLOW_HOME ?= $(CURDIR)/.airflow
export INVOICE_SYNC_DB_URL ?= sqlite:///$(CURDIR)/var/invoicing.db
export AIRFLOW__CORE__DAGS_FOLDER ?= $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER ?= $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES ?= False

.PHONY: help venv browser run ui chaos bench test lint format lock clean

help:
	@echo "make run    fresh machine -> a finished nightly sync run against the sandbox, with a summary"
	@echo "make ui     fresh machine -> Airflow's UI on the demo defaults (INVOICE_SYNC_UI_PORT, default 8080) until Ctrl-C"
	@echo "make chaos  nightly runs on all five tools under random faults (CHAOS_INVOICES, CHAOS_RUNS, CHAOS_SEED), then a check of the books"
	@echo "make bench  throughput at the tools' limits, our overhead, memory, parse time: JSON lines, then a table"
	@echo "make test   fresh machine -> the full test suite (PostgreSQL tests run when a server is reachable)"
	@echo "make lint   ruff check + format check + mypy;  make lock  re-resolve both locks (runtime, dev)"
	@echo "make browser  Debian chromium + chromium-driver for tests/browser (make test runs it)"

venv: $(VENV)/.installed

# The development venv: the dev lock (the runtime lock plus test and lint tools, hash-checked), the runtime
# project and the development package (include/invoice_sync_dev: simulators, demo, bench, chaos), editable.
$(VENV)/.installed: requirements.lock requirements-dev.lock pyproject.toml include/invoice_sync_dev/pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet "uv==0.13.9"
	$(BIN)/uv pip sync --quiet --require-hashes --python $(BIN)/python requirements-dev.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps -e . -e include/invoice_sync_dev
	touch $@

run: venv
	scripts/run-demo.sh

# The same set-up as make run (scripts/demo-env.sh), then api-server, scheduler, dag-processor and triggerer;
# prints the URL and a login.
ui: venv
	scripts/run-ui.sh

# Its own throw-away invoicing DB and Airflow home under var/chaos/ (CHAOS_DB_URL, CHAOS_AIRFLOW_HOME move them).
# CHAOS_INVOICES: valid invoices to book, at least, spread over every tool's demo integrations.
CHAOS_INVOICES ?= 2000
CHAOS_RUNS ?= 6
CHAOS_SEED ?= 1
CHAOS_KILLS ?= 1
chaos: venv
	$(BIN)/invoice-sync-dev chaos --invoices $(CHAOS_INVOICES) --runs $(CHAOS_RUNS) --seed $(CHAOS_SEED) --kills $(CHAOS_KILLS)

# Its own throw-away state under var/bench/ (wiped first); BENCH_ARGS="--scenario extract" picks scenarios.
bench: venv
	$(BIN)/invoice-sync-dev bench $(BENCH_ARGS)

# Debian's chromium + chromium-driver for tests/browser (Selenium drives them; nothing downloads a browser).
# Installed only when missing; sudo only when not root. Where apt-get is missing the browser tests skip,
# except under CI=true, where both this target and the tests fail instead.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then exit 0; fi; \
	if ! command -v apt-get >/dev/null; then \
	  echo "make browser: no apt-get; install chromium and chromedriver yourself (browser tests skip)"; \
	  [ "$${CI:-}" != "true" ]; exit; fi; \
	sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	$$sudo apt-get update -qq && \
	$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver

test: venv browser
	$(BIN)/pytest $(PYTEST_ARGS)

# ruff, then mypy over the shipped code, the development package, the plugin and the DAG files
# (pyproject.toml's [tool.mypy]: strict for domain, engine and store, default elsewhere). .ci/run runs this.
lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Runtime lock first; the dev lock is constrained to it, so both agree on every runtime package.
lock: venv
	$(BIN)/uv pip compile --quiet --no-header --generate-hashes --python-version 3.11 requirements.txt -o requirements.lock
	$(BIN)/uv pip compile --quiet --no-header --generate-hashes --python-version 3.11 requirements-dev.txt \
	  -c requirements.lock -o requirements-dev.lock

clean:
	rm -rf var .airflow
