"""Alerts API: webhook endpoints (CRUD) and the alerts raised, with their deliveries
(read-only, newest first), within the caller's tenant."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import viewsets
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response

from controlplane.alerts.api.serializers import (
    AlertFilterSerializer,
    AlertSerializer,
    WebhookEndpointSerializer,
)
from controlplane.alerts.models import Alert, WebhookEndpoint
from controlplane.tenants.api.auth import TenantScoped, tenant_of


class WebhookEndpointViewSet(TenantScoped, viewsets.ModelViewSet):
    serializer_class = WebhookEndpointSerializer
    queryset = WebhookEndpoint.objects.none()

    def get_queryset(self) -> QuerySet[WebhookEndpoint]:
        return self.scope(WebhookEndpoint.objects.order_by("name", "pk"))

    def perform_create(self, serializer: Any) -> None:
        serializer.save(tenant=tenant_of(self.request))


class AlertCursor(CursorPagination):
    ordering = "-first_seen"
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000


class AlertViewSet(TenantScoped, viewsets.ReadOnlyModelViewSet):
    """Alerts raised from the audit events, newest first, each with its delivery attempts."""

    serializer_class = AlertSerializer
    pagination_class = AlertCursor
    queryset = Alert.objects.none()

    def get_queryset(self) -> QuerySet[Alert]:
        queryset = self.scope(Alert.objects.prefetch_related("deliveries"))
        if self.action == "list":
            params = AlertFilterSerializer(data=self.request.query_params)
            params.is_valid(raise_exception=True)
            if "kind" in params.validated_data:
                queryset = queryset.filter(kind=params.validated_data["kind"])
        return queryset

    @extend_schema(parameters=[AlertFilterSerializer])
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)
