"""Celery tasks of alerts: webhook delivery, retried with exponential backoff (the logic is in
``services``)."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from django.conf import settings

from controlplane.alerts import services


@shared_task(
    bind=True,
    name="controlplane.alerts.tasks.deliver_webhook",
    max_retries=settings.SQLPROXY_WEBHOOK_MAX_ATTEMPTS - 1,
    acks_late=True,
    ignore_result=True,
)
def deliver_webhook(self: Any, delivery_id: int) -> str:
    final = self.request.retries >= self.max_retries
    try:
        return services.deliver(delivery_id, final=final)
    except services.RetryLater as exc:
        raise self.retry(exc=exc, countdown=exc.wait) from exc


@shared_task(name="controlplane.alerts.tasks.sweep_stalled_deliveries", ignore_result=True)
def sweep_stalled_deliveries() -> int:
    return services.sweep_stalled()
