"""``make bench``: pgbench directly, through PgBouncer and through the worker, interleaved.

Each round runs every workload against every target, each run in slices (3 of 2 s) that take
turns with the other targets' slices. The two sides of each comparison run back to back, first
one then the other in turn, so slow drifts of a shared 2-core machine (other processes,
checkpoints, CPU frequency) neither fall between them nor favour whichever runs first, and a
slow stretch of a few seconds falls on every target's slices alike. The table reports the
median TPS over the rounds and, against the 0.9x target, the median of the worker/PgBouncer
ratios of each round (drift between rounds cancels out of a ratio within one); a 1-client run
measures the p50 latency the worker adds over a direct connection (target: 0.06 ms).
``--guard pair`` (``make bench-guard``) runs only the worker with the guard on and off, for
the many rounds its 0.97x target needs on a noisy machine.

The numbers are reported, not asserted: the exit status is non-zero only when the bench cannot
run (a tool is missing, the database cannot be prepared, a proxy does not start). With
``--profile FILE`` it instead samples the worker with py-spy during a pgbench run and prints
where the time goes. Everything listens on 127.0.0.1; every process started is stopped on
exit, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import hotspots
import pgbench
from pgbench import LATENCY_WORKLOAD, WORKLOADS, Run, Workload
from services import (
    CLIENT_PASSWORD,
    CLIENT_USER,
    ROOT,
    SESSION_DB,
    TRANSACTION_DB,
    Endpoint,
    Services,
    SetupError,
    prepare_database,
    require_tools,
    server_connection_budget,
    settle,
    tool_version,
)

TPS_TARGET = 0.90
"""The worker's TPS at least this fraction of PgBouncer's, per workload and pool mode."""
GUARD_TARGET = 0.97
"""The guard's target: TPS with the guard on / TPS with it off."""
GUARDED = "guarded worker"
"""The second worker of ``--guard both``: the guard on."""
ADDED_P50_TARGET_MS = 0.06
"""p50 latency the worker may add over a direct connection at 1 client."""

_MODES = ("session", "transaction")
_WORKLOAD_KEYS = {"simple": WORKLOADS[0], "extended": WORKLOADS[1], "tpcb": WORKLOADS[2]}


