"""Webhook endpoints, the alerts raised from audit events, and every delivery attempt.

An ``Alert`` is one notification-worthy situation, deduplicated by ``key`` within a throttle
window (``bucket``): the first qualifying event creates it and queues one ``Delivery`` per
subscribed endpoint; repeats in the same window only raise ``count`` (no alert storms). The
unique (tenant, key, bucket) makes concurrent ingest processes agree on one alert.
A ``Delivery`` is claimed by a Celery worker with a conditional UPDATE of its status, retried
with exponential backoff, and ends ``delivered`` or ``failed`` (shown in the admin, and on the
endpoint as ``failing``).
"""

from __future__ import annotations

from django.db import models

from controlplane.databases import crypto
from controlplane.tenants.models import Tenant


class WebhookEndpoint(models.Model):
    class Kind(models.TextChoices):
        SLACK = "slack", "Slack incoming webhook (Block Kit)"
        DISCORD = "discord", "Discord webhook (embeds)"
        JSON = "json", "Generic JSON, signed (HMAC-SHA256)"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="webhooks")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=8, choices=Kind.choices)
    url = models.URLField(max_length=500)
    secret_encrypted = models.TextField(blank=True, default="", editable=False)
    enabled = models.BooleanField(default=True)
    on_block = models.BooleanField(default=True, help_text="Any statement refused by a rule.")
    on_rate_limit = models.BooleanField(default=True, help_text="Rate-limit refusals.")
    on_burst = models.BooleanField(default=True, help_text="Many blocks from one client.")
    burst_blocks = models.PositiveIntegerField(
        default=20, help_text="Blocks from one client address within the burst window..."
    )
    burst_seconds = models.PositiveIntegerField(default=60, help_text="...raise a burst alert.")
    failing = models.BooleanField(
        default=False, editable=False, help_text="Its last delivery failed for good."
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["tenant", "name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.kind})"

    @property
    def secret(self) -> str:
        return crypto.decrypt(self.secret_encrypted) if self.secret_encrypted else ""

    def set_secret(self, secret: str) -> None:
        self.secret_encrypted = crypto.encrypt(secret) if secret else ""


class Alert(models.Model):
    class Kind(models.TextChoices):
        BLOCK = "block"
        HONEYTOKEN = "honeytoken"
        RATE_LIMIT = "rate_limit"
        BURST = "burst"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="alerts")
    kind = models.CharField(max_length=12, choices=Kind.choices)
    key = models.CharField(max_length=500, help_text="What makes two events the same alert.")
    bucket = models.BigIntegerField(help_text="Throttle window number (time // window).")
    first_event_id = models.CharField(max_length=200)
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()
    count = models.PositiveIntegerField(default=1, help_text="Events folded into this alert.")
    database = models.CharField(max_length=200)
    user = models.CharField(max_length=200)
    client = models.CharField(max_length=200)
    rule = models.CharField(max_length=200, blank=True)
    message = models.TextField(blank=True)
    normalized = models.TextField(blank=True)

    class Meta:
        ordering = ["-first_seen"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "key", "bucket"], name="alert_dedup")
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.database} {self.rule} x{self.count}"


class Delivery(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        SENDING = "sending"
        DELIVERED = "delivered"
        FAILED = "failed"

    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries"
    )
    alert = models.ForeignKey(
        Alert, null=True, blank=True, on_delete=models.CASCADE, related_name="deliveries"
    )
    subject = models.CharField(max_length=300)
    body = models.BinaryField(help_text="The exact bytes posted.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True, default="")
    response_status = models.PositiveIntegerField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    next_attempt = models.DateTimeField(
        null=True, blank=True, help_text="When the next attempt is due (the sweep's reference)."
    )
    finished = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created"]
        verbose_name_plural = "deliveries"
        indexes = [models.Index(fields=["status", "created"], name="delivery_status")]

    def __str__(self) -> str:
        return f"{self.subject} → {self.endpoint} ({self.status})"
