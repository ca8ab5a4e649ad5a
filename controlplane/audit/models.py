"""Audit events as workers report them (``proxyworker.config.events.AuditEvent``).

``event_id`` is unique, so ingesting the same stream entry twice stores it once. ``tenant`` is
resolved at ingest from the event's database name (null for a database no tenant owns, e.g.
a client asking for an unknown dbname: visible to superusers only). Per-fingerprint statistics
are aggregates over these rows (``services.statistics``), bounded by the retention period.
"""

from __future__ import annotations

from django.db import models

from controlplane.tenants.models import Tenant


class AuditEvent(models.Model):
    class Decision(models.TextChoices):
        ALLOW = "allow"
        DENY = "deny"
        ALERT = "alert"

    event_id = models.CharField(max_length=200, unique=True)
    time = models.DateTimeField(db_index=True)
    tenant = models.ForeignKey(
        Tenant, null=True, blank=True, on_delete=models.SET_NULL, related_name="audit_events"
    )
    worker = models.CharField(max_length=200)
    database = models.CharField(max_length=200)
    user = models.CharField(max_length=200)
    client = models.CharField(max_length=200)
    application_name = models.CharField(max_length=200, blank=True)
    decision = models.CharField(max_length=5, choices=Decision.choices)
    rule = models.CharField(max_length=200, null=True, blank=True)
    fingerprint = models.CharField(max_length=200, blank=True)
    normalized = models.TextField(blank=True)
    message = models.TextField(null=True, blank=True)
    protocol = models.CharField(max_length=8, default="simple")
    duration_ms = models.FloatField(null=True, blank=True)
    command_tag = models.CharField(max_length=200, null=True, blank=True)
    rows = models.JSONField(
        null=True, blank=True, help_text='Rows changed per table, {"schema.table": n}.'
    )
    ingested = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-time"]
        indexes = [
            models.Index(fields=["tenant", "-time"], name="audit_tenant_time"),
            models.Index(fields=["tenant", "database", "-time"], name="audit_tenant_db_time"),
            models.Index(fields=["tenant", "user", "-time"], name="audit_tenant_user_time"),
            models.Index(fields=["tenant", "decision", "-time"], name="audit_tenant_dec_time"),
            models.Index(fields=["tenant", "rule"], name="audit_tenant_rule"),
            models.Index(fields=["tenant", "fingerprint"], name="audit_tenant_fp"),
        ]

    def __str__(self) -> str:
        return f"{self.decision} {self.user}@{self.database} {self.event_id}"
