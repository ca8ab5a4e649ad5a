"""Top-level URLs: the admin, the API under /api/v1/ with its OpenAPI schema, the live
dashboard, /metrics."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.permissions import AllowAny

urlpatterns = [
    path("admin/", admin.site.urls),
    path(
        "api/v1/schema/",
        SpectacularAPIView.as_view(authentication_classes=[], permission_classes=[AllowAny]),
        name="api-schema",
    ),
    path("api/v1/", include("controlplane.api_urls")),
    path("dashboard/", include("dashboards.urls")),
    path("", include("django_prometheus.urls")),
]
