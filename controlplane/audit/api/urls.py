"""URLs of the audit API."""

from __future__ import annotations

from django.urls import path
from rest_framework.routers import SimpleRouter

from controlplane.audit.api.views import AuditEventViewSet, StatisticsView

router = SimpleRouter()
router.register("audit/events", AuditEventViewSet, basename="auditevent")
urlpatterns = [path("statistics/", StatisticsView.as_view(), name="statistics"), *router.urls]
