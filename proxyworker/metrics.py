"""Prometheus metrics of a worker process.

Label children are bound once (``pool_labels``, ``DATABASE``) so the hot path only calls
``inc``/``observe`` on a ready object. With ``--workers N`` each process writes to the
multiprocess directory and the supervisor serves the merged view.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

_LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0,
)  # fmt: skip

CLIENT_CONNECTIONS = Gauge(
    "sqlproxy_client_connections", "Client connections open", multiprocess_mode="livesum"
)
CLIENTS_ACCEPTED = Counter("sqlproxy_clients_accepted", "Client connections accepted")
CLIENTS_REFUSED = Counter("sqlproxy_clients_refused", "Client connections refused", ["reason"])
QUERIES = Counter(
    "sqlproxy_queries", "Requests relayed (simple Query or extended Sync)", ["database"]
)
QUERY_LATENCY = Histogram(
    "sqlproxy_query_duration_seconds",
    "From forwarding a request to the server's ReadyForQuery",
    ["database"],
    buckets=_LATENCY_BUCKETS,
)
BYTES_FROM_CLIENTS = Counter("sqlproxy_client_bytes_received", "Bytes received from clients")
BYTES_TO_CLIENTS = Counter("sqlproxy_client_bytes_sent", "Bytes relayed to clients")
ERRORS = Counter("sqlproxy_errors", "Errors by kind", ["kind"])
CANCELS = Counter("sqlproxy_cancel_requests", "CancelRequests by outcome", ["outcome"])
SERVER_CONNECTIONS = Gauge(
    "sqlproxy_server_connections",
    "Server connections open or opening",
    ["database"],
    multiprocess_mode="livesum",
)
SERVER_IDLE = Gauge(
    "sqlproxy_server_connections_idle",
    "Server connections idle in the pool",
    ["database"],
    multiprocess_mode="livesum",
)
POOL_WAIT = Histogram(
    "sqlproxy_pool_wait_seconds",
    "Time a client waited for a server connection",
    ["database"],
    buckets=_LATENCY_BUCKETS,
)
SERVER_CONNECT_ERRORS = Counter(
    "sqlproxy_server_connect_errors", "Failed attempts to open a server connection", ["database"]
)
GUARD_PATHS = Counter(
    "sqlproxy_guard_statements",
    "Statements by the guard's path: read (nothing to verify), static (proven bounded), "
    "verified (checked by the server's counters), denied",
    ["path"],
)
CONFIG_RELOADS = Counter("sqlproxy_config_reloads", "Configuration reloads", ["outcome"])


@dataclass(frozen=True, slots=True)
class PoolLabels:
    size: Gauge
    idle: Gauge
    wait: Histogram
    errors: Counter


def pool_labels(database: str) -> PoolLabels:
    return PoolLabels(
        SERVER_CONNECTIONS.labels(database),
        SERVER_IDLE.labels(database),
        POOL_WAIT.labels(database),
        SERVER_CONNECT_ERRORS.labels(database),
    )


@dataclass(frozen=True, slots=True)
class DatabaseLabels:
    queries: Counter
    latency: Histogram


def database_labels(database: str) -> DatabaseLabels:
    return DatabaseLabels(QUERIES.labels(database), QUERY_LATENCY.labels(database))
