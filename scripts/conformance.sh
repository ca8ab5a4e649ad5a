#!/usr/bin/env bash
# `make conformance`: third-party driver suites (asyncpg; psycopg with PSYCOPG_SRC=/path/to/a
# psycopg checkout) run directly and through a worker, then compared. See docs/conformance.md.
# Arguments go to tests/conformance/run.py (--suite, --mode, --test-timeout, -- pytest args).
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/python -m tests.conformance.run "$@"
