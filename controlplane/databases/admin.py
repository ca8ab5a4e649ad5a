"""Admin of databases: the upstream password is write-only; the policy shows inline (edited on
its own page, where the diff step is) and exports as TOML."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html

from controlplane.admin_scoping import TenantScopedAdmin
from controlplane.databases.models import POOL_FIELDS, Database
from controlplane.policies.models import Policy
from controlplane.policies.services import ensure_policy, policy_to_toml


class DatabaseForm(forms.ModelForm):
    password = forms.CharField(
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="Upstream password, stored encrypted. Leave empty to keep the current one.",
    )
    clear_password = forms.BooleanField(required=False, help_text="Remove the stored password.")

    class Meta:
        model = Database
        fields = "__all__"

    def _post_clean(self) -> None:
        if self.cleaned_data.get("clear_password"):
            self.instance.set_password(None)
        elif self.cleaned_data.get("password"):
            self.instance.set_password(self.cleaned_data["password"])
        super()._post_clean()


class PolicyInline(admin.StackedInline):
    model = Policy
    can_delete = False
    show_change_link = True
    fields = ["as_toml"]
    readonly_fields = ["as_toml"]
    verbose_name_plural = "policy (edit it on its own page: changes are shown as a diff first)"

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="policy.toml")
    def as_toml(self, obj: Policy) -> str:
        try:
            text = policy_to_toml(obj.to_contract()) or "# defaults only"
        except Exception as exc:  # an invalid stored policy must still be visible
            text = f"# invalid: {exc}"
        return format_html("<pre>{}</pre>", text)


@admin.register(Database)
class DatabaseAdmin(TenantScopedAdmin):
    form = DatabaseForm
    list_display = ["name", "tenant", "host", "port", "dbname", "pool_mode", "pool_size", "sslmode"]
    list_filter = [("tenant", admin.RelatedOnlyFieldListFilter), "pool_mode", "sslmode"]
    search_fields = ["name", "host", "dbname", "user"]
    inlines = [PolicyInline]
    actions = ["export_policy"]
    fieldsets = [
        (None, {"fields": ["tenant", "name"]}),
        (
            "Upstream",
            {
                "fields": [
                    "host",
                    "port",
                    "dbname",
                    "user",
                    "password",
                    "clear_password",
                    "sslmode",
                    "sslrootcert",
                ]
            },
        ),
        (
            "Pool",
            {"fields": list(POOL_FIELDS)},
        ),
    ]

    @admin.action(description="Export policy as TOML")
    def export_policy(self, request: HttpRequest, queryset: QuerySet[Database]) -> Any:
        if queryset.count() != 1:
            self.message_user(request, "Select exactly one database.", messages.ERROR)
            return None
        database = queryset.get()
        text = policy_to_toml(ensure_policy(database).to_contract())
        response = HttpResponse(text, content_type="application/toml")
        response["Content-Disposition"] = f'attachment; filename="{database.name}-policy.toml"'
        return response
