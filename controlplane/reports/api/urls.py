"""URLs of the reports API."""

from __future__ import annotations

from django.urls import path

from controlplane.reports.api.views import UsageView

urlpatterns = [path("reports/usage/", UsageView.as_view(), name="usage")]
