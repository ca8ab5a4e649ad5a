#!/bin/bash
# Instructions per transaction of bench/relay.py under valgrind (callgrind): the run with 1,200
# transactions minus the run with 200, divided by 1,000, so start-up cancels out. Stable on a
# shared, noisy machine where timings are not.
#
#   bench/instructions.sh "select-only, simple" on      # workload name (or part of it), guard
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONHASHSEED=0
workload=$1 guard=$2
total() {
    local out
    out=$(mktemp)
    valgrind --tool=callgrind --callgrind-out-file="$out" .venv/bin/python bench/relay.py \
        --count "$1" --repeat 1 --guard "$guard" --workload "$workload" >/dev/null 2>&1
    callgrind_annotate "$out" | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}'
    rm -f "$out"
}
small=$(total 200)
large=$(total 1200)
echo "$workload, guard $guard: $(((large - small) / 1000)) instructions per transaction"
