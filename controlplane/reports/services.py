"""Usage statistics per tenant, database and user, and the scheduled HTML report.

:func:`usage` is the audit app's ``statistics`` (queries, blocks by rule, honeytoken hits, top
fingerprints, per database and user: reused, not re-implemented) plus the rows changed, from
``TableRows``. :func:`record_rows` fills that table from each ingested batch.
:func:`send_due_reports` claims each due schedule with a conditional UPDATE (STYLE #8), renders
the report for the period that ended and sends it by email and/or webhook.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.db.models import Q, QuerySet, Sum
from django.template.loader import render_to_string
from django.utils import timezone

from controlplane.audit.models import AuditEvent
from controlplane.audit.services import statistics
from controlplane.reports.models import ReportSchedule, TableRows
from controlplane.tenants.models import Tenant
from proxyworker.config.events import AuditEvent as AuditEventStruct

log = logging.getLogger(__name__)

PERIODS = {"daily": dt.timedelta(days=1), "weekly": dt.timedelta(days=7)}


# -- rows changed ----------------------------------------------------------------------------


def record_rows(events: Sequence[AuditEvent], structs: Mapping[str, AuditEventStruct]) -> int:
    """Store the rows changed per table of ``events`` (idempotent by event and table)."""
    rows = []
    for event in events:
        struct = structs.get(event.event_id)
        if struct is None or not struct.rows:
            continue
        for table, count in struct.rows.items():
            if count:
                rows.append(
                    TableRows(
                        event_id=event.event_id,
                        tenant_id=event.tenant_id,
                        time=event.time,
                        database=event.database,
                        user=event.user,
                        table=table[:200],
                        rows=count,
                    )
                )
    TableRows.objects.bulk_create(rows, ignore_conflicts=True)
    return len(rows)


def rows_changed(rows: QuerySet[TableRows]) -> dict[str, Any]:
    def grouped(key: str) -> list[dict[str, Any]]:
        return list(rows.values(key).annotate(rows=Sum("rows")).order_by("-rows", key)[:100])

    return {
        "total": rows.aggregate(total=Sum("rows"))["total"] or 0,
        "by_table": grouped("table"),
        "by_database": grouped("database"),
        "by_user": grouped("user"),
    }


# -- usage -----------------------------------------------------------------------------------


def _scope(
    tenants: Iterable[Tenant], all_tenants: bool
) -> tuple[QuerySet[AuditEvent], QuerySet[TableRows]]:
    if all_tenants:
        return AuditEvent.objects.all(), TableRows.objects.all()
    ids = [t.pk for t in tenants]
    return AuditEvent.objects.filter(tenant__in=ids), TableRows.objects.filter(tenant__in=ids)


def filter_rows(rows: QuerySet[TableRows], params: Mapping[str, Any]) -> QuerySet[TableRows]:
    """The audit API's filters, as far as they apply to rows changed."""
    if "since" in params:
        rows = rows.filter(time__gte=params["since"])
    if "until" in params:
        rows = rows.filter(time__lt=params["until"])
    for key in ("user", "database"):
        if key in params:
            rows = rows.filter(**{key: params[key]})
    if "table" in params:
        rows = rows.filter(table__icontains=params["table"])
    if params.get("decision") not in (None, "allow", "alert") or "rule" in params:
        rows = rows.none()  # refused statements change nothing
    if "fingerprint" in params:
        ids = AuditEvent.objects.filter(fingerprint=params["fingerprint"]).values("event_id")
        rows = rows.filter(event_id__in=ids)
    return rows


def usage(events: QuerySet[AuditEvent], rows: QuerySet[TableRows], top: int = 10) -> dict[str, Any]:
    return {**statistics(events, top=top), "rows_changed": rows_changed(rows)}


def usage_for(
    tenants: Iterable[Tenant],
    *,
    since: dt.datetime,
    until: dt.datetime | None = None,
    all_tenants: bool = False,
    top: int = 10,
) -> dict[str, Any]:
    events, rows = _scope(tenants, all_tenants)
    window = Q(time__gte=since) & (Q(time__lt=until) if until is not None else Q())
    return usage(events.filter(window), rows.filter(window), top=top)


# -- scheduled reports -----------------------------------------------------------------------


def render_report(
    tenant: Tenant, since: dt.datetime, until: dt.datetime
) -> tuple[str, dict[str, Any]]:
    """The report's HTML and the usage it shows."""
    data = usage_for([tenant], since=since, until=until)
    html = render_to_string(
        "reports/report.html", {"tenant": tenant, "since": since, "until": until, "usage": data}
    )
    return html, data


def summary(data: Mapping[str, Any]) -> dict[str, str]:
    return {
        "Queries audited": str(data["queries"]),
        "Blocked": str(data["denied"]),
        "Alerted": str(data["alerted"]),
        "Honeytoken hits": str(data["honeytoken_hits"]),
        "Rows changed": str(data["rows_changed"]["total"]),
    }


def claim(schedule: ReportSchedule, now: dt.datetime) -> bool:
    """Move ``next_run`` one period on, only if no one else did: True for the one winner."""
    step = PERIODS[schedule.period]
    following = schedule.next_run + step
    while following <= now:  # down for a while: one report for the last period, not many
        following += step
    updated = ReportSchedule.objects.filter(
        pk=schedule.pk, next_run=schedule.next_run, enabled=True
    ).update(next_run=following)
    return updated == 1


def send_report(schedule: ReportSchedule, now: dt.datetime) -> None:
    from controlplane.alerts.services import queue_report_delivery

    until = schedule.next_run if schedule.next_run <= now else now
    since = until - PERIODS[schedule.period]
    html, data = render_report(schedule.tenant, since, until)
    subject = f"SQL Proxy {schedule.period} report: {schedule.tenant.name} ({since:%Y-%m-%d})"
    errors = []
    recipients = schedule.recipients()
    if recipients:
        message = EmailMultiAlternatives(
            subject,
            f"{subject}\n\nThis report is HTML; open it in a mail client that shows HTML.",
            settings.SQLPROXY_REPORT_EMAIL_FROM,
            recipients,
        )
        message.attach_alternative(html, "text/html")
        try:
            message.send()
        except Exception as exc:  # SMTP refusals and outages alike: recorded, shown in admin
            errors.append(f"email: {exc}")
    if schedule.webhook is not None:
        queue_report_delivery(schedule.webhook, subject, html, schedule.tenant, summary(data))
    ReportSchedule.objects.filter(pk=schedule.pk).update(
        last_sent=now, last_error="; ".join(errors)
    )
    if errors:
        log.error("report %s: %s", schedule.pk, "; ".join(errors))


def send_due_reports(now: dt.datetime | None = None) -> int:
    now = now or timezone.now()
    sent = 0
    for schedule in ReportSchedule.objects.filter(enabled=True, next_run__lte=now).select_related(
        "tenant", "webhook"
    ):
        if not claim(schedule, now):
            continue  # another process took it
        send_report(schedule, now)
        sent += 1
    return sent
