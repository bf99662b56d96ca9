# The two commands: `make demo` and `make test`. Each one sets everything up on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export TWINPROV_HOME ?= $(CURDIR)/.twinprov

# Debian packages some tests need: Graphviz (provenance pictures), Chromium (the browser test),
# docker-compose (checks docker-compose.yaml), PostgreSQL (the production-stack tests), Redis
# (the Celery broker of the multi-worker tests).
SYSTEM_PACKAGES := graphviz chromium docker-compose postgresql redis-server

CWL_VENV := .venv-cwl
CWL_TESTS ?= ../shared/cwl-v1.2-conformance
CWL_TAGS ?=
CWL_JOBS ?= 2

.PHONY: demo test lint bench clean system-deps conformance

$(BIN)/.twinprov-installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	$(PY) -m venv $(CWL_VENV)
	$(CWL_VENV)/bin/pip install --quiet --upgrade pip
	$(CWL_VENV)/bin/pip install --quiet -r requirements-cwl.txt
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

# The CWL v1.2 conformance suite against `twinprov cwl-runner` (not part of `make test`): all
# 378 tests by default (CWL_TAGS=required,scatter, CWL_EXCLUDE=docker or CWL_TESTS_N=1-20 for
# part of it). Per-tag counts and every failure with its reason in conformance/RESULTS.md
# (CWL_MERGE=old.xml merges an earlier report under this one), JUnit in report.xml.
CWL_TIMEOUT ?= 900
conformance: $(BIN)/.twinprov-installed
	mkdir -p conformance && rm -rf conformance/badges
	-TWINPROV_HOME=$(CURDIR)/.twinprov-conformance $(BIN)/cwltest \
	  --test $(CWL_TESTS)/conformance_tests.yaml --tool $(BIN)/twinprov \
	  $(if $(CWL_TAGS),--tags $(CWL_TAGS)) $(if $(CWL_EXCLUDE),--exclude-tags $(CWL_EXCLUDE)) \
	  $(if $(CWL_TESTS_N),-n $(CWL_TESTS_N)) \
	  -j $(CWL_JOBS) --timeout $(CWL_TIMEOUT) \
	  --badgedir conformance/badges --junit-xml conformance/report.xml -- cwl-runner \
	  > conformance/summary.txt 2>&1
	$(BIN)/python conformance/report.py --summary conformance/summary.txt \
	  $(CWL_TESTS)/conformance_tests.yaml conformance/RESULTS.md $(CWL_MERGE) conformance/report.xml

bench: $(BIN)/.twinprov-installed
	$(BIN)/python bench/capture_overhead.py

clean:
	rm -rf .twinprov
