#!/usr/bin/env bash
# Install the Debian packages the project needs, only those that are missing.
# Runs as root (CI, containers) or through sudo; prints what it would need otherwise.
set -euo pipefail

need=()
command -v pg_ctlcluster >/dev/null || need+=(postgresql)
[ -x /usr/bin/pgbench ] || need+=(postgresql-contrib)
command -v psql >/dev/null || need+=(postgresql-client)
command -v redis-server >/dev/null || need+=(redis-server)
command -v pgbouncer >/dev/null || need+=(pgbouncer)
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
command -v javac >/dev/null || need+=(default-jdk-headless)
[ -e /usr/share/java/postgresql.jar ] || need+=(libpostgresql-jdbc-java)
PY=${PYTHON:-python3}
$PY -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
# Compiling the worker's hot path (make build): a C compiler and the Python headers.
command -v gcc >/dev/null || need+=(gcc)
$PY -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
  || need+=(python3-dev)
command -v chromium >/dev/null || need+=(chromium)  # the dashboard's browser tests (Playwright drives it)

[ ${#need[@]} -eq 0 ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "missing Debian packages: ${need[*]} (run as root or install them)" >&2; exit 1
  fi
fi
echo "installing Debian packages: ${need[*]}"
# Packages must not start their own daemons here (pgbouncer would take port 6432).
policy=/usr/sbin/policy-rc.d
created_policy=""
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
  $SUDO chmod +x "$policy"
  created_policy=1
fi
trap '[ -n "$created_policy" ] && $SUDO rm -f "$policy"' EXIT
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
