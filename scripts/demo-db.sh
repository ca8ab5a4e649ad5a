#!/usr/bin/env bash
# The databases `make run` uses in the local PostgreSQL: the demo database the policy guards,
# and the control plane's own. Idempotent.
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
SELECT 'CREATE ROLE sqlproxy_cp LOGIN CREATEDB PASSWORD ''sqlproxy-cp-pw'''
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'sqlproxy_cp')\gexec
SELECT 'CREATE DATABASE sqlproxy_cp OWNER sqlproxy_cp'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'sqlproxy_cp')\gexec
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