@dataclass(frozen=True)
class Target:
    name: str
    endpoint: Endpoint
    mode: str
    """"direct", "session" or "transaction"."""


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--duration", type=int, default=6, help="seconds per pgbench run (default 6)")
    add(
        "--slices",
        type=int,
        default=3,
        help="run each target's run of a round in this many slices (of --duration / slices "
        "s, whole seconds), taking turns with the other targets' slices (default 3)",
    )
    add("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    add("--clients", type=int, default=8, help="pgbench clients for TPS runs (default 8)")
    add("--threads", type=int, default=2, help="pgbench threads (default 2, one per core)")
    add(
        "--latency-duration",
        type=int,
        default=5,
        help="1-client runs: 1 s slices per path per round (default 5)",
    )
    add("--scale", type=int, default=10, help="pgbench scale factor (default 10)")
    add("--quick", action="store_true", help="1 round of 2 s runs: a smoke test (< 1 min)")
    add("--worker-processes", type=int, default=1, help="run the worker with --workers N")
    add(
        "--guard",
        choices=("off", "on", "both", "pair"),
        default="off",
        help="off: the relay alone (compare with PgBouncer); on: default signatures and a "
        "row limit on pgbench_accounts; both: a second worker with the guard on, interleaved "
        "with the others, and a table of guard on / off; pair: only the two workers of "
        "'both' (no PgBouncer, direct or latency runs), for many rounds of that comparison",
    )
    add(
        "--floor",
        action="store_true",
        help="also run bench/floor.py (a uvloop relay that only forwards bytes) in session "
        "mode: what any Python relay costs",
    )
    add("--modes", default="session,transaction", help="pool modes to compare (default both)")
    add(
        "--workloads",
        default="simple,extended,tpcb",
        help="subset of simple,extended,tpcb (default all)",
    )
    add("--pg-port", type=int, default=5432, help="the local PostgreSQL (default 5432)")
    add(
        "--profile",
        metavar="FILE",
        type=Path,
        help="instead of the table: py-spy the worker during one run of the first workload, "
        "write its collapsed stacks to FILE and print the hot spots",
    )
    add("--profile-rate", type=int, default=250, help="py-spy samples per second (default 250)")
    add("--native", action="store_true", help="--profile: include C frames (uvloop, libuv)")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.duration, args.slices, args.latency_duration = 1, 2, 1, 3
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - set(_MODES):
        parser.error("--modes takes session and/or transaction")
    args.modes = modes
    try:
        args.workloads = [_WORKLOAD_KEYS[w.strip()] for w in args.workloads.split(",")]
    except KeyError as exc:
        parser.error(f"unknown workload {exc}; use simple, extended, tpcb")
    if min(args.duration, args.rounds, args.clients, args.threads, args.worker_processes) < 1:
        parser.error("--duration, --rounds, --clients, --threads, --worker-processes must be >= 1")
    if args.slices < 1 or args.duration % args.slices:
        parser.error("--slices must be >= 1 and divide --duration (pgbench -T takes seconds)")
    if args.profile is not None and args.worker_processes != 1:
        parser.error("--profile samples one process: use --worker-processes 1")
    if args.guard == "pair" and (args.floor or args.profile is not None):
        parser.error("--guard pair runs the two workers alone: no --floor or --profile")
    return args


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        tools = require_tools("pgbench", "psql", "pgbouncer")
    except SetupError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        return 2
    py_spy = None
    if args.profile is not None:
        py_spy = hotspots.find_py_spy(Path(sys.executable).parent)
        if py_spy is None:
            print(f"bench: py-spy is not installed: {hotspots.INSTALL_HINT}", file=sys.stderr)
            return 2
    services = Services(tools["psql"])
    try:
        direct, targets = _setup(args, tools, services)
        if py_spy is not None:
            _profile(args, tools, services, targets, py_spy)
        else:
            _bench(args, tools, services, direct, targets)
    except SetupError as exc:
        print(f"bench: setup failed: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nbench: interrupted; stopping what it started", file=sys.stderr)
        return 130
    finally:
        # A second Ctrl-C must not leave processes behind: stopping is not interruptible.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        services.close()
    return 0


def _setup(
    args: argparse.Namespace, tools: dict[str, str], services: Services
) -> tuple[Endpoint, list[Target]]:
    """The bench database (its direct endpoint) and the targets to measure, started."""
    direct = prepare_database(tools["psql"], tools["pgbench"], args.pg_port, args.scale)
    limit, used = server_connection_budget(tools["psql"], direct)
    pair = args.guard == "pair"
    workers = {"worker": args.guard == "on"}
    if args.guard in ("both", "pair"):
        workers[GUARDED] = True
    needed = args.clients * (1 + (len(workers) + (not pair)) * len(args.modes))
    if used + needed > limit:
        print(
            f"warning: up to {needed} more server connections needed, "
            f"{limit - used} left under max_connections={limit}",
            file=sys.stderr,
        )
    ports = {}
    if not pair:
        ports["pgbouncer"] = services.start_pgbouncer(
            tools["pgbouncer"], args.pg_port, args.clients
        )
    for name, guard in workers.items():
        ports[name] = services.start_worker(
            args.clients, args.pg_port, args.worker_processes, guard, name
        )
    targets = [] if pair else [Target("direct", direct, "direct")]
    for mode in args.modes:
        db = SESSION_DB if mode == "session" else TRANSACTION_DB
        for name, port in ports.items():
            endpoint = Endpoint(f"{name} ({mode})", port, CLIENT_USER, CLIENT_PASSWORD, db)
            services.wait_ready(name, endpoint)
            targets.append(Target(name, endpoint, mode))
    if args.floor and "session" in args.modes:
        port = services.start_floor(args.pg_port)
        endpoint = dataclasses.replace(direct, name="floor relay (session)", port=port)
        services.wait_ready("floor", endpoint)
        targets.append(Target("floor", endpoint, "session"))
    return direct, targets


def _machine(tools: dict[str, str], direct: Endpoint) -> list[str]:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    server = subprocess.run(
        [tools["psql"], *direct.args(), "-d", direct.dbname, "-X", "-Atc", "SHOW server_version"],
        capture_output=True,
        text=True,
        env=direct.env(),
        check=False,
    ).stdout.strip()
    return [
        f"worker: {_revision()}",
        f"machine: {os.cpu_count()} cores, {cpu}, Linux {platform.release()}",
        f"PostgreSQL {server}; {tool_version(tools['pgbouncer']).splitlines()[0]}; "
        f"{tool_version(tools['pgbench'])}; Python {platform.python_version()}",
    ]


def _revision() -> str:
    """The commit the worker runs from, and whether proxyworker/ has uncommitted changes."""

    def git(*argv: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(ROOT), *argv], capture_output=True, text=True, check=False
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD") or "unknown commit"
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "proxyworker")
    return f"{commit}{' + uncommitted changes in proxyworker/' if dirty else ''}"


