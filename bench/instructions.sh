#!/bin/bash
# Instructions per transaction of bench/relay.py under valgrind (callgrind): the run with 1,200
# transactions minus the run with 200, divided by 1,000, so start-up cancels out, less the same
# difference for only making the requests and answers (--build-only). Stable on a shared, noisy
# machine where timings are not; counts whichever build is in place (make build/clean-build).
#
#   bench/instructions.sh "select-only, simple" on [transaction]   # workload (or part), guard
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONHASHSEED=0
workload=$1 guard=$2 mode=${3:-session}
total() {
    local out
    out=$(mktemp)
    valgrind --tool=callgrind --callgrind-out-file="$out" .venv/bin/python bench/relay.py \
        --count "$1" --repeat 1 --guard "$guard" --workload "$workload" --pool-mode "$mode" \
        ${2:-} >/dev/null 2>&1
    callgrind_annotate "$out" | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1; exit}'
    rm -f "$out"
}
relayed=$(($(total 1200) - $(total 200)))
built=$(($(total 1200 --build-only) - $(total 200 --build-only)))
echo "$workload, guard $guard, $mode mode: $(((relayed - built) / 1000)) instructions per transaction"
