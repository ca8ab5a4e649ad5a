"""Fleet metrics for the ``metrics`` stream, computed from the workers' heartbeats.

A heartbeat carries counters since the worker started (queries, denied, alerted) and the
latency quantiles of its last interval; rates are the difference of two consecutive heartbeats
over the time between them. :class:`FleetMetrics` is fed the heartbeats the ingest fans out
(seeded from the two newest stored ones per worker when a socket subscribes) and asked for a
snapshot once a second. Fleet quantiles are the worst worker's (quantiles do not add up).
Pure bookkeeping: no I/O except :func:`seed`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from controlplane.fleet.models import Heartbeat, Worker
from controlplane.fleet.services import current_state
from controlplane.streams.frames import FleetTotals, WorkerMetrics


@dataclass
class Beat:
    time: float
    started: float
    config_version: int | None
    connections: int
    queries: int
    denied: int
    alerted: int
    p50_ms: float | None
    p99_ms: float | None

    @classmethod
    def from_payload(cls, data: dict[str, Any]) -> Beat:
        return cls(
            time=float(data["time"]),
            started=float(data["started"]),
            config_version=data.get("config_version"),
            connections=int(data["connections"]),
            queries=int(data["queries"]),
            denied=int(data["denied"]),
            alerted=int(data["alerted"]),
            p50_ms=data.get("latency_p50_ms"),
            p99_ms=data.get("latency_p99_ms"),
        )


def _rate(new: int, old: int, seconds: float) -> float:
    if seconds <= 0 or new < old:  # restarted: counters began again
        return 0.0
    return (new - old) / seconds


class FleetMetrics:
    def __init__(self, stale_seconds: float | None = None) -> None:
        self.stale = float(
            stale_seconds if stale_seconds is not None else settings.SQLPROXY_WORKER_STALE_SECONDS
        )
        self._last: dict[str, Beat] = {}
        self._previous: dict[str, Beat] = {}
        self.published_version = 0

    def feed(self, worker: str, beat: Beat) -> None:
        last = self._last.get(worker)
        if last is not None and beat.time <= last.time:
            return  # late or repeated
        if last is not None and abs(last.started - beat.started) < 0.001:  # same run
            self._previous[worker] = last
        else:
            self._previous.pop(worker, None)
        self._last[worker] = beat

    def workers(self, now: float | None = None, traffic: bool = True) -> list[WorkerMetrics]:
        now = time.time() if now is None else now
        out: list[WorkerMetrics] = []
        for name in sorted(self._last):
            beat = self._last[name]
            before = self._previous.get(name)
            span = beat.time - before.time if before else 0.0
            alive = now - beat.time <= self.stale
            row: WorkerMetrics = {
                "worker": name,
                "alive": alive,
                "config_version": beat.config_version,
                "current": beat.config_version is not None
                and beat.config_version == self.published_version,
                "connections": None,
                "qps": None,
                "blocks_per_s": None,
                "p50_ms": None,
                "p99_ms": None,
            }
            if traffic:
                row["connections"] = beat.connections
                row["p50_ms"], row["p99_ms"] = beat.p50_ms, beat.p99_ms
                if before is not None and alive:
                    row["qps"] = round(_rate(beat.queries, before.queries, span), 3)
                    row["blocks_per_s"] = round(_rate(beat.denied, before.denied, span), 3)
                elif alive:
                    row["qps"] = row["blocks_per_s"] = 0.0
            out.append(row)
        return out

    def totals(self, now: float | None = None) -> FleetTotals:
        now = time.time() if now is None else now
        qps = blocks = alerts = 0.0
        connections = 0
        p50: float | None = None
        p99: float | None = None
        for name, beat in self._last.items():
            if now - beat.time > self.stale:
                continue
            connections += beat.connections
            before = self._previous.get(name)
            if before is not None:
                span = beat.time - before.time
                qps += _rate(beat.queries, before.queries, span)
                blocks += _rate(beat.denied, before.denied, span)
                alerts += _rate(beat.alerted, before.alerted, span)
            if beat.p50_ms is not None:
                p50 = max(p50 or 0.0, beat.p50_ms)
            if beat.p99_ms is not None:
                p99 = max(p99 or 0.0, beat.p99_ms)
        return {
            "qps": round(qps, 3),
            "blocks_per_s": round(blocks, 3),
            "alerts_per_s": round(alerts, 3),
            "connections": connections,
            "p50_ms": p50,
            "p99_ms": p99,
        }


def seed(metrics: FleetMetrics) -> None:
    """Feed the two newest stored heartbeats of every worker, and the published version
    (synchronous: call through database_sync_to_async)."""
    metrics.published_version = current_state().published_version
    for worker in Worker.objects.all():
        rows = list(Heartbeat.objects.filter(worker=worker).order_by("-time")[:2])
        for row in reversed(rows):
            metrics.feed(
                worker.worker_id,
                Beat(
                    time=row.time.timestamp(),
                    started=worker.started.timestamp(),
                    config_version=row.config_version,
                    connections=row.connections,
                    queries=row.queries,
                    denied=row.denied,
                    alerted=row.alerted,
                    p50_ms=row.latency_p50_ms,
                    p99_ms=row.latency_p99_ms,
                ),
            )


def published_version() -> int:
    return current_state().published_version
