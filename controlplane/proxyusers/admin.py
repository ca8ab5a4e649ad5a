"""Admin of proxy users: a password is turned into a verifier here and never stored."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.http import HttpRequest

from controlplane.admin_scoping import TenantScopedAdmin
from controlplane.proxyusers import scram
from controlplane.proxyusers.models import ProxyUser


class ProxyUserForm(forms.ModelForm):
    password1 = forms.CharField(
        label="Password",
        required=False,
        strip=False,
        widget=forms.PasswordInput,
        help_text="Sets the SCRAM-SHA-256 verifier (the password itself is not stored).",
    )
    password2 = forms.CharField(
        label="Password again", required=False, strip=False, widget=forms.PasswordInput
    )
    upstream_password = forms.CharField(
        required=False,
        strip=False,
        widget=forms.PasswordInput,
        help_text="The upstream role's password, stored encrypted; empty keeps the current one.",
    )

    class Meta:
        model = ProxyUser
        fields = [
            "tenant",
            "name",
            "password1",
            "password2",
            "scram_verifier",
            "all_databases",
            "databases",
            "upstream_user",
            "upstream_password",
        ]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["scram_verifier"].required = False

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        p1, p2 = data.get("password1"), data.get("password2")
        if p1 or p2:
            if p1 != p2:
                raise ValidationError({"password2": "The two passwords differ."})
            data["scram_verifier"] = scram.make_verifier(p1 or "")
            self.instance.scram_verifier = data["scram_verifier"]
        elif not data.get("scram_verifier"):
            raise ValidationError({"password1": "Give a password (or a SCRAM verifier)."})
        if data.get("upstream_password"):
            self.instance.set_upstream_password(data["upstream_password"])
        if not data.get("upstream_user"):
            self.instance.set_upstream_password(None)
        tenant, databases = data.get("tenant"), data.get("databases")
        if tenant is not None and databases:
            foreign = [db.name for db in databases if db.tenant_id != tenant.pk]
            if foreign:
                raise ValidationError(
                    {"databases": f"Not databases of {tenant}: {', '.join(foreign)}."}
                )
        return data


@admin.register(ProxyUser)
class ProxyUserAdmin(TenantScopedAdmin):
    form = ProxyUserForm
    list_display = ["name", "tenant", "all_databases", "database_names", "updated"]
    list_filter = [("tenant", admin.RelatedOnlyFieldListFilter), "all_databases"]
    search_fields = ["name"]
    filter_horizontal = ["databases"]

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).prefetch_related("databases")

    @admin.display(description="databases")
    def database_names(self, obj: ProxyUser) -> str:
        return ", ".join(db.name for db in obj.databases.all())
