"""Policies API: read and change a database's policy (JSON or TOML), its versions, revert.

A policy exists for every database (created with it), so there is no create or delete here.
Each change is recorded as a version naming the token's user and the token.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import QuerySet
from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.api_validation import as_drf_error
from controlplane.databases.models import Database
from controlplane.policies.api.serializers import (
    PolicySerializer,
    PolicyVersionSerializer,
    RevertSerializer,
)
from controlplane.policies.api.toml import TomlParser, TomlRenderer
from controlplane.policies.models import Policy
from controlplane.policies.services import (
    ensure_policy,
    policy_from_toml,
    policy_to_toml,
    revert_policy,
    update_policy,
)
from controlplane.tenants.api.auth import TenantScoped
from controlplane.tenants.models import ApiToken
from proxyworker.config.loader import ConfigError


def _via(request: Request) -> str:
    token = request.auth
    return f"API token {token.name}" if isinstance(token, ApiToken) else "API"


class PolicyViewSet(
    TenantScoped,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = PolicySerializer
    queryset = Policy.objects.none()
    tenant_field = "database__tenant"

    def get_queryset(self) -> QuerySet[Policy]:
        return self.scope(Policy.objects.select_related("database").order_by("database__name"))

    def perform_update(self, serializer: Any) -> None:
        policy = serializer.instance
        try:
            update_policy(
                policy,
                serializer.validated_data["contract"],
                author=self.request.user,
                via=_via(self.request),
            )
        except DjangoValidationError as exc:
            raise as_drf_error(exc) from None

    @extend_schema(responses=PolicyVersionSerializer(many=True))
    @action(detail=True, methods=["get"], pagination_class=None)
    def versions(self, request: Request, pk: str | None = None) -> Response:
        policy = self.get_object()
        versions = policy.versions.order_by("-number")
        return Response(PolicyVersionSerializer(versions, many=True).data)

    @extend_schema(request=RevertSerializer, responses=PolicySerializer)
    @action(detail=True, methods=["post"])
    def revert(self, request: Request, pk: str | None = None) -> Response:
        policy = self.get_object()
        body = RevertSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        number = body.validated_data["version"]
        if not policy.versions.filter(number=number).exists():
            return Response(
                {"version": [f"Policy has no version {number}."]},
                status=status.HTTP_400_BAD_REQUEST,
            )
        revert_policy(policy, number, author=request.user, via=_via(request))
        policy.refresh_from_db()
        return Response(PolicySerializer(policy).data)


class PolicyTomlView(TenantScoped, APIView):
    """``GET``/``PUT /api/v1/databases/{id}/policy.toml`` in ``application/toml``."""

    parser_classes = [TomlParser]
    renderer_classes = [TomlRenderer, JSONRenderer]

    def _database(self, pk: int) -> Database:
        database = self.scope(Database.objects.filter(pk=pk)).first()
        if database is None:
            raise Http404
        return database

    @extend_schema(
        responses={(200, "application/toml"): OpenApiTypes.STR},
        description="The database's policy as TOML (docs/policy.md).",
    )
    def get(self, request: Request, pk: int) -> Response:
        policy = ensure_policy(self._database(pk))
        return Response(policy_to_toml(policy.to_contract()), content_type="application/toml")

    @extend_schema(
        request={"application/toml": OpenApiTypes.STR},
        responses={
            (200, "application/toml"): OpenApiTypes.STR,
            400: OpenApiResponse(description="detail, line and key of the first error"),
        },
        description="Replace the database's policy; errors name the line and the key.",
    )
    def put(self, request: Request, pk: int) -> Response:
        policy = ensure_policy(self._database(pk))
        text = request.data if isinstance(request.data, str) else ""
        try:
            new = policy_from_toml(text)
            update_policy(policy, new, author=request.user, via=_via(request))
        except ConfigError as exc:
            body = {"detail": exc.message, "line": exc.line, "key": exc.key}
            return Response(body, status=status.HTTP_400_BAD_REQUEST)
        except DjangoValidationError as exc:
            raise as_drf_error(exc) from None
        return Response(policy_to_toml(policy.to_contract()), content_type="application/toml")
