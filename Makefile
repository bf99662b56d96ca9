# The two commands: `make demo` and `make test`. Each one sets everything up on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export TWINPROV_HOME ?= $(CURDIR)/.twinprov

.PHONY: demo test lint bench clean

$(BIN)/.twinprov-installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: $(BIN)/.twinprov-installed
	$(BIN)/twinprov demo

test: $(BIN)/.twinprov-installed
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(BIN)/.twinprov-installed
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(BIN)/.twinprov-installed
	$(BIN)/python bench/capture_overhead.py

clean:
	rm -rf .twinprov