def _estimate(args: argparse.Namespace, runs_per_round: int) -> int:
    latency_runs = 0 if args.guard == "pair" else 3 if "session" in args.modes else 1
    per_round = runs_per_round * (args.duration + args.slices)  # (about 1 s to start a slice)
    per_round += latency_runs * args.latency_duration * 1.2
    return int(args.rounds * (per_round + 2))


def _bench(
    args: argparse.Namespace,
    tools: dict[str, str],
    services: Services,
    direct: Endpoint,
    targets: list[Target],
) -> None:
    command = shlex.join([".venv/bin/python", "bench/run.py", *(sys.argv[1:])])
    header = [f"command: {command}", *_machine(tools, direct)]
    header.append(
        f"pgbench -c {args.clients} -j {args.threads} -T {args.duration} "
        f"(in {args.slices} slice(s)), scale {args.scale}, "
        f"{args.rounds} interleaved round(s); worker --workers {args.worker_processes} "
        f"(guard {args.guard}); "
        "sslmode=disable everywhere, SCRAM client auth on both proxies, pool_size = clients"
    )
    runs_per_round = len(args.workloads) * len(targets)
    print("\n".join(header))
    print(f"estimated runtime: ~{_estimate(args, runs_per_round)} s", flush=True)

    tps: dict[tuple[str, str, str], list[Run]] = {}
    latency: dict[str, list[list[int]]] = {}  # per path, per round: transaction latencies
    latency_targets = [t for t in targets if t.mode in ("direct", "session")]
    if args.guard == "pair":
        latency_targets = []  # (the pair's TPS alone: no direct path to add latency to)
    started = time.monotonic()
    seconds = args.duration // args.slices
    for round_no in range(args.rounds):
        for workload in args.workloads:
            order = _round_order(targets, round_no)
            slices: list[list[Run]] = [[] for _ in order]
            for slice_no in range(args.slices):
                for i in _slice_order(len(order), slice_no):
                    if workload.writes:
                        settle(tools["psql"], direct)
                    slices[i].append(
                        _measured_run(args, tools, services, order[i], workload, seconds)
                    )
            for target, runs in zip(order, slices, strict=True):
                result = _combined(runs)
                tps.setdefault((workload.name, target.name, target.mode), []).append(result)
                shown = f"{result.tps:10.0f} tps" if result.tps is not None else result.error
                if result.idle_cores is not None:
                    shown += f"   idle {result.idle_cores:4.2f} cores"
                if result.cpu_us_per_tx is not None:
                    user, system = result.cpu_us_per_tx
                    shown += f"   proxy CPU {user + system:5.1f} us/tx"
                print(
                    f"round {round_no + 1}/{args.rounds}  {workload.name:<22} "
                    f"{target.endpoint.name:<22} {shown}",
                    flush=True,
                )
        measured = _latency_round(args, tools, latency_targets, round_no) if latency_targets else {}
        for name, samples in measured.items():
            latency.setdefault(name, []).append(samples)
            p50 = pgbench.percentile(samples, 0.5) / 1000 if samples else None
            shown = f"p50 {p50:.3f} ms" if p50 is not None else "error (no transactions)"
            print(
                f"round {round_no + 1}/{args.rounds}  {LATENCY_WORKLOAD.name:<22} "
                f"{name:<22} {shown}",
                flush=True,
            )
    print(f"\nfinished in {time.monotonic() - started:.0f} s\n")
    print("\n".join(header))
    print()
    if args.guard != "pair":
        print(_tps_table(args, tps))
        print()
        print(_latency_table(latency, args.latency_duration))
        print()
        print(_cpu_table(args, tps))
        print()
    print(_idle_table(args, tps))
    if args.guard in ("both", "pair"):
        print()
        print(_guard_table(args, tps))
    if args.floor:
        print()
        print(_floor_table(args, tps))
    print()
    print(_rounds_detail(tps, latency))
    print(f"\nwhere the worker's time goes:\n  {hotspots.INSTALL_HINT}")
    print("  .venv/bin/python bench/run.py --profile /tmp/worker.stacks")


