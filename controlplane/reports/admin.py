"""Admin of reports: the schedules (daily/weekly, email and/or webhook)."""

from __future__ import annotations

from django.contrib import admin

from controlplane.admin_scoping import TenantScopedAdmin
from controlplane.reports.models import ReportSchedule


@admin.register(ReportSchedule)
class ReportScheduleAdmin(TenantScopedAdmin):
    list_display = ["name", "tenant", "period", "enabled", "next_run", "last_sent", "last_error"]
    list_filter = ["period", "enabled"]
    readonly_fields = ["last_sent", "last_error"]
