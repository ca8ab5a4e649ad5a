"""The REST API under /api/v1/: each app's ``api/urls.py``."""

from __future__ import annotations

from django.urls import include, path

urlpatterns = [
    path("", include("controlplane.tenants.api.urls")),
    path("", include("controlplane.databases.api.urls")),
    path("", include("controlplane.proxyusers.api.urls")),
    path("", include("controlplane.policies.api.urls")),
    path("", include("controlplane.audit.api.urls")),
    path("", include("controlplane.reports.api.urls")),
    path("", include("controlplane.alerts.api.urls")),
]
