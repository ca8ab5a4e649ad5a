#!/usr/bin/env bash
# `make run-standalone`: the demo database in the local PostgreSQL and one worker in front of
# it, configured by examples/sqlproxy.toml (no control plane, no Redis).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/demo-db.sh

.venv/bin/python -m proxyworker --config examples/sqlproxy.toml --check
cat <<'MSG'

SQL Proxy worker starting on 127.0.0.1:6432 (metrics on http://127.0.0.1:9187/metrics)
Connect with:

  PGPASSWORD=app-secret psql "host=127.0.0.1 port=6432 user=app dbname=demo"

and try what the guard stops (examples/sqlproxy.toml has the policy):

  DELETE FROM users WHERE id > 5;        -- over the limit of 10 rows: refused, nothing deleted
  DELETE FROM users WHERE id = 1;        -- within the limit: allowed
  SELECT * FROM secret_keys;             -- a honeytoken table: refused
  SELECT pg_read_file('/etc/passwd');    -- a signature: refused

Ctrl-C stops it.
MSG
exec .venv/bin/python -m proxyworker --config examples/sqlproxy.toml
