"""Admin of policies: validation errors next to the field, a diff of the policy TOML to
confirm before anything is saved, the version history with revert.

The confirmation step: a valid POST that would change the policy renders
``confirm_diff.html`` (the unified diff of the TOML before and after, the submitted fields as
hidden inputs); only a POST carrying ``_confirm_diff`` saves. Saving goes through
``services.update_policy``, which records the version with the admin user as author.
"""

from __future__ import annotations

import copy
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from controlplane.admin_scoping import TenantScopedAdmin
from controlplane.policies.models import Policy, PolicyVersion
from controlplane.policies.services import (
    policy_from_toml,
    policy_to_toml,
    revert_policy,
    toml_diff,
    update_policy,
)

CONFIRM = "_confirm_diff"


def _toml(policy: Policy) -> str:
    try:
        return policy_to_toml(policy.to_contract())
    except Exception as exc:  # a stored policy that no longer validates
        return f"# invalid: {exc}\n"


class PolicyVersionInline(admin.TabularInline):
    model = PolicyVersion
    extra = 0
    can_delete = False
    fields = ["number", "created", "author_name", "note", "revert"]
    readonly_fields = fields
    ordering = ["-number"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="")
    def revert(self, obj: PolicyVersion) -> str:
        url = reverse("admin:policies_policy_revert", args=[obj.policy_id, obj.number])
        return format_html('<a href="{}">view / revert to this version</a>', url)


@admin.register(Policy)
class PolicyAdmin(TenantScopedAdmin):
    tenant_path = "database__tenant"
    list_display = [
        "database",
        "tenant",
        "honeytoken_action",
        "signatures_enabled",
        "version",
        "updated",
    ]
    list_filter = [
        ("database__tenant", admin.RelatedOnlyFieldListFilter),
        "honeytoken_action",
        "signatures_enabled",
    ]
    search_fields = ["database__name"]
    readonly_fields = ["database"]
    inlines = [PolicyVersionInline]
    fieldsets = [
        (None, {"fields": ["database"]}),
        ("Table limits", {"fields": ["table_limits"]}),
        (
            "Honeytokens",
            {"fields": ["honeytoken_tables", "honeytoken_values", "honeytoken_action"]},
        ),
        (
            "Signatures",
            {"fields": ["signatures_enabled", "signatures_disable", "signatures_deny"]},
        ),
        (
            "Network and rate",
            {
                "fields": [
                    "ip_rules",
                    "rate_queries_per_second",
                    "rate_burst",
                    "rate_rows_changed_per_minute",
                ]
            },
        ),
    ]

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).select_related("database__tenant")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # every database has exactly one, created with it

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="tenant", ordering="database__tenant__name")
    def tenant(self, obj: Policy) -> str:
        return str(obj.database.tenant)

    @admin.display(description="version")
    def version(self, obj: Policy) -> int | None:
        return obj.versions.order_by("-number").values_list("number", flat=True).first()

    def save_model(self, request: HttpRequest, obj: Policy, form: Any, change: bool) -> None:
        update_policy(obj, author=request.user, via="admin")

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        if request.method == "POST" and object_id is not None and CONFIRM not in request.POST:
            obj = self.get_object(request, unquote(object_id))
            if obj is not None and self.has_change_permission(request, obj):
                before = _toml(obj)
                form = self.get_form(request, obj, change=True)(
                    request.POST, request.FILES, instance=copy.copy(obj)
                )
                if form.is_valid():
                    after = _toml(form.instance)
                    if after != before:
                        return self._confirm(request, obj, toml_diff(before, after))
        return super().changeform_view(request, object_id, form_url, extra_context)

    def _confirm(self, request: HttpRequest, obj: Policy, diff: str) -> HttpResponse:
        fields = [
            (key, value)
            for key, values in request.POST.lists()
            if key != "csrfmiddlewaretoken"
            for value in values
        ]
        context = {
            **self.admin_site.each_context(request),
            "title": f"Confirm the change of the {obj}",
            "object": obj,
            "opts": self.model._meta,
            "diff_lines": diff.splitlines(),
            "fields": fields,
            "confirm_name": CONFIRM,
        }
        return TemplateResponse(request, "admin/policies/policy/confirm_diff.html", context)

    def get_urls(self) -> list[Any]:
        return [
            path(
                "<int:pk>/revert/<int:number>/",
                self.admin_site.admin_view(self.revert_view),
                name="policies_policy_revert",
            ),
            *super().get_urls(),
        ]

    def revert_view(self, request: HttpRequest, pk: int, number: int) -> HttpResponse:
        policy = get_object_or_404(self.get_queryset(request), pk=pk)
        version = get_object_or_404(policy.versions, number=number)
        if request.method == "POST" and self.has_change_permission(request, policy):
            created = revert_policy(policy, number, author=request.user, via="admin")
            if created is None:
                self.message_user(request, f"Version {number} is the current policy.")
            else:
                self.message_user(
                    request,
                    f"Reverted to version {number} (saved as version {created.number}).",
                    messages.SUCCESS,
                )
            return HttpResponseRedirect(reverse("admin:policies_policy_change", args=[pk]))
        target = policy_to_toml(policy_from_toml(version.document))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Revert the {policy} to version {number}",
            "object": policy,
            "version": version,
            "opts": self.model._meta,
            "diff_lines": toml_diff(_toml(policy), target).splitlines(),
        }
        return TemplateResponse(request, "admin/policies/policy/revert.html", context)
