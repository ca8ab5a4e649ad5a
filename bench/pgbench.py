"""Running pgbench against one endpoint and reading what it reports.

A run returns TPS as pgbench computes it ("without initial connection time"), so connecting
and authenticating — SCRAM through a proxy — is not part of the number. Latency runs log every
transaction (``--log``) and the p50 is computed here from the logged microseconds.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from services import Endpoint


@dataclass(frozen=True)
class Workload:
    name: str
    args: tuple[str, ...]
    writes: bool = False
    """Each run starts from the same state of the tables (``services.settle``)."""


WORKLOADS = (
    Workload("select-only, simple", ("-S", "-M", "simple")),
    Workload("select-only, extended", ("-S", "-M", "extended")),
    Workload("TPC-B, simple", ("-M", "simple"), writes=True),
)
LATENCY_WORKLOAD = Workload("select-only, simple, 1 client", ("-S", "-M", "simple"))

_TPS = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.MULTILINE)
_COUNT = re.compile(r"^number of transactions actually processed: (\d+)", re.MULTILINE)


@dataclass(frozen=True)
class Run:
    tps: float | None
    """None when pgbench failed; ``error`` says why."""
    transactions: int = 0
    error: str = ""
    cpu_us_per_tx: tuple[float, float] | None = None
    """(user, system) CPU microseconds the proxy spent per transaction; None for direct."""
    idle_cores: float | None = None
    """How many of the machine's cores stood idle during the run, on average (``/proc/stat``):
    near 0 when pgbench, PostgreSQL and the proxy keep every core busy; more when they wait on
    one another, e.g. on a single-threaded proxy."""


def run(
    pgbench: str,
    endpoint: Endpoint,
    workload: Workload,
    clients: int,
    threads: int,
    duration: int,
    log_dir: Path | None = None,
) -> Run:
    argv = [pgbench, *endpoint.args(), "-n", "-c", str(clients), "-j", str(threads)]
    argv += ["-T", str(duration), *workload.args]
    if log_dir is not None:
        argv += ["--log", f"--log-prefix={log_dir / 'tx'}"]
    argv.append(endpoint.dbname)
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env=endpoint.env(),
            timeout=duration + 60,
            check=False,
            cwd=log_dir or tempfile.gettempdir(),
        )
    except subprocess.TimeoutExpired:
        return Run(None, error=f"pgbench did not finish within {duration + 60} s")
    found = _TPS.search(done.stdout)
    if done.returncode != 0 or found is None:
        lines = (done.stderr.strip() or done.stdout.strip()).splitlines()
        return Run(None, error=lines[-1] if lines else f"pgbench exited with {done.returncode}")
    count = _COUNT.search(done.stdout)
    return Run(float(found.group(1)), int(count.group(1)) if count else 0)


def logged_latencies_us(log_dir: Path) -> list[int]:
    """Per-transaction latencies (µs) from ``--log`` files: ``client tx latency script ...``."""
    out: list[int] = []
    for path in sorted(log_dir.glob("tx.*")):
        with path.open() as lines:
            for line in lines:
                fields = line.split()
                if len(fields) >= 3:
                    out.append(int(fields[2]))
    return out


def percentile(values: list[int], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))])


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None
