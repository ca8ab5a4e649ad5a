"""Proxy users API: CRUD within the caller's tenant."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from rest_framework import viewsets

from controlplane.proxyusers.api.serializers import ProxyUserSerializer
from controlplane.proxyusers.models import ProxyUser
from controlplane.tenants.api.auth import TenantScoped, tenant_of


class ProxyUserViewSet(TenantScoped, viewsets.ModelViewSet):
    serializer_class = ProxyUserSerializer
    queryset = ProxyUser.objects.none()

    def get_queryset(self) -> QuerySet[ProxyUser]:
        return self.scope(ProxyUser.objects.prefetch_related("databases").order_by("name"))

    def perform_create(self, serializer: Any) -> None:
        serializer.save(tenant=tenant_of(self.request))
