"""Tenant scoping for the Django admin.

A superuser sees everything. Any other staff user sees and edits only objects of tenants they
belong to; an object of another tenant is "not found" (the admin's own missing-object
answer), and foreign-key and many-to-many choices are limited the same way.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Model, QuerySet
from django.http import HttpRequest

from controlplane.databases.models import Database
from controlplane.tenants.models import Membership, Tenant
from controlplane.tenants.services import tenants_of


class TenantScopedAdmin(admin.ModelAdmin):
    tenant_path = "tenant"
    """The lookup from this model to its Tenant."""

    def _is_member(self, request: HttpRequest) -> bool:
        user = request.user
        return bool(
            user.is_active and (user.is_superuser or Membership.objects.filter(user=user).exists())  # type: ignore[misc]
        )

    def _owns(self, request: HttpRequest, obj: Model | None) -> bool:
        if obj is None or request.user.is_superuser:  # type: ignore[union-attr]
            return True
        return self.get_queryset(request).filter(pk=obj.pk).exists()

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        queryset = super().get_queryset(request)
        if request.user.is_superuser:  # type: ignore[union-attr]
            return queryset
        allowed = tenants_of(request.user).values("pk")  # type: ignore[arg-type]
        return queryset.filter(**{f"{self.tenant_path}__in": allowed})

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self._is_member(request)

    def has_view_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return self._is_member(request) and self._owns(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return self._is_member(request) and self._owns(request, obj)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return self._is_member(request)

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        return self._is_member(request) and self._owns(request, obj)

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if not request.user.is_superuser:  # type: ignore[union-attr]
            if db_field.related_model is Tenant:
                kwargs["queryset"] = tenants_of(request.user)  # type: ignore[arg-type]
            elif db_field.related_model is Database:
                kwargs["queryset"] = Database.objects.filter(
                    tenant__in=tenants_of(request.user)  # type: ignore[arg-type]
                )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def formfield_for_manytomany(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.related_model is Database and not request.user.is_superuser:  # type: ignore[union-attr]
            kwargs["queryset"] = Database.objects.filter(
                tenant__in=tenants_of(request.user)  # type: ignore[arg-type]
            )
        return super().formfield_for_manytomany(db_field, request, **kwargs)
