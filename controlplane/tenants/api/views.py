"""Tokens API (owners only): list, create (the token is shown once), revoke."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from rest_framework import mixins, viewsets

from controlplane.tenants.api.auth import IsTenantMember, IsTenantOwner, TenantScoped, tenant_of
from controlplane.tenants.api.serializers import ApiTokenSerializer
from controlplane.tenants.models import ApiToken
from controlplane.tenants.services import create_token


class ApiTokenViewSet(
    TenantScoped,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = ApiTokenSerializer
    permission_classes = [IsTenantMember, IsTenantOwner]
    queryset = ApiToken.objects.none()

    def get_queryset(self) -> QuerySet[ApiToken]:
        return self.scope(ApiToken.objects.select_related("user").order_by("-created"))

    def perform_create(self, serializer: Any) -> None:
        data = serializer.validated_data
        token, plaintext = create_token(
            tenant_of(self.request), data.get("user") or self.request.user, data["name"]
        )
        token.plaintext = plaintext  # type: ignore[attr-defined]
        serializer.instance = token
