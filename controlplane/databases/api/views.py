"""Databases API: CRUD within the caller's tenant."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from rest_framework import viewsets

from controlplane.databases.api.serializers import DatabaseSerializer
from controlplane.databases.models import Database
from controlplane.tenants.api.auth import TenantScoped, tenant_of


class DatabaseViewSet(TenantScoped, viewsets.ModelViewSet):
    serializer_class = DatabaseSerializer
    queryset = Database.objects.none()

    def get_queryset(self) -> QuerySet[Database]:
        return self.scope(Database.objects.select_related("policy").order_by("name"))

    def perform_create(self, serializer: Any) -> None:
        serializer.save(tenant=tenant_of(self.request))
