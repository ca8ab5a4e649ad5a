"""Celery tasks of audit: retention (beat, hourly)."""

from __future__ import annotations

from celery import shared_task
from django.conf import settings

from controlplane.audit import services


@shared_task(name="controlplane.audit.tasks.purge_expired_events", ignore_result=True)
def purge_expired_events() -> int:
    return services.purge_expired_events(settings.SQLPROXY_AUDIT_RETENTION_DAYS)
