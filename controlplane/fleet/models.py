"""The snapshot state (one row) and the workers of the fleet.

``ConfigState.version`` only grows: each compile takes the next number under a row lock, so two
control-plane processes never publish the same version with different contents.
``published_version`` trails it while Redis is unreachable; the difference is the pending
publication that the beat task and the next change retry.
"""

from __future__ import annotations

from django.db import models


class ConfigState(models.Model):
    version = models.BigIntegerField(default=0)
    snapshot = models.BinaryField(default=b"", help_text="JSON of the newest ConfigSnapshot.")
    compiled = models.DateTimeField(null=True, blank=True)
    published_version = models.BigIntegerField(default=0)
    published = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")

    class Meta:
        verbose_name = "config state"

    def __str__(self) -> str:
        return f"config v{self.version} (published v{self.published_version})"

    @property
    def pending(self) -> bool:
        return self.published_version < self.version


class Worker(models.Model):
    worker_id = models.CharField(max_length=200, unique=True)
    first_seen = models.DateTimeField(auto_now_add=True)
    last_heartbeat = models.DateTimeField(db_index=True)
    started = models.DateTimeField()
    config_version = models.BigIntegerField(
        null=True, blank=True, help_text="Snapshot version it enforces (empty: standalone)."
    )
    connections = models.PositiveIntegerField(default=0)
    queries = models.BigIntegerField(default=0)
    denied = models.BigIntegerField(default=0)
    alerted = models.BigIntegerField(default=0)
    latency_p50_ms = models.FloatField(null=True, blank=True)
    latency_p99_ms = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["worker_id"]

    def __str__(self) -> str:
        return self.worker_id


class Heartbeat(models.Model):
    """Recent heartbeats of a worker (a bounded history; see SQLPROXY_HEARTBEAT_HISTORY)."""

    stream_id = models.CharField(max_length=40, unique=True, help_text="Redis stream entry id.")
    worker = models.ForeignKey(Worker, on_delete=models.CASCADE, related_name="heartbeats")
    time = models.DateTimeField(db_index=True)
    config_version = models.BigIntegerField(null=True, blank=True)
    connections = models.PositiveIntegerField(default=0)
    queries = models.BigIntegerField(default=0)
    denied = models.BigIntegerField(default=0)
    alerted = models.BigIntegerField(default=0)
    latency_p50_ms = models.FloatField(null=True, blank=True)
    latency_p99_ms = models.FloatField(null=True, blank=True)

    class Meta:
        ordering = ["-time"]

    def __str__(self) -> str:
        return f"{self.worker.worker_id} at {self.time:%Y-%m-%d %H:%M:%S}"
