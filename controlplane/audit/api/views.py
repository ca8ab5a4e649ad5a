"""Audit API: the event history (filters, cursor pagination) and statistics, per tenant."""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import viewsets
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.audit.api.serializers import (
    AuditEventSerializer,
    EventFilterSerializer,
    StatisticsFilterSerializer,
    StatisticsSerializer,
)
from controlplane.audit.models import AuditEvent
from controlplane.audit.services import statistics
from controlplane.tenants.api.auth import TenantScoped


def filter_events(queryset: QuerySet[AuditEvent], params: dict[str, Any]) -> QuerySet[AuditEvent]:
    if "since" in params:
        queryset = queryset.filter(time__gte=params["since"])
    if "until" in params:
        queryset = queryset.filter(time__lt=params["until"])
    for key in ("user", "database", "decision", "rule", "fingerprint"):
        if key in params:
            queryset = queryset.filter(**{key: params[key]})
    if "table" in params:
        table = params["table"]
        queryset = queryset.filter(
            Q(rows__has_key=table) | Q(normalized__icontains=table) | Q(message__icontains=table)
        )
    return queryset


class EventCursor(CursorPagination):
    ordering = "-time"
    page_size = 100
    page_size_query_param = "page_size"
    max_page_size = 1000


class AuditEventViewSet(TenantScoped, viewsets.ReadOnlyModelViewSet):
    """The query history: one event per decision, newest first."""

    serializer_class = AuditEventSerializer
    pagination_class = EventCursor
    lookup_field = "event_id"
    lookup_value_regex = "[^/]+"
    queryset = AuditEvent.objects.none()

    def get_queryset(self) -> QuerySet[AuditEvent]:
        queryset = self.scope(AuditEvent.objects.all())
        if self.action == "list":
            params = EventFilterSerializer(data=self.request.query_params)
            params.is_valid(raise_exception=True)
            queryset = filter_events(queryset, params.validated_data)
        return queryset

    @extend_schema(parameters=[EventFilterSerializer])
    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().list(request, *args, **kwargs)


class StatisticsView(TenantScoped, APIView):
    """Queries, blocks by rule, honeytoken hits and top fingerprints, overall and per
    database and user, over the filtered events."""

    @extend_schema(parameters=[StatisticsFilterSerializer], responses=StatisticsSerializer)
    def get(self, request: Request) -> Response:
        params = StatisticsFilterSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        events = filter_events(self.scope(AuditEvent.objects.all()), params.validated_data)
        data = statistics(events, top=params.validated_data["top"])
        return Response(StatisticsSerializer(data).data)
