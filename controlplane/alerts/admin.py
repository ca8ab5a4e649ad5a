"""Admin of alerts: webhook endpoints (the secret is write-only), alerts, and the delivery log
with failed deliveries marked and a retry action."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from controlplane.admin_scoping import TenantScopedAdmin
from controlplane.alerts.models import Alert, Delivery, WebhookEndpoint
from controlplane.alerts.services import retry_failed


class WebhookEndpointForm(forms.ModelForm):
    url = forms.URLField(max_length=500, assume_scheme="https")
    secret = forms.CharField(
        required=False,
        strip=False,
        widget=forms.PasswordInput,
        help_text="HMAC-SHA256 key of the generic JSON kind (stored encrypted; empty: keep).",
    )

    class Meta:
        model = WebhookEndpoint
        fields = "__all__"

    def save(self, commit: bool = True) -> WebhookEndpoint:
        endpoint: WebhookEndpoint = super().save(commit=False)
        if self.cleaned_data.get("secret"):
            endpoint.set_secret(self.cleaned_data["secret"])
        if commit:
            endpoint.save()
        return endpoint


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(TenantScopedAdmin):
    form = WebhookEndpointForm
    list_display = ["name", "tenant", "kind", "enabled", "failing", "on_block", "on_rate_limit"]
    list_filter = ["kind", "enabled", "failing"]
    search_fields = ["name", "url"]


@admin.register(Alert)
class AlertAdmin(TenantScopedAdmin):
    list_display = ["first_seen", "kind", "tenant", "database", "user", "client", "rule", "count"]
    list_filter = ["kind", "tenant"]
    search_fields = ["database", "user", "client", "rule", "normalized"]
    date_hierarchy = "first_seen"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Delivery)
class DeliveryAdmin(TenantScopedAdmin):
    tenant_path = "endpoint__tenant"
    list_display = [
        "created",
        "subject",
        "endpoint",
        "status",
        "attempts",
        "response_status",
        "last_error",
    ]
    list_filter = ["status", "endpoint__kind"]
    search_fields = ["subject", "last_error"]
    readonly_fields = ["endpoint", "alert", "subject", "status", "attempts", "last_error",
                       "response_status", "created", "finished", "payload"]  # fmt: skip
    exclude = ["body"]
    actions = ["retry"]

    @admin.display(description="payload")
    def payload(self, obj: Delivery) -> str:
        return bytes(obj.body).decode(errors="replace")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.action(description="Retry the selected failed deliveries")
    def retry(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        count = retry_failed(queryset)
        self.message_user(request, f"{count} delivery(ies) queued again.", messages.SUCCESS)
