"""Celery tasks of reports: scheduled reports (beat, every few minutes; each schedule says
daily or weekly)."""

from __future__ import annotations

from celery import shared_task

from controlplane.reports import services


@shared_task(name="controlplane.reports.tasks.send_due_reports", ignore_result=True)
def send_due_reports() -> int:
    return services.send_due_reports()
