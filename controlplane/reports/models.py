"""Usage data the audit history does not keep, and scheduled reports.

``TableRows`` holds the rows each audited statement changed per table (the worker measures
them: ``AuditEvent.rows`` in the contract), filled after each ingested batch from the
``events_ingested`` signal. ``ReportSchedule`` says what to send, how often and where; the beat
task claims a due schedule with a conditional UPDATE of ``next_run``, so two beat/worker
processes never send the same report twice.
"""

from __future__ import annotations

from django.db import models

from controlplane.tenants.models import Tenant


class TableRows(models.Model):
    event_id = models.CharField(max_length=200)
    tenant = models.ForeignKey(
        Tenant, null=True, blank=True, on_delete=models.CASCADE, related_name="table_rows"
    )
    time = models.DateTimeField(db_index=True)
    database = models.CharField(max_length=200)
    user = models.CharField(max_length=200)
    table = models.CharField(max_length=200, blank=True, help_text="Empty: not attributed.")
    rows = models.BigIntegerField()

    class Meta:
        verbose_name_plural = "table rows"
        constraints = [
            models.UniqueConstraint(fields=["event_id", "table"], name="table_rows_event_table")
        ]
        indexes = [models.Index(fields=["tenant", "-time"], name="table_rows_tenant_time")]

    def __str__(self) -> str:
        return f"{self.rows} rows of {self.table or '?'} in {self.database}"


class ReportSchedule(models.Model):
    class Period(models.TextChoices):
        DAILY = "daily"
        WEEKLY = "weekly"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="report_schedules")
    name = models.CharField(max_length=100)
    period = models.CharField(max_length=6, choices=Period.choices, default=Period.DAILY)
    email_to = models.TextField(
        blank=True, default="", help_text="Recipients, one address per line (empty: no email)."
    )
    webhook = models.ForeignKey(
        "alerts.WebhookEndpoint",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="report_schedules",
        help_text="Also post the report to this endpoint.",
    )
    enabled = models.BooleanField(default=True)
    next_run = models.DateTimeField(help_text="When the next report is due (UTC).")
    last_sent = models.DateTimeField(null=True, blank=True, editable=False)
    last_error = models.TextField(blank=True, default="", editable=False)

    class Meta:
        ordering = ["tenant", "name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.period})"

    def recipients(self) -> list[str]:
        return [line.strip() for line in self.email_to.splitlines() if line.strip()]
