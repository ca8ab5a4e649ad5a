# SQL Proxy — see README.md. Every target installs what it needs first.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=
# The control plane's gates run with the test settings (no secrets needed).
DJANGO := DJANGO_SETTINGS_MODULE=controlplane.settings.test $(BIN)/python manage.py

.PHONY: install system-deps services run run-standalone test test-slow check lint format bench \
	conformance clean

install: $(VENV)/.installed

system-deps:
	@scripts/system-deps.sh

$(VENV)/.installed: requirements/*.txt tests/clients/node/package.json | system-deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements/dev.txt
	cd tests/clients/node && npm ci --silent --no-audit --no-fund
	touch $@

services: install
	@scripts/services.sh

run: install services
	@$(BIN)/python scripts/run_stack.py

run-standalone: install services
	@scripts/demo.sh

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(DJANGO) check
	$(DJANGO) makemigrations --check --dry-run

check: lint

test: install services check
	$(BIN)/pytest $(PYTEST_ARGS)

test-slow: install services
	$(BIN)/pytest -m slow $(PYTEST_ARGS)

bench: install services
	$(BIN)/python bench/run.py --guard both --floor

conformance: install services
	scripts/conformance.sh

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) tests/clients/node/node_modules .pytest_cache .mypy_cache .ruff_cache .run
