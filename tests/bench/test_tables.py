"""The bench's order of runs and its tables: what `make bench` reports is read, not asserted, so
a wrong pairing or a wrong verdict here would go unnoticed in its output."""

from __future__ import annotations

import argparse
import math
import random
import sys
from itertools import pairwise
from pathlib import Path

import pytest

# bench/ is a directory of scripts that import one another by name, not a package.
sys.path.append(str(Path(__file__).resolve().parents[2] / "bench"))

import run
from pgbench import WORKLOADS, Run
from services import Endpoint

_SESSION = [run.GUARDED, "worker", "pgbouncer", "floor"]
_TRANSACTION = [run.GUARDED, "worker", "pgbouncer"]


def _targets() -> list[run.Target]:
    endpoint = Endpoint("e", 1, "u", "p", "d")
    targets = [run.Target("direct", endpoint, "direct")]
    # Listed out of order: _round_order must pair them whatever order _setup gives.
    targets += [run.Target(name, endpoint, "session") for name in reversed(_SESSION)]
    targets += [run.Target(name, endpoint, "transaction") for name in _TRANSACTION]
    return targets


@pytest.mark.parametrize("round_no", range(6))
def test_every_target_runs_once_per_round_with_each_compared_pair_side_by_side(
    round_no: int,
) -> None:
    order = run._round_order(_targets(), round_no)
    assert sorted((t.name, t.mode) for t in order) == sorted((t.name, t.mode) for t in _targets())
    position = {(t.name, t.mode): i for i, t in enumerate(order)}
    pairs = [(run.GUARDED, "worker"), ("worker", "pgbouncer"), ("pgbouncer", "floor")]
    for mode in ("session", "transaction"):
        for a, b in pairs:
            if (b, mode) in position:
                assert abs(position[(a, mode)] - position[(b, mode)]) == 1, (mode, a, b, order)
    modes = [t.mode for t in order]
    assert len([m for m, n in pairwise(modes) if m != n]) == 2  # three groups, not mixed


def test_each_pair_runs_in_both_orders_and_each_group_leads_in_turn() -> None:
    rounds = [run._round_order(_targets(), n) for n in range(6)]
    worker_first = []
    for order in rounds:
        names = [t.name for t in order if t.mode == "session"]
        worker_first.append(names.index("worker") < names.index("pgbouncer"))
    assert worker_first == [True, False] * 3
    assert [order[0].mode for order in rounds[:3]] == ["direct", "session", "transaction"]


def test_a_ratio_is_the_median_of_the_ratios_within_each_round() -> None:
    # Round 2 ran everything at half speed: within a round it cancels out.
    worker = [Run(90.0), Run(None, error="failed"), Run(46.0), Run(93.0)]
    bouncer = [Run(100.0), Run(100.0), Run(50.0), Run(100.0)]
    assert run._ratio(worker, bouncer) == pytest.approx(0.92)  # median of 0.90, 0.92, 0.93
    assert run._ratio([Run(None)], [Run(100.0)]) is None


def _args(modes: list[str]) -> argparse.Namespace:
    return argparse.Namespace(workloads=[WORKLOADS[0]], modes=modes, clients=8, rounds=2)


def test_the_tps_table_fails_a_worker_under_the_target_and_passes_one_above() -> None:
    """A ratio compared with a target is shown to three places: 0.896 is no "0.90x FAIL"."""
    name = WORKLOADS[0].name
    tps = {
        (name, "direct", "direct"): [Run(200.0), Run(200.0)],
        (name, "pgbouncer", "session"): [Run(100.0), Run(100.0)],
        (name, "worker", "session"): [Run(91.0), Run(93.0)],
        (name, "pgbouncer", "transaction"): [Run(100.0), Run(100.0)],
        (name, "worker", "transaction"): [Run(89.4), Run(89.8)],
    }
    rows = run._tps_table(_args(["session", "transaction"]), tps).splitlines()[4:]
    assert rows == [
        f"| {name} | session | 200 | 100 | 92 | 0.920x | 0.46x | pass |",
        f"| {name} | transaction | 200 | 100 | 90 | 0.896x | 0.45x | FAIL |",
    ]


def test_the_guard_table_fails_a_ratio_that_rounds_to_the_target_from_below() -> None:
    name = WORKLOADS[0].name
    tps = {
        (name, "worker", "session"): [Run(100.0), Run(100.0)],
        (name, run.GUARDED, "session"): [Run(96.6), Run(97.0)],
        (name, "worker", "transaction"): [Run(100.0), Run(50.0)],
        (name, run.GUARDED, "transaction"): [Run(97.0), Run(49.0)],
    }
    rows = [
        row.split(" | ")
        for row in run._guard_table(_args(["session", "transaction"]), tps).splitlines()[4:6]
    ]
    assert [(row[4], row[5], row[-1]) for row in rows] == [
        ("0.968x", "n/a", "FAIL |"),  # (two rounds: too few for an interval)
        ("0.975x", "n/a", "pass |"),
    ]