_NEIGHBOURS = {GUARDED: 0, "worker": 1, "pgbouncer": 2, "floor": 3}
"""The order of a pool mode's targets in a round: each compared pair (guard on / off, worker /
PgBouncer, floor / PgBouncer) side by side."""


def _round_order(targets: list[Target], round_no: int) -> list[Target]:
    """One round's order. The targets of a pool mode run back to back, each compared pair side
    by side, so a ratio is taken between two runs seconds apart instead of across the round;
    every other round reverses each group, so neither side of a pair always runs first; the
    groups (direct, session, transaction) take turns at the front."""
    groups = [[t for t in targets if t.mode == mode] for mode in ("direct", *_MODES)]
    groups = [sorted(g, key=lambda t: _NEIGHBOURS.get(t.name, -1)) for g in groups if g]
    shift = round_no % len(groups)
    ordered = groups[shift:] + groups[:shift]
    return [t for g in ordered for t in (reversed(g) if round_no % 2 else g)]


def _slice_order(targets: int, slice_no: int) -> range:
    """The order of a round's targets (by index) in one slice: as the round orders them, then
    the other way round, so a pair's sides take turns at going first within a run as well."""
    return range(targets) if slice_no % 2 == 0 else range(targets - 1, -1, -1)


def _combined(slices: list[Run]) -> Run:
    """A target's slices of one round as one run: its transactions over its time (a slice's
    time is its transactions over its TPS, pgbench's time without connecting), its CPU per
    transaction over all its transactions, the idle cores weighted by time. A failed slice
    fails the run."""
    for run in slices:
        if run.tps is None:
            return run
    times = [run.transactions / run.tps if run.tps else 0.0 for run in slices]
    transactions = sum(run.transactions for run in slices)
    elapsed = sum(times)
    idle: float | None = None
    if elapsed and all(run.idle_cores is not None for run in slices):
        idle = sum((r.idle_cores or 0.0) * t for r, t in zip(slices, times, strict=True)) / elapsed
    cpu: tuple[float, float] | None = None
    if transactions and all(run.cpu_us_per_tx is not None for run in slices):
        user = system = 0.0
        for run in slices:
            assert run.cpu_us_per_tx is not None
            user += run.cpu_us_per_tx[0] * run.transactions
            system += run.cpu_us_per_tx[1] * run.transactions
        cpu = (user / transactions, system / transactions)
    tps = transactions / elapsed if elapsed else 0.0
    return Run(tps, transactions, cpu_us_per_tx=cpu, idle_cores=idle)


