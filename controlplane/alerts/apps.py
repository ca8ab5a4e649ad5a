"""App configuration of ``alerts``."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig


class AlertsConfig(AppConfig):
    name = "controlplane.alerts"
    label = "alerts"
    verbose_name = "Alerts"

    def ready(self) -> None:
        from controlplane.alerts.services import on_events_ingested
        from controlplane.streams.fanout import events_ingested

        def raise_alerts(sender: object, events: Any, **_: Any) -> None:
            on_events_ingested(events)

        events_ingested.connect(raise_alerts, dispatch_uid="alerts.raise", weak=False)
