# trainbench: two commands set everything up on a fresh machine (Python 3.11 + package registries).
#   make demo   run the cifar10_benchmark DAG once through Airflow (SQLite, CPU, synthetic data)
#   make test   lint (ruff, mypy) and the whole test suite (what CI runs)
#   make test-fast  the suite without its end-to-end (integration) tests, for the inner loop
#   make lint   ruff check, ruff format --check, mypy on the core, plugins/ and dags/
#   make doctor     is this host ready to measure? one line per check; exit status 1 when it cannot
#   make gpu-check  GPU acceptance: doctor, then pytorch, pytorch-graph and jax on one GPU against issue 19's goals

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
SHELL := /bin/bash

export AIRFLOW_HOME := $(CURDIR)/.airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__UNIT_TEST_MODE := False
export TRAINBENCH_CONFIG ?= $(CURDIR)/trainbench.toml
export PATH := $(CURDIR)/$(BIN):$(PATH)
# neon's source for `make envs` (README: neon): the shared copy beside the checkout where there is one, else GitHub
export NEON_SOURCE ?= $(or $(wildcard $(abspath $(CURDIR)/../shared/vendor)),git+https://github.com/NervanaSystems/neon@v2.6.0)

DEMO_CONF := {"epochs": 2, "train_images": 2000, "device_sets": ["cpu", "cpu:2"], "repeats": 2, "warmup": 0}
REFERENCE_LOG := include/reference/000_8ad6f2660727c232.txt

.PHONY: demo test test-fast test-tools lint setup envs airflow-init clean doctor gpu-check

$(BIN)/.installed: requirements.txt requirements-dev.txt requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip==25.3
	$(BIN)/pip install --quiet -r requirements.txt -r requirements-dev.txt -c requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

# System tools only the tests need, installed by the test set-up alone (make demo installs nothing outside this
# folder): Debian's Chromium (tests/test_ui.py drives the pages in it) and Debian's docker-compose, which reads the
# compose files (tests/test_compose.py); without its recommended Docker engine: nothing is started, no daemon.
TEST_TOOLS := chromium docker-compose
test-tools:
	@missing=$$(for t in $(TEST_TOOLS); do command -v $$t >/dev/null || echo $$t; done); \
	if [ -n "$$missing" ]; then \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing) \
	    || echo "warning: tests need $$missing: apt-get install -y --no-install-recommends $$missing (as root)"; \
	fi

setup: $(BIN)/.installed envs airflow-init

envs: $(BIN)/.installed
	$(BIN)/python -m trainbench envs

$(AIRFLOW_HOME)/.initialized: $(BIN)/.installed
	mkdir -p $(AIRFLOW_HOME)
	$(BIN)/airflow db migrate > $(AIRFLOW_HOME)/db-migrate.log
	touch $@

airflow-init: $(AIRFLOW_HOME)/.initialized

demo: setup
	$(BIN)/python -m trainbench import-log $(REFERENCE_LOG)
	$(BIN)/airflow dags test cifar10_benchmark -c '$(DEMO_CONF)' > $(AIRFLOW_HOME)/demo-run.log 2>&1 \
	  || { tail -n 60 $(AIRFLOW_HOME)/demo-run.log; exit 1; }
	@grep -E "epoch [0-9]+ .*images/s|: (ok|tainted|crashed|timeout|killed|oom|unsupported|unavailable|busy) in" $(AIRFLOW_HOME)/demo-run.log | sed -E 's/^.*\[info *\] //; s/ \[airflow[^]]*\].*$$//' || true
	@$(BIN)/python -m trainbench results --run-id latest --format table
	@echo
	@cat output/latest/report.md
	@echo
	@echo "Published tables of this run (also under output/runs/<run id>/, with raw JSON and Data Docs):"
	@ls -1 $(CURDIR)/output/latest/*
	@echo "Results database: $(CURDIR)/output/results.db (python -m trainbench results --format csv)"
	@echo "Airflow log of this run: $(AIRFLOW_HOME)/demo-run.log"

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint setup test-tools
	sync  # setup's gigabytes of venvs written out first: timed tests must not measure the flush
	$(BIN)/python -m pytest -q

# The inner loop: everything but the end-to-end runs (Airflow, Celery, real trainers through the DAG)
test-fast: setup
	$(BIN)/python -m pytest -q -m "not integration"

doctor: $(BIN)/.installed
	$(BIN)/python -m trainbench doctor

# A GPU host often has the frameworks' interpreter and no venv (README: GPU acceptance): then that interpreter,
# with the core's few pure wheels on PYTHONPATH, e.g. make gpu-check GPU_CHECK_PYTHON=/opt/torch/.venv/bin/python3
GPU_CHECK_PYTHON ?= $(if $(wildcard $(BIN)/.installed),$(BIN)/python,python3)
gpu-check:
	PYTHONPATH=$(CURDIR)/include$${PYTHONPATH:+:$$PYTHONPATH} $(GPU_CHECK_PYTHON) -m trainbench gpu-check

clean:
	rm -rf $(VENV) .envs $(AIRFLOW_HOME) output
