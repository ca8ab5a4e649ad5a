"""App configuration of ``reports``."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig


class ReportsConfig(AppConfig):
    name = "controlplane.reports"
    label = "reports"
    verbose_name = "Reports"

    def ready(self) -> None:
        from controlplane.reports.services import record_rows
        from controlplane.streams.fanout import events_ingested

        def keep_rows(sender: object, events: Any, structs: Any, **_: Any) -> None:
            record_rows(events, structs)

        events_ingested.connect(keep_rows, dispatch_uid="reports.rows", weak=False)