def _measured_run(
    args: argparse.Namespace,
    tools: dict[str, str],
    services: Services,
    target: Target,
    workload: Workload,
    seconds: int,
) -> Run:
    """One TPS run of ``seconds``; for a proxy, also the CPU time its processes used per
    transaction; for every run, how many cores the machine left idle."""
    before = services.cpu_seconds(target.name) if target.mode != "direct" else None
    idle_before = _idle_seconds()
    started = time.monotonic()
    result = pgbench.run(
        tools["pgbench"], target.endpoint, workload, args.clients, args.threads, seconds
    )
    idle = (_idle_seconds() - idle_before) / (time.monotonic() - started)
    result = dataclasses.replace(result, idle_cores=idle)
    if before is None or not result.transactions:
        return result
    after = services.cpu_seconds(target.name)
    per_tx = tuple(1e6 * (a - b) / result.transactions for a, b in zip(after, before, strict=True))
    return dataclasses.replace(result, cpu_us_per_tx=(per_tx[0], per_tx[1]))


def _idle_seconds() -> float:
    """Idle time of all cores so far (idle + iowait of the ``cpu`` line of ``/proc/stat``)."""
    with open("/proc/stat") as stat:
        fields = stat.readline().split()
    return (int(fields[4]) + int(fields[5])) / os.sysconf("SC_CLK_TCK")


def _median_tps(runs: list[Run]) -> float | None:
    return pgbench.median([r.tps for r in runs if r.tps is not None])


def _ratios(runs: list[Run], to: list[Run]) -> list[float]:
    """The TPS ratio of two targets within each round."""
    return [a.tps / b.tps for a, b in zip(runs, to, strict=False) if a.tps and b.tps]


def _ratio(runs: list[Run], to: list[Run]) -> float | None:
    """The median over rounds of the TPS ratio of two targets within the same round: the
    machine's drift between rounds (seen: direct TPS moving by a third) cancels out, which it
    does not in a ratio of medians."""
    return pgbench.median(_ratios(runs, to))


