"""Serializers of the tokens API: the plaintext token appears once, in the create response."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from rest_framework import serializers

from controlplane.tenants.models import ApiToken


class MemberField(serializers.SlugRelatedField):
    """A member by user name (a name PostgreSQL cannot hold is simply not a member)."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, str) and "\x00" in data:
            self.fail("does_not_exist", slug_name=self.slug_field, value=data)
        return super().to_internal_value(data)


class ApiTokenSerializer(serializers.ModelSerializer):
    user = MemberField(
        slug_field="username",
        queryset=get_user_model().objects.none(),
        required=False,
        help_text="A member of the tenant the token acts as (default: the caller).",
    )
    token = serializers.SerializerMethodField(
        help_text="The token itself: in the create response only, never again."
    )

    class Meta:
        model = ApiToken
        fields = ["id", "name", "prefix", "user", "created", "last_used", "token"]
        read_only_fields = ["prefix", "created", "last_used"]

    def get_fields(self) -> dict[str, Any]:
        fields = super().get_fields()
        tenant = self.context.get("tenant")
        user_field = fields["user"]
        assert isinstance(user_field, serializers.SlugRelatedField)
        user_field.queryset = (
            get_user_model().objects.filter(memberships__tenant=tenant)
            if tenant
            else get_user_model().objects.none()
        )
        return fields

    def get_token(self, obj: ApiToken) -> str | None:
        return getattr(obj, "plaintext", None)
