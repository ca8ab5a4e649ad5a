"""Usage API: ``/api/v1/reports/usage/`` is ``/api/v1/statistics/`` (same filters, same
computation, reused) plus the rows changed per table, database and user."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.audit.api.serializers import StatisticsFilterSerializer
from controlplane.audit.api.views import filter_events
from controlplane.audit.models import AuditEvent
from controlplane.reports.api.serializers import UsageSerializer
from controlplane.reports.models import TableRows
from controlplane.reports.services import filter_rows, usage
from controlplane.tenants.api.auth import TenantScoped


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
