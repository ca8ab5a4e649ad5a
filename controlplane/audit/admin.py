"""Admin of audit events: read-only, filtered and searchable, scoped to the user's tenants."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from controlplane.admin_scoping import TenantScopedAdmin
from controlplane.audit.models import AuditEvent


@admin.register(AuditEvent)
class AuditEventAdmin(TenantScopedAdmin):
    list_display = [
        "time",
        "database",
        "user",
        "decision",
        "rule",
        "fingerprint",
        "client",
        "worker",
    ]
    list_filter = ["decision", "rule", ("tenant", admin.RelatedOnlyFieldListFilter), "protocol"]
    search_fields = ["event_id", "database", "user", "fingerprint", "normalized"]
    date_hierarchy = "time"
    show_full_result_count = False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in AuditEvent._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_superuser)  # type: ignore[union-attr]
