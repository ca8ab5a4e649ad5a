"""Bearer-token authentication and tenant scoping for the whole API.

``Authorization: Bearer <token>``: the token's SHA-256 digest is looked up; the request runs
as the token's user, within the token's tenant only (``request.auth`` is the ``ApiToken``).
The token stops working when its user leaves the tenant. Views subclass ``TenantScoped`` so
every queryset is filtered by that tenant: another tenant's object is a 404, never a 403.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions
from rest_framework.request import Request

from controlplane.tenants.models import ApiToken, Membership, Tenant, token_digest


class BearerTokenAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[Any, ApiToken] | None:
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Invalid Authorization header.")
        try:
            plaintext = header[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Invalid token.") from None
        token = (
            ApiToken.objects.select_related("user", "tenant")
            .filter(digest=token_digest(plaintext))
            .first()
        )
        if token is None or not token.user.is_active:
            raise exceptions.AuthenticationFailed("Invalid token.")
        if not Membership.objects.filter(tenant=token.tenant, user=token.user).exists():
            raise exceptions.AuthenticationFailed("Invalid token.")
        now = timezone.now()
        if token.last_used is None or (now - token.last_used).total_seconds() > 60:
            ApiToken.objects.filter(pk=token.pk).update(last_used=now)
        return token.user, token

    def authenticate_header(self, request: Request) -> str:
        return self.keyword


class BearerScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    target_class = "controlplane.tenants.api.auth.BearerTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer"}


def tenant_of(request: Request) -> Tenant:
    token = request.auth
    assert isinstance(token, ApiToken)
    return token.tenant


def role_of(request: Request) -> str | None:
    token = request.auth
    if not isinstance(token, ApiToken):
        return None
    return (
        Membership.objects.filter(tenant=token.tenant, user=token.user)
        .values_list("role", flat=True)
        .first()
    )


class IsTenantMember(permissions.BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.auth, ApiToken)


class IsTenantOwner(permissions.BasePermission):
    message = "Only an owner of the tenant may do this."

    def has_permission(self, request: Request, view: Any) -> bool:
        return role_of(request) == Membership.Role.OWNER


class TenantScoped:
    """Mixin for API views: the queryset is limited to the caller's tenant."""

    request: Request
    tenant_field = "tenant"

    def scope(self, queryset: QuerySet[Any]) -> QuerySet[Any]:
        return queryset.filter(**{self.tenant_field: tenant_of(self.request)})

    def get_serializer_context(self) -> dict[str, Any]:
        """Serializers get the caller's tenant (to limit related choices to it)."""
        context: dict[str, Any] = super().get_serializer_context()
        if self.request is not None and self.request.auth is not None:
            context["tenant"] = tenant_of(self.request)
        return context
