"""Celery tasks of the fleet: the retry of a pending publication (beat, every few seconds)."""

from __future__ import annotations

from celery import shared_task

from controlplane.fleet import services


@shared_task(name="controlplane.fleet.tasks.publish_pending", ignore_result=True)
def publish_pending() -> int | None:
    return services.publish_pending()
