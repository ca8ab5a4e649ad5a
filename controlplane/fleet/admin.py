"""The fleet page: which worker runs which config version, whether that is the current one,
whether it is alive; and the state of publication (superusers only: workers serve every
tenant)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from controlplane.fleet.models import Worker
from controlplane.fleet.services import current_state, publish


@admin.register(Worker)
class WorkerAdmin(admin.ModelAdmin):
    list_display = [
        "worker_id",
        "config_version",
        "is_current",
        "is_alive",
        "last_heartbeat",
        "connections",
        "queries",
        "denied",
        "alerted",
        "latency_p50_ms",
        "latency_p99_ms",
    ]
    search_fields = ["worker_id"]
    ordering = ["worker_id"]
    actions = ["publish_now"]
    change_list_template = "admin/fleet/worker/change_list.html"

    def has_module_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_superuser)  # type: ignore[union-attr]

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_superuser)  # type: ignore[union-attr]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_superuser)  # type: ignore[union-attr]

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        self._state = current_state()
        context = {**(extra_context or {}), "config_state": self._state}
        return super().changelist_view(request, context)

    @admin.display(boolean=True, description="current")
    def is_current(self, obj: Worker) -> bool:
        state = getattr(self, "_state", None) or current_state()
        return obj.config_version is not None and obj.config_version == state.published_version

    @admin.display(boolean=True, description="alive")
    def is_alive(self, obj: Worker) -> bool:
        stale = dt.timedelta(seconds=settings.SQLPROXY_WORKER_STALE_SECONDS)
        return timezone.now() - obj.last_heartbeat <= stale

    @admin.action(description="Publish the current configuration now")
    def publish_now(self, request: HttpRequest, queryset: QuerySet[Worker]) -> None:
        held = publish()
        if held is None:
            self.message_user(request, "Redis is unreachable: publication pending.", messages.ERROR)
        else:
            self.message_user(request, f"Redis holds config version {held}.")
