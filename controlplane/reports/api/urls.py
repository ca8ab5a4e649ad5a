"""URLs of the reports API."""

from __future__ import annotations

from django.urls import path
from rest_framework.routers import SimpleRouter

from controlplane.reports.api.views import ReportScheduleViewSet, UsageView

router = SimpleRouter()
router.register("report-schedules", ReportScheduleViewSet, basename="reportschedule")
urlpatterns = [path("reports/usage/", UsageView.as_view(), name="usage"), *router.urls]