def test_the_guard_table_shows_where_the_median_ratio_lies() -> None:
    name = WORKLOADS[0].name
    off = [Run(100.0)] * 6
    on = [Run(t) for t in (99.0, 95.0, 101.0, 97.0, 98.0, 96.0)]
    tps = {(name, "worker", "session"): off, (name, run.GUARDED, "session"): on}
    row = run._guard_table(_args(["session"]), tps).splitlines()[4].split(" | ")
    assert (row[4], row[5]) == ("0.975x", "0.950-1.010")


def test_the_median_interval_is_made_of_order_statistics_wide_enough_for_its_confidence() -> None:
    assert run.median_interval([3.0, 1.0, 2.0, 4.0]) is None  # 2 x 1/16 > 10 %: no k
    assert run.median_interval([5.0, 1.0, 3.0, 2.0, 4.0]) == (1.0, 5.0)
    values = [float(v) for v in range(30)]
    assert run.median_interval(values) == (10.0, 19.0)  # 11th smallest and 11th largest
    assert run.median_interval(values, 0.5) == (12.0, 17.0)
    # Drawn from a distribution whose median is 0, the interval holds 0 at least 90 % of the
    # time (and, taking the largest k, not far more often).
    rng = random.Random(7)
    for n in (6, 12, 30):
        held = 0
        for _ in range(2000):
            interval = run.median_interval([rng.expovariate(1.0) - math.log(2) for _ in range(n)])
            assert interval is not None
            held += interval[0] <= 0 <= interval[1]
        assert 0.88 <= held / 2000 <= 0.985, (n, held)


def test_the_guard_pair_alone_runs_both_workers_side_by_side_in_each_mode() -> None:
    endpoint = Endpoint("e", 1, "u", "p", "d")
    targets = [
        run.Target(name, endpoint, mode)
        for mode in ("session", "transaction")
        for name in ("worker", run.GUARDED)
    ]
    orders = [[(t.name, t.mode) for t in run._round_order(targets, n)] for n in range(2)]
    assert orders[0] == [
        (run.GUARDED, "session"),
        ("worker", "session"),
        (run.GUARDED, "transaction"),
        ("worker", "transaction"),
    ]
    assert orders[1] == [
        ("worker", "transaction"),
        (run.GUARDED, "transaction"),
        ("worker", "session"),
        (run.GUARDED, "session"),
    ]
    with pytest.raises(SystemExit):
        run._arguments(["--guard", "pair", "--floor"])


def test_the_idle_table_has_a_column_per_target_that_ran() -> None:
    name = WORKLOADS[0].name
    tps = {
        (name, "direct", "direct"): [Run(200.0, idle_cores=0.02), Run(200.0, idle_cores=0.0)],
        (name, "pgbouncer", "session"): [Run(100.0, idle_cores=0.15)],
        (name, "worker", "session"): [Run(90.0, idle_cores=0.25), Run(90.0, idle_cores=0.19)],
        (name, "floor", "session"): [Run(95.0, idle_cores=0.2)],
        (name, "pgbouncer", "transaction"): [Run(100.0, idle_cores=0.17)],
        (name, "worker", "transaction"): [Run(None)],
    }
    lines = run._idle_table(_args(["session", "transaction"]), tps).splitlines()
    assert lines[2] == "| workload | pool mode | direct | PgBouncer | worker | floor |"
    assert lines[4:] == [
        f"| {name} | session | 0.01 | 0.15 | 0.22 | 0.20 |",
        f"| {name} | transaction | 0.01 | 0.17 |  |  |",
    ]


def test_a_runs_slices_take_turns_in_both_directions() -> None:
    assert [list(run._slice_order(3, n)) for n in range(3)] == [[0, 1, 2], [2, 1, 0], [0, 1, 2]]


def test_a_targets_slices_add_up_to_one_run() -> None:
    # 2,000 transactions in 2 s, then 500 in 1 s: 2,500 in 3 s; CPU and idle cores weighted.
    fast = Run(1000.0, 2000, cpu_us_per_tx=(1.0, 10.0), idle_cores=0.2)
    slow = Run(500.0, 500, cpu_us_per_tx=(3.0, 20.0), idle_cores=0.6)
    combined = run._combined([fast, slow])
    assert combined.tps == pytest.approx(2500 / 3) and combined.transactions == 2500
    assert combined.cpu_us_per_tx == pytest.approx((1.4, 12.0))
    assert combined.idle_cores == pytest.approx((0.2 * 2 + 0.6 * 1) / 3)
    failed = Run(None, error="pgbench: connection refused")
    assert run._combined([fast, failed, slow]) is failed
    direct = run._combined([Run(1000.0, 2000, idle_cores=0.1), Run(1000.0, 1000)])
    assert direct.cpu_us_per_tx is None and direct.idle_cores is None  # (not known for all)
