#!/usr/bin/env bash
# `make run`: a demo database in the local PostgreSQL and a worker in front of it.
set -euo pipefail
cd "$(dirname "$0")/.."

as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"
  elif command -v sudo >/dev/null; then sudo -u postgres "$@"
  else "$@" -h 127.0.0.1 -U postgres; fi
}

as_postgres psql -q -v ON_ERROR_STOP=1 -d postgres <<'SQL'
SELECT 'CREATE ROLE sqlproxy_demo LOGIN PASSWORD ''demo-owner-pw'''
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sqlproxy_demo')\gexec
SELECT 'CREATE DATABASE sqlproxy_demo OWNER sqlproxy_demo'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'sqlproxy_demo')\gexec
ALTER DATABASE sqlproxy_demo OWNER TO sqlproxy_demo;
\c sqlproxy_demo
GRANT ALL ON SCHEMA public TO sqlproxy_demo;
SQL
PGPASSWORD=demo-owner-pw psql -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -U sqlproxy_demo -d sqlproxy_demo <<'SQL'
CREATE TABLE IF NOT EXISTS users (id serial PRIMARY KEY, email text UNIQUE NOT NULL);
INSERT INTO users (email)
SELECT 'user' || g || '@example.com' FROM generate_series(1, 1000) g ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS secret_keys (name text PRIMARY KEY, value text);
INSERT INTO secret_keys VALUES ('stripe', 'canary-7f3a9c') ON CONFLICT DO NOTHING;
SQL

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
