"""Reports API: ``/api/v1/reports/usage/`` is ``/api/v1/statistics/`` (same filters, same
computation, reused) plus the rows changed per table, database and user; the report
schedules are CRUD within the caller's tenant."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import viewsets
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.audit.api.serializers import StatisticsFilterSerializer
from controlplane.audit.api.views import filter_events
from controlplane.audit.models import AuditEvent
from controlplane.reports.api.serializers import ReportScheduleSerializer, UsageSerializer
from controlplane.reports.models import ReportSchedule, TableRows
from controlplane.reports.services import filter_rows, usage
from controlplane.tenants.api.auth import TenantScoped, tenant_of


class UsageView(TenantScoped, APIView):
    """Queries, blocks by rule, top fingerprints, honeytoken hits and rows changed, overall and
    per database and user, over the filtered events of the caller's tenant."""

    @extend_schema(parameters=[StatisticsFilterSerializer], responses=UsageSerializer)
    def get(self, request: Request) -> Response:
        params = StatisticsFilterSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        filters = params.validated_data
        events = filter_events(self.scope(AuditEvent.objects.all()), filters)
        rows = filter_rows(self.scope(TableRows.objects.all()), filters)
        return Response(UsageSerializer(usage(events, rows, top=filters["top"])).data)


class ReportScheduleViewSet(TenantScoped, viewsets.ModelViewSet):
    serializer_class = ReportScheduleSerializer
    queryset = ReportSchedule.objects.none()

    def get_queryset(self) -> QuerySet[ReportSchedule]:
        return self.scope(ReportSchedule.objects.order_by("name", "pk"))

    def perform_create(self, serializer: Any) -> None:
        serializer.save(tenant=tenant_of(self.request))
