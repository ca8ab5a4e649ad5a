"""The guard's decision cost per statement, without sockets: ``Gate.decide`` over pgbench's own
statements, as the session hands them over (the Query's text as bytes).

Run: ``.venv/bin/python bench/decide.py`` (``--profile`` prints a cProfile of the same loop).
Each workload is timed best of ``--repeat`` over ``--count`` statements; the simple protocol
gets a new literal every time (as pgbench sends it), the extended protocol the same text. The
catalog is a hand-made copy of pgbench's four tables (no triggers, unique keys as pgbench -i
creates them) and the policy is the bench's guard-on policy: default signatures and a row
limit on pgbench_accounts. "cold" clears every cache first: the full analysis of each text.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from proxyworker.analysis import configure_cache
from proxyworker.config.policy import DatabasePolicy
from proxyworker.guard.catalog import Catalog, Relation
from proxyworker.guard.gate import Gate
from proxyworker.policy.engine import Policy

_SAFE = frozenset({"now", "current_timestamp", "abs", "lower", "upper", "length", "coalesce"})


def pgbench_catalog() -> Catalog:
    def table(oid: int, name: str, key: str | None) -> Relation:
        keys = (frozenset({key}),) if key else ()
        return Relation(oid, "public", name, "r", None, False, False, keys, False)

    return Catalog(
        _SAFE,
        (
            table(16384, "pgbench_accounts", "aid"),
            table(16385, "pgbench_branches", "bid"),
            table(16386, "pgbench_tellers", "tid"),
            table(16387, "pgbench_history", None),
        ),
    )


def gate() -> Gate:
    policy = Policy.compile(DatabasePolicy(table_limits={"pgbench_accounts": 100}))
    g = Gate(policy, "bench", "bench", catalog=pgbench_catalog())
    g.search_path = ("$user", "public")
    return g


def select_only(rng: random.Random) -> list[bytes]:
    return [f"SELECT abalance FROM pgbench_accounts WHERE aid = {rng.randint(1, 10**6)};".encode()]


def tpcb(rng: random.Random) -> list[bytes]:
    aid, bid, tid = rng.randint(1, 10**6), rng.randint(1, 10), rng.randint(1, 100)
    delta = rng.randint(-5000, 5000)
    return [
        s.encode()
        for s in (
            "BEGIN;",
            f"UPDATE pgbench_accounts SET abalance = abalance + {delta} WHERE aid = {aid};",
            f"SELECT abalance FROM pgbench_accounts WHERE aid = {aid};",
            f"UPDATE pgbench_tellers SET tbalance = tbalance + {delta} WHERE tid = {tid};",
            f"UPDATE pgbench_branches SET bbalance = bbalance + {delta} WHERE bid = {bid};",
            "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) "
            f"VALUES ({tid}, {bid}, {aid}, {delta}, CURRENT_TIMESTAMP);",
            "END;",
        )
    ]


def extended(rng: random.Random) -> list[bytes]:
    return [b"SELECT abalance FROM pgbench_accounts WHERE aid = $1"]


WORKLOADS: dict[str, Callable[[random.Random], list[bytes]]] = {
    "select-only, simple": select_only,
    "select-only, extended": extended,
    "TPC-B, simple": tpcb,
}


def run(texts: list[bytes], cold: bool) -> float:
    """Seconds for deciding every text, as the session does (bytes in)."""
    g = gate()
    decide = g.decide_bytes
    if cold:
        configure_cache(10_000)
        start = time.perf_counter()
        for text in texts:
            configure_cache(10_000)
            g.forget()
            decide(text)
        return time.perf_counter() - start
    decide(texts[0])
    start = time.perf_counter()
    for text in texts:
        decide(text)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=20_000, help="transactions per timing")
    parser.add_argument("--repeat", type=int, default=5, help="timings; the best is shown")
    parser.add_argument("--profile", action="store_true", help="cProfile the warm loop")
    args = parser.parse_args()
    rng = random.Random(1)
    print(f"{'workload':24} {'statements/tx':>14} {'µs per tx':>10} {'µs per tx, cold':>16}")
    for name, make in WORKLOADS.items():
        per_tx = [make(rng) for _ in range(args.count)]
        texts = [t for tx in per_tx for t in tx]
        if args.profile:
            profiler = cProfile.Profile()
            profiler.runcall(run, texts, False)
            print(name)
            pstats.Stats(profiler).sort_stats("tottime").print_stats(12)
            continue
        warm = min(run(texts, False) for _ in range(args.repeat))
        cold = min(run(texts[:2000], True) for _ in range(2)) / 2000 * len(texts)
        n = len(texts) // args.count
        print(
            f"{name:24} {n:>14} {warm / args.count * 1e6:>10.2f} {cold / args.count * 1e6:>16.1f}"
        )


if __name__ == "__main__":
    main()
