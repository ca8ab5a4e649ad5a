"""Prometheus metrics of a worker process.

Label children are bound once (``pool_labels``, ``database_labels``) so the hot path only calls
``inc``/``observe`` on a ready object. What the relay counts per message or per request is
*batched*: plain arithmetic on the hot path, handed to Prometheus by :func:`flush` before each
scrape and once a second (with ``--workers N`` every Prometheus update writes to a shared file
under a lock, several microseconds each). With ``--workers N`` each process writes to the
multiprocess directory and the supervisor serves the merged view.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Final

from prometheus_client import Counter, Gauge, Histogram

from proxyworker import COMPILED, __version__


class BatchedCounter:
    """A counter the hot path bumps with a plain addition."""

    __slots__ = ("_target", "value")

    def __init__(self, target: Counter) -> None:
        self._target, self.value = target, 0.0
        _BATCHED.append(self)

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def flush(self) -> None:
        if self.value:
            value, self.value = self.value, 0.0
            self._target.inc(value)


class BatchedGauge:
    """A gauge the hot path moves up and down with plain arithmetic."""

    __slots__ = ("_target", "delta")

    def __init__(self, target: Gauge) -> None:
        self._target, self.delta = target, 0.0
        _BATCHED.append(self)

    def inc(self, amount: float = 1.0) -> None:
        self.delta += amount

    def dec(self, amount: float = 1.0) -> None:
        self.delta -= amount

    def flush(self) -> None:
        if self.delta:
            delta, self.delta = self.delta, 0.0
            self._target.inc(delta)


class BatchedHistogram:
    """A histogram the hot path fills with one bisect and two additions."""

    __slots__ = ("_bounds", "_counts", "_sum", "_target")

    def __init__(self, target: Histogram) -> None:
        self._target = target
        self._bounds: tuple[float, ...] = tuple(target._upper_bounds)  # ends with +Inf
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0
        _BATCHED.append(self)

    def observe(self, value: float) -> None:
        # The first bucket whose upper bound is >= value, as Histogram.observe counts it
        # (searched from the smallest: latencies are mostly short, and compiled, this loop
        # costs less than a call to bisect).
        bucket = 0
        for bound in self._bounds:
            if value <= bound:
                break
            bucket += 1
        counts = self._counts
        counts[bucket] = counts[bucket] + 1  # (+= on an item is a generic in-place add)
        self._sum += value

    def flush(self) -> None:
        counts, total = self._counts, self._sum
        if not any(counts):
            return
        self._counts, self._sum = [0] * len(counts), 0.0
        # Histogram has no public bulk update; prometheus-client is pinned and a test reads
        # the exposition back, so a change of these attributes cannot pass unnoticed.
        for bucket, n in zip(self._target._buckets, counts, strict=True):
            if n:
                bucket.inc(n)
        self._target._sum.inc(total)


_BATCHED: Final[list[BatchedCounter | BatchedGauge | BatchedHistogram]] = []


def flush() -> None:
    """Hand every batched value to Prometheus."""
    for batched in _BATCHED:
        batched.flush()


async def flush_every(seconds: float) -> None:
    while True:
        await asyncio.sleep(seconds)
        flush()


_LATENCY_BUCKETS: Final = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0,
)  # fmt: skip

CLIENT_CONNECTIONS: Final = Gauge(
    "sqlproxy_client_connections", "Client connections open", multiprocess_mode="livesum"
)
CLIENTS_ACCEPTED: Final = Counter("sqlproxy_clients_accepted", "Client connections accepted")
CLIENTS_REFUSED: Final = Counter(
    "sqlproxy_clients_refused", "Client connections refused", ["reason"]
)
QUERIES: Final = Counter(
    "sqlproxy_queries", "Requests relayed (simple Query or extended Sync)", ["database"]
)
QUERY_LATENCY: Final = Histogram(
    "sqlproxy_query_duration_seconds",
    "From forwarding a request to the server's ReadyForQuery",
    ["database"],
    buckets=_LATENCY_BUCKETS,
)
BYTES_FROM_CLIENTS: Final = BatchedCounter(
    Counter("sqlproxy_client_bytes_received", "Bytes received from clients")
)
BYTES_TO_CLIENTS: Final = BatchedCounter(
    Counter("sqlproxy_client_bytes_sent", "Bytes relayed to clients")
)
ERRORS: Final = Counter("sqlproxy_errors", "Errors by kind", ["kind"])
CANCELS: Final = Counter("sqlproxy_cancel_requests", "CancelRequests by outcome", ["outcome"])
SERVER_CONNECTIONS: Final = Gauge(
    "sqlproxy_server_connections",
    "Server connections open or opening",
    ["database"],
    multiprocess_mode="livesum",
)
SERVER_IDLE: Final = Gauge(
    "sqlproxy_server_connections_idle",
    "Server connections idle in the pool",
    ["database"],
    multiprocess_mode="livesum",
)
POOL_WAIT: Final = Histogram(
    "sqlproxy_pool_wait_seconds",
    "Time a client waited for a server connection",
    ["database"],
    buckets=_LATENCY_BUCKETS,
)
SERVER_CONNECT_ERRORS: Final = Counter(
    "sqlproxy_server_connect_errors", "Failed attempts to open a server connection", ["database"]
)
GUARD_PATHS: Final = Counter(
    "sqlproxy_guard_statements",
    "Statements by the guard's path: read (nothing to verify), static (proven bounded), "
    "verified (checked by the server's counters), denied",
    ["path"],
)
CONFIG_RELOADS: Final = Counter("sqlproxy_config_reloads", "Configuration reloads", ["outcome"])
BUILD_INFO: Final = Gauge(
    "sqlproxy_build_info",
    "The worker's version, and whether its hot path runs compiled (1)",
    ["version", "compiled"],
    multiprocess_mode="max",
)
BUILD_INFO.labels(__version__, "yes" if COMPILED else "no").set(1)


@dataclass(frozen=True, slots=True)
class PoolLabels:
    size: Gauge
    idle: BatchedGauge  # moves with every transaction in transaction mode
    wait: Histogram
    errors: Counter


_IDLE: Final[dict[str, BatchedGauge]] = {}


def _idle_gauge(database: str) -> BatchedGauge:
    """One per database: the pools of a reloaded configuration share their database's."""
    batched = _IDLE.get(database)
    if batched is None:
        batched = _IDLE[database] = BatchedGauge(SERVER_IDLE.labels(database))
    return batched


def pool_labels(database: str) -> PoolLabels:
    return PoolLabels(
        SERVER_CONNECTIONS.labels(database),
        _idle_gauge(database),
        POOL_WAIT.labels(database),
        SERVER_CONNECT_ERRORS.labels(database),
    )


@dataclass(frozen=True, slots=True)
class DatabaseLabels:
    queries: BatchedCounter
    latency: BatchedHistogram


_DATABASE_LABELS: Final[dict[str, DatabaseLabels]] = {}


def database_labels(database: str) -> DatabaseLabels:
    labels = _DATABASE_LABELS.get(database)
    if labels is None:
        labels = _DATABASE_LABELS[database] = DatabaseLabels(
            BatchedCounter(QUERIES.labels(database)),
            BatchedHistogram(QUERY_LATENCY.labels(database)),
        )
    return labels
