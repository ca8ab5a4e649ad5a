#!/bin/bash
# Instructions per transaction of a live proxy under valgrind's callgrind: everything in its
# user space (uvloop, the interpreter, the compiled modules), none of the kernel's. Unlike
# bench/instructions.sh (the session without sockets) this counts what a real pgbench run costs
# the process. Two measured runs of 100 and 600 transactions per client, after a warm-up, on
# the same process: their difference, divided by the extra transactions, leaves out connecting,
# authenticating and each new session's first (uncached) decisions. Stable where timings on a
# shared machine are not. Needs valgrind and the bench database (`bench/run.py --quick` once).
#
#   bench/live-instructions.sh worker|guarded|floor [session|transaction] [pgbench args]
#   bench/live-instructions.sh guarded transaction -M extended -S
#   KEEP=1 bench/live-instructions.sh worker    # keeps the callgrind profiles to read
set -euo pipefail
cd "$(dirname "$0")/.."
usage() {
    echo "usage: $0 worker|guarded|floor [session|transaction] [pgbench args]" >&2
    exit 2
}
proxy=${1:-} mode=${2:-session}
case $mode in session | transaction) ;; *) usage ;; esac
shift $(($# < 2 ? $# : 2))
args=("$@")
[ ${#args[@]} -gt 0 ] || args=(-S)
clients=8

dir=$(mktemp -d)
pid=
cleanup() {
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
    if [ -n "${KEEP:-}" ]; then
        echo "profiles kept in $dir (callgrind_annotate --tree=calling $dir/cg.out.2)" >&2
    else
        rm -rf "$dir"
    fi
}
trap cleanup EXIT
port=$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
case $proxy in
worker | guarded)
    # The bench's own worker configuration (bench/services.py), one database per pool mode.
    PYTHONPATH=bench .venv/bin/python -c 'import sys, services
print(services.worker_config(int(sys.argv[1]), int(sys.argv[2]), 5432, sys.argv[3] == "guarded"))' \
        "$port" $clients "$proxy" >"$dir/proxy.toml"
    command=(.venv/bin/python -m proxyworker --config "$dir/proxy.toml")
    user=bench password=bench-secret db=bench
    if [ "$mode" = transaction ]; then db=bench_tx; fi
    ;;
floor)
    command=(.venv/bin/python bench/floor.py "$port" 5432)
    user=sqlproxy_bench password=bench-owner-pw db=sqlproxy_bench
    ;;
*) usage ;;
esac

PYTHONHASHSEED=0 PYTHONPATH=$PWD valgrind --tool=callgrind --instr-atstart=no \
    --callgrind-out-file="$dir/cg.out" "${command[@]}" >"$dir/proxy.log" 2>&1 &
pid=$!
bench() {
    PGPASSWORD=$password pgbench -h 127.0.0.1 -p "$port" -U "$user" -n -c $clients -j 2 \
        -t "$1" "${args[@]}" "$db" >"$dir/pgbench.log" 2>&1 || {
        cat "$dir/pgbench.log" "$dir/proxy.log" >&2
        exit 1
    }
}
for _ in $(seq 120); do
    PGPASSWORD=$password psql -h 127.0.0.1 -p "$port" -U "$user" -c "select 1" "$db" \
        >/dev/null 2>&1 && break
    sleep 1
done
bench 50 # warm-up, not counted
measure() { # instructions of one pgbench run of $1 transactions per client
    callgrind_control -i on "$pid" >/dev/null 2>&1
    bench "$1"
    callgrind_control -i off "$pid" >/dev/null 2>&1
    callgrind_control -d "$pid" >/dev/null 2>&1 # (dumping also zeroes the counters)
    local last
    last=$(ls -t "$dir"/cg.out.* | head -1)
    callgrind_annotate "$last" | awk '/PROGRAM TOTALS/ && !n++ {gsub(",", "", $1); print $1}'
}
small=$(measure 100)
large=$(measure 600)
echo "$proxy, $mode mode, pgbench ${args[*]}: $(((large - small) / (500 * clients))) user-space instructions per transaction"
