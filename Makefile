# The two commands: `make demo` and `make test`. Each one sets everything up on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export TWINPROV_HOME ?= $(CURDIR)/.twinprov

# Debian packages some tests need: Graphviz (provenance pictures), Chromium (the browser test),
# docker-compose (checks docker-compose.yaml), PostgreSQL (the production-stack tests).
SYSTEM_PACKAGES := graphviz chromium docker-compose postgresql

.PHONY: demo test lint bench clean system-deps

$(BIN)/.twinprov-installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: $(BIN)/.twinprov-installed
	$(BIN)/twinprov demo

system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else echo "missing Debian packages:$$missing (run as root to install; tests needing them say so)"; fi

test: $(BIN)/.twinprov-installed system-deps
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

lint: $(BIN)/.twinprov-installed
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: $(BIN)/.twinprov-installed
	$(BIN)/python bench/capture_overhead.py

clean:
	rm -rf .twinprov
