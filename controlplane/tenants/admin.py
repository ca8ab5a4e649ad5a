"""Admin of tenants (members inline, worker TOML import/export) and API tokens."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.text import slugify

from controlplane.admin_scoping import TenantScopedAdmin
from controlplane.tenants.models import ApiToken, Membership, Tenant
from controlplane.tenants.services import export_worker_toml, import_worker_toml
from proxyworker.config.loader import ConfigError


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


class ImportTomlForm(forms.Form):
    file = forms.FileField(required=False, help_text="A worker configuration (sqlproxy.toml).")
    text = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 20, "cols": 100}), label="or paste"
    )

    def toml(self) -> str:
        upload = self.cleaned_data.get("file")
        if upload:
            try:
                return str(upload.read().decode("utf-8"))
            except UnicodeDecodeError:
                raise forms.ValidationError({"file": "The file is not UTF-8."}) from None
        return str(self.cleaned_data.get("text") or "")


@admin.register(Tenant)
class TenantAdmin(TenantScopedAdmin):
    tenant_path = "pk"
    list_display = ["name", "slug", "members", "databases", "created"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    inlines = [MembershipInline]
    actions = ["export_toml", "import_toml"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Tenant]:
        return (
            super()
            .get_queryset(request)
            .annotate(member_count=Count("memberships", distinct=True))
            .annotate(database_count=Count("databases", distinct=True))
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.is_superuser)  # type: ignore[union-attr]

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_superuser)  # type: ignore[union-attr]

    @admin.display(description="members", ordering="member_count")
    def members(self, obj: Tenant) -> int:
        return obj.member_count  # type: ignore[attr-defined,no-any-return]

    @admin.display(description="databases", ordering="database_count")
    def databases(self, obj: Tenant) -> int:
        return obj.database_count  # type: ignore[attr-defined,no-any-return]

    @admin.action(description="Export as worker TOML")
    def export_toml(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> HttpResponse | None:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one tenant to export.", messages.ERROR)
            return None
        tenant = queryset.get()
        response = HttpResponse(export_worker_toml(tenant), content_type="application/toml")
        filename = f"{slugify(tenant.slug) or 'tenant'}.toml"
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response

    @admin.action(description="Import worker TOML into this tenant")
    def import_toml(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> HttpResponse | None:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one tenant to import into.", messages.ERROR)
            return None
        url = reverse("admin:tenants_tenant_import", args=[queryset.get().pk])
        return HttpResponseRedirect(url)

    def get_urls(self) -> list[Any]:
        return [
            path(
                "<int:pk>/import-toml/",
                self.admin_site.admin_view(self.import_view),
                name="tenants_tenant_import",
            ),
            *super().get_urls(),
        ]

    def import_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        tenant = get_object_or_404(self.get_queryset(request), pk=pk)
        if not self.has_change_permission(request, tenant):
            return HttpResponseRedirect(reverse("admin:index"))
        form = ImportTomlForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            try:
                report = import_worker_toml(
                    tenant,
                    form.toml(),
                    path="sqlproxy.toml",
                    author=request.user,
                    via="admin import",
                )
            except forms.ValidationError as exc:
                form.add_error(None, exc)
            except ConfigError as exc:
                where = f"line {exc.line}" if exc.line else "the file"
                key = f", key {exc.key}" if exc.key else ""
                form.add_error("text", f"{where}{key}: {exc.message}")
            else:
                self.message_user(request, f"Imported into {tenant}: {report.summary()}.")
                return HttpResponseRedirect(reverse("admin:tenants_tenant_change", args=[pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Import worker TOML into {tenant}",
            "form": form,
            "tenant": tenant,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/tenants/tenant/import_toml.html", context)


@admin.register(ApiToken)
class ApiTokenAdmin(TenantScopedAdmin):
    list_display = ["name", "prefix", "tenant", "user", "created", "last_used"]
    list_filter = [("tenant", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["name", "prefix", "user__username"]
    autocomplete_fields = ["user"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        base = ["prefix", "created", "last_used"]
        return base + (["tenant", "user"] if obj is not None else [])

    def save_model(self, request: HttpRequest, obj: ApiToken, form: Any, change: bool) -> None:
        if not change:
            plaintext = obj.generate()
            self.message_user(
                request,
                f"Token {obj.name}: {plaintext} — copy it now, it is not shown again.",
                messages.WARNING,
            )
        super().save_model(request, obj, form, change)
