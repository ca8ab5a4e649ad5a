# SQL Proxy — see README.md. Every target installs what it needs first.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
# The control plane's gates run with the test settings (no secrets needed).
DJANGO := DJANGO_SETTINGS_MODULE=controlplane.settings.test $(BIN)/python manage.py

.PHONY: install build clean-build system-deps services run run-standalone test test-slow check lint \
	format bench bench-guard conformance clean

install: $(VENV)/.installed

system-deps:
	@PYTHON=$(PYTHON) scripts/system-deps.sh

$(VENV)/.installed: requirements/*.txt tests/clients/node/package.json | system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements/dev.txt
	cd tests/clients/node && npm ci --silent --no-audit --no-fund
	touch $@

# The worker's hot path compiled with mypyc, and its socket reactor in C (setup.py,
# proxyworker/compiled.py); again whenever a worker source changes, since what mypyc infers
# for one module depends on the others.
BUILT := proxyworker/compiled.json
build: $(BUILT)

$(BUILT): setup.py $(shell find proxyworker -name '*.py' -o -name '*.c') $(VENV)/.installed
	$(BIN)/python setup.py -q build_ext --inplace

clean-build:
	rm -rf $(BUILT) build/mypyc build/temp.* build/lib.* proxyworker__mypyc.*.so
	find proxyworker -name '*.so' -delete

services: install
	@scripts/services.sh

run: install build services
	@$(BIN)/python scripts/run_stack.py

run-standalone: install build services
	@scripts/demo.sh

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(DJANGO) check
	$(DJANGO) makemigrations --check --dry-run

check: lint

test: install build services check
	SQLPROXY_EXPECT_COMPILED=1 $(BIN)/pytest $(PYTEST_ARGS)

test-slow: install build services
	SQLPROXY_EXPECT_COMPILED=1 $(BIN)/pytest -m slow $(PYTEST_ARGS)

bench: install build services
	$(BIN)/python bench/run.py --guard both --floor --rounds 6

bench-guard: install build services
	$(BIN)/python bench/run.py --guard pair --rounds 30

conformance: install build services
	scripts/conformance.sh

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean: clean-build
	rm -rf $(VENV) tests/clients/node/node_modules .pytest_cache .mypy_cache .ruff_cache .run