def median_interval(values: list[float], confidence: float = 0.9) -> tuple[float, float] | None:
    """Where the median of what ``values`` are drawn from lies, with at least ``confidence``:
    the k-th smallest and k-th largest value for the largest k that keeps the chance of both
    falling on one side of the median at most 1 - confidence (each value is on either side
    with probability 1/2; no distribution assumed). None when there are too few values for any k
    (fewer than 5 at 90 %)."""
    ordered = sorted(values)
    n = len(ordered)
    below = 0.0  # P(fewer than k of the n values fall below the median)
    found = None
    for k in range(1, n // 2 + 1):
        below += math.comb(n, k - 1) / 2**n
        if 1 - 2 * below < confidence:
            break
        found = (ordered[k - 1], ordered[n - k])
    return found


def _tps_table(args: argparse.Namespace, tps: dict[tuple[str, str, str], list[Run]]) -> str:
    lines = [
        f"TPS, {args.clients} clients (median of {args.rounds} round(s); each ratio is the "
        "median of the ratios within a round)",
        "",
        "| workload | pool mode | direct | PgBouncer | worker | worker/PgBouncer "
        "| worker/direct | target >= 0.90x |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]

    def fmt(value: float | None) -> str:
        return f"{value:,.0f}" if value is not None else "error"

    for workload in args.workloads:
        direct = _median_tps(tps.get((workload.name, "direct", "direct"), []))
        for mode in args.modes:
            bouncer_runs = tps.get((workload.name, "pgbouncer", mode), [])
            worker_runs = tps.get((workload.name, "worker", mode), [])
            bouncer, worker = _median_tps(bouncer_runs), _median_tps(worker_runs)
            ratio = _ratio(worker_runs, bouncer_runs)
            vs_direct = _ratio(worker_runs, tps.get((workload.name, "direct", "direct"), []))
            verdict = "n/a" if ratio is None else ("pass" if ratio >= TPS_TARGET else "FAIL")
            lines.append(
                f"| {workload.name} | {mode} | {fmt(direct)} | {fmt(bouncer)} | {fmt(worker)} "
                f"| {f'{ratio:.3f}x' if ratio else 'n/a'} "
                f"| {f'{vs_direct:.2f}x' if vs_direct else 'n/a'} | {verdict} |"
            )
    return "\n".join(lines)


def _latency_round(
    args: argparse.Namespace, tools: dict[str, str], targets: list[Target], round_no: int
) -> dict[str, list[int]]:
    """One round of 1-client runs: 1 s slices alternating between the paths, so that the
    paths see the same machine and their p50s can be compared pairwise within the round."""
    samples: dict[str, list[int]] = {t.endpoint.name: [] for t in targets}
    for slice_no in range(args.latency_duration):
        shift = (round_no + slice_no) % len(targets)
        for target in targets[shift:] + targets[:shift]:
            with tempfile.TemporaryDirectory(prefix="sqlproxy-bench-lat-") as tmp:
                result = pgbench.run(
                    tools["pgbench"], target.endpoint, LATENCY_WORKLOAD, 1, 1, 1, Path(tmp)
                )
                if result.tps is not None:
                    samples[target.endpoint.name] += pgbench.logged_latencies_us(Path(tmp))
    return samples


def _p50_ms(samples: list[int]) -> float | None:
    return pgbench.percentile(samples, 0.5) / 1000 if samples else None


def _latency_table(latency: dict[str, list[list[int]]], seconds: int) -> str:
    lines = [
        f"Latency, 1 client, pgbench -S -M simple, {seconds} x 1 s per path per round",
        "",
        "| path | transactions | p50 ms | p99 ms | added p50 ms | target <= 0.060 ms |",
        "|---|---:|---:|---:|---:|---|",
    ]
    direct_rounds = [_p50_ms(r) for r in latency.get("direct", [])]
    for name, rounds in latency.items():
        pooled = [v for r in rounds for v in r]
        if not pooled:
            lines.append(f"| {name} | 0 | error | error | n/a | n/a |")
            continue
        p50 = pgbench.percentile(pooled, 0.5) / 1000
        p99 = pgbench.percentile(pooled, 0.99) / 1000
        # Paired within each round: the machine's drift between rounds cancels out.
        diffs = [
            here - base
            for here, base in zip((_p50_ms(r) for r in rounds), direct_rounds, strict=False)
            if here is not None and base is not None
        ]
        added = pgbench.median(diffs) if name != "direct" else None
        verdict = "" if added is None else ("pass" if added <= ADDED_P50_TARGET_MS else "FAIL")
        lines.append(
            f"| {name} | {len(pooled):,} | {p50:.3f} | {p99:.3f} "
            f"| {f'{added:+.3f}' if added is not None else '-'} | {verdict} |"
        )
    lines += ["", "added p50 = median over rounds of (path p50 - direct p50) in the same round"]
    return "\n".join(lines)


def _median_cpu(runs: list[Run]) -> tuple[float, float, float] | None:
    """A proxy's CPU µs per transaction over the rounds: (user + system, user, system), each
    part the median of its own."""
    found = [r.cpu_us_per_tx for r in runs if r.cpu_us_per_tx is not None]
    if not found:
        return None
    user = statistics.median(c[0] for c in found)
    system = statistics.median(c[1] for c in found)
    return user + system, user, system


def _cpu_table(args: argparse.Namespace, tps: dict[tuple[str, str, str], list[Run]]) -> str:
    lines = [
        "Proxy CPU per transaction, user + system us (median over rounds; all proxy processes)",
        "",
        "| workload | pool mode | PgBouncer | PgBouncer user | worker | worker user "
        "| worker system |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]

    def cpu(workload: Workload, name: str, mode: str) -> tuple[float, float, float] | None:
        return _median_cpu(tps.get((workload.name, name, mode), []))

    for workload in args.workloads:
        for mode in args.modes:
            bouncer, worker = cpu(workload, "pgbouncer", mode), cpu(workload, "worker", mode)
            cells = [f"{v:.1f}" for v in bouncer[:2]] if bouncer else ["n/a"] * 2
            cells += [f"{v:.1f}" for v in worker] if worker else ["n/a"] * 3
            lines.append(f"| {workload.name} | {mode} | {' | '.join(cells)} |")
    return "\n".join(lines)


_LABELS = {"pgbouncer": "PgBouncer"}


def _idle_table(args: argparse.Namespace, tps: dict[tuple[str, str, str], list[Run]]) -> str:
    """Idle cores during each target's runs: a proxy that serialises the clients' traffic
    leaves cores idle that a direct connection keeps busy, so its TPS falls by more than its
    share of the CPU would say."""
    names = [n for n in ("pgbouncer", "worker", GUARDED, "floor") if any(k[1] == n for k in tps)]
    lines = [
        f"Idle cores during the runs, of {os.cpu_count()} (median over rounds)",
        "",
        f"| workload | pool mode | direct | {' | '.join(_LABELS.get(n, n) for n in names)} |",
        "|---|---|" + "---:|" * (1 + len(names)),
    ]

    def idle(key: tuple[str, str, str]) -> str:
        found = [r.idle_cores for r in tps.get(key, []) if r.idle_cores is not None]
        return f"{statistics.median(found):.2f}" if found else ""

    for workload in args.workloads:
        for mode in args.modes:
            cells = [idle((workload.name, "direct", "direct"))]
            cells += [idle((workload.name, name, mode)) for name in names]
            lines.append(f"| {workload.name} | {mode} | {' | '.join(cells)} |")
    return "\n".join(lines)


def _guard_table(args: argparse.Namespace, tps: dict[tuple[str, str, str], list[Run]]) -> str:
    """The guard's cost: the same worker with and without it, in the same rounds."""
    lines = [
        f"The guard's cost: worker with the guard on / off (median of {args.rounds} round(s); "
        "CPU: user + system us per transaction)",
        "",
        "| workload | pool mode | guard off TPS | guard on TPS | on / off | 90% interval "
        "| CPU off | CPU on | target >= 0.97x |",
        "|---|---|---:|---:|---:|---|---:|---:|---|",
    ]

    def cpu(runs: list[Run]) -> str:
        found = _median_cpu(runs)
        return f"{found[0]:.1f}" if found else "n/a"

    for workload in args.workloads:
        for mode in args.modes:
            off_runs = tps.get((workload.name, "worker", mode), [])
            on_runs = tps.get((workload.name, GUARDED, mode), [])
            off, on = _median_tps(off_runs), _median_tps(on_runs)
            ratios = _ratios(on_runs, off_runs)
            ratio = pgbench.median(ratios)
            interval = median_interval(ratios)
            verdict = "n/a" if ratio is None else ("pass" if ratio >= GUARD_TARGET else "FAIL")
            lines.append(
                f"| {workload.name} | {mode} | {f'{off:,.0f}' if off else 'error'} "
                f"| {f'{on:,.0f}' if on else 'error'} "
                f"| {f'{ratio:.3f}x' if ratio else 'n/a'} "
                f"| {f'{interval[0]:.3f}-{interval[1]:.3f}' if interval else 'n/a'} "
                f"| {cpu(off_runs)} | {cpu(on_runs)} | {verdict} |"
            )
    lines += [
        "",
        "90% interval: where the median of the per-round ratios lies with 90% confidence (by",
        "order statistics, no distribution assumed); a run whose interval holds the target",
        "cannot tell a pass from a miss: more rounds narrow it (--guard pair runs only this",
        "comparison)",
    ]
    return "\n".join(lines)


def _floor_table(args: argparse.Namespace, tps: dict[tuple[str, str, str], list[Run]]) -> str:
    """The worker and PgBouncer against the floor (``floor.py``), session mode."""
    lines = [
        f"The floor: a uvloop relay that only forwards bytes (median of {args.rounds} round(s), "
        "session mode; CPU: user + system us per transaction)",
        "",
        "| workload | PgBouncer TPS | floor TPS | floor / PgBouncer | worker / floor "
        "| floor CPU | floor user |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for workload in args.workloads:
        bouncer_runs = tps.get((workload.name, "pgbouncer", "session"), [])
        runs = tps.get((workload.name, "floor", "session"), [])
        bouncer, floor = _median_tps(bouncer_runs), _median_tps(runs)
        to_bouncer = _ratio(runs, bouncer_runs)
        worker_to_floor = _ratio(tps.get((workload.name, "worker", "session"), []), runs)
        cpu = _median_cpu(runs)
        lines.append(
            f"| {workload.name} | {f'{bouncer:,.0f}' if bouncer else 'error'} "
            f"| {f'{floor:,.0f}' if floor else 'error'} "
            f"| {f'{to_bouncer:.2f}x' if to_bouncer else 'n/a'} "
            f"| {f'{worker_to_floor:.2f}x' if worker_to_floor else 'n/a'} "
            f"| {f'{cpu[0]:.1f}' if cpu else 'n/a'} | {f'{cpu[1]:.1f}' if cpu else 'n/a'} |"
        )
    return "\n".join(lines)


def _rounds_detail(
    tps: dict[tuple[str, str, str], list[Run]], latency: dict[str, list[list[int]]]
) -> str:
    lines = ["Per round (the spread shows the noise):"]
    for (workload, name, mode), runs in tps.items():
        label = name if mode == "direct" else f"{name} ({mode})"
        values = " ".join(f"{r.tps:8.0f}" if r.tps is not None else "   error" for r in runs)
        lines.append(f"  {workload:<22} {label:<24} {values} tps")
    for name, rounds in latency.items():
        values = " ".join(
            f"{v:8.3f}" if v is not None else "   error" for v in map(_p50_ms, rounds)
        )
        lines.append(f"  {'1 client, p50':<22} {name:<24} {values} ms")
    return "\n".join(lines)


def _profile(
    args: argparse.Namespace,
    tools: dict[str, str],
    services: Services,
    targets: list[Target],
    py_spy: str,
) -> None:
    workload: Workload = args.workloads[0]
    mode = args.modes[0]
    target = next(t for t in targets if t.name == "worker" and t.mode == mode)
    assert services.worker_pid is not None
    out: Path = args.profile
    print(
        f"profiling worker pid {services.worker_pid}: pgbench {workload.name}, {mode} mode, "
        f"{args.clients} clients, {args.duration} s at {args.profile_rate} Hz",
        flush=True,
    )
    # Warm up (server connections, caches) so the profile shows the steady state.
    pgbench.run(tools["pgbench"], target.endpoint, workload, args.clients, args.threads, 2)
    sampler = hotspots.record(
        py_spy, services.worker_pid, args.duration, out.resolve(), args.profile_rate, args.native
    )
    time.sleep(0.3)
    result = pgbench.run(
        tools["pgbench"], target.endpoint, workload, args.clients, args.threads, args.duration
    )
    sampler_output, _ = sampler.communicate(timeout=args.duration + 60)
    if sampler.returncode != 0:
        raise SetupError(f"py-spy failed: {sampler_output.strip()[-2000:]}")
    shown = f"{result.tps:.0f} tps (under the sampler)" if result.tps else result.error
    print(f"pgbench: {shown}\ncollapsed stacks: {out}\n")
    print(hotspots.report(hotspots.summarize(out)))


if __name__ == "__main__":
    sys.exit(main())
