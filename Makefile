# Two commands for a new user (see README.md):
#   make demo   sets up .venv and runs the main job on the embedded default (SQLite + sandbox API)
#   make test   sets up .venv and runs the test suite
# AIRFLOW_VERSION picks the Airflow the virtualenv gets; each version gets its own virtualenv.

PYTHON ?= python3
AIRFLOW_VERSION ?= 3.3.2
VENV ?= .venv-airflow-$(AIRFLOW_VERSION)
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv demo test test-deployment lint bench bench-quick dist clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "apache-airflow==$(AIRFLOW_VERSION)" apache-airflow-providers-sqlite -e ".[test,ui-test]"
	touch $@

venv: $(STAMP)

demo: venv
	$(BIN)/python scripts/demo.py

test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The multi-worker deployment test only (tests/deployment: CeleryExecutor, PostgreSQL, Redis, two workers, a
# worker SIGKILLed mid-send), always on the newest Airflow; `make test` does not collect it. It needs
# scripts/install-postgres.sh and scripts/install-redis.sh (skipped without them, failed with CI set).
test-deployment:
	$(MAKE) venv AIRFLOW_VERSION=3.3.2
	.venv-airflow-3.3.2/bin/python -m pytest -m deployment tests/deployment -v -s --tb=short $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: venv
	$(BIN)/python bench/run.py

bench-quick: venv
	$(BIN)/python bench/run.py --quick

# The sdist and the wheel, as a release publishes them, checked as the package index would check them.
dist: venv
	$(BIN)/python -m pip install --quiet build twine
	rm -rf dist
	$(BIN)/python -m build --outdir dist .
	$(BIN)/python -m twine check --strict dist/*

clean:
	rm -rf .venv-airflow-* .demo .artifacts bench/results dist build
