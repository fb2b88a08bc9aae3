# Set-up and day-to-day commands. Every target creates .venv itself when needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.kennel-installed
PYTEST_ARGS ?=

.PHONY: venv demo test test-integration test-fast lint format bench bench-quick clean ui

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,team,cluster,spark]'
	touch $(STAMP)

demo: venv
	$(BIN)/python scripts/demo.py

test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-integration: venv
	$(BIN)/python -m pytest -m integration $(PYTEST_ARGS)

test-fast: venv
	$(BIN)/python -m pytest -m "not slow and not integration" $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: venv
	$(BIN)/python benchmarks/run_all.py

bench-quick: venv
	$(BIN)/python benchmarks/run_all.py --quick

ui: venv
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port 5000

clean:
	rm -rf outputs mlruns .pytest_cache .ruff_cache
