"""Serializers of the policies API, shaped like the worker's policy sections.

The nested serializers describe the shape (and the OpenAPI schema); the final word is the
worker's own ``DatabasePolicy`` struct, whose errors come back on the section they concern.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
from rest_framework import serializers

from controlplane.policies.models import Policy, PolicyVersion
from controlplane.policies.services import POLICY_SECTIONS
from proxyworker.config.policy import DatabasePolicy

_SHORT = {"max_length": 1000}


class HoneytokensSerializer(serializers.Serializer):
    tables = serializers.ListField(child=serializers.CharField(**_SHORT), required=False)
    values = serializers.ListField(child=serializers.CharField(**_SHORT), required=False)
    action = serializers.ChoiceField(choices=["block", "alert"], required=False)


class CustomSignatureSerializer(serializers.Serializer):
    id = serializers.CharField(**_SHORT)
    functions = serializers.ListField(child=serializers.CharField(**_SHORT), required=False)
    commands = serializers.ListField(child=serializers.CharField(**_SHORT), required=False)
    message = serializers.CharField(required=False, allow_blank=True, **_SHORT)


class SignaturesSerializer(serializers.Serializer):
    enabled = serializers.BooleanField(required=False)
    disable = serializers.ListField(child=serializers.CharField(**_SHORT), required=False)
    deny = CustomSignatureSerializer(many=True, required=False)


class IpRuleSerializer(serializers.Serializer):
    allow = serializers.ListField(child=serializers.CharField(**_SHORT), required=False)
    deny = serializers.ListField(child=serializers.CharField(**_SHORT), required=False)
    users = serializers.ListField(child=serializers.CharField(**_SHORT), required=False)
    databases = serializers.ListField(child=serializers.CharField(**_SHORT), required=False)


class RateLimitsSerializer(serializers.Serializer):
    queries_per_second = serializers.FloatField(required=False, allow_null=True, min_value=0)
    burst = serializers.FloatField(required=False, allow_null=True, min_value=0)
    rows_changed_per_minute = serializers.IntegerField(
        required=False, allow_null=True, min_value=0, max_value=2**31 - 1
    )


class PolicySerializer(serializers.ModelSerializer):
    database_name = serializers.CharField(source="database.name", read_only=True)
    table_limits = serializers.DictField(
        child=serializers.IntegerField(min_value=0, max_value=2**31 - 1),
        required=False,
        help_text="Max rows changed per table per transaction, by pattern (first match wins).",
    )
    honeytokens = HoneytokensSerializer(required=False)
    signatures = SignaturesSerializer(required=False)
    ip_rules = IpRuleSerializer(many=True, required=False)
    rate_limits = RateLimitsSerializer(required=False)
    version = serializers.SerializerMethodField()

    class Meta:
        model = Policy
        fields = ["id", "database", "database_name", *POLICY_SECTIONS, "version", "updated"]
        read_only_fields = ["database", "updated"]

    def get_version(self, obj: Policy) -> int | None:
        return obj.versions.order_by("-number").values_list("number", flat=True).first()

    def to_representation(self, instance: Policy) -> dict[str, Any]:
        data = {
            "id": instance.pk,
            "database": instance.database_id,
            "database_name": instance.database.name,
            "version": self.get_version(instance),
            "updated": serializers.DateTimeField().to_representation(instance.updated),
        }
        data.update(msgspec.to_builtins(instance.to_contract()))
        return data

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        base: dict[str, Any] = {}
        if self.partial and self.instance is not None:
            base = msgspec.to_builtins(self.instance.to_contract())
        for section in POLICY_SECTIONS:
            if section in attrs:
                value = attrs[section]
                if section == "rate_limits":
                    value = {k: v for k, v in value.items() if v is not None}
                base[section] = value
        try:
            attrs["contract"] = msgspec.convert(json.loads(json.dumps(base)), DatabasePolicy)
        except msgspec.ValidationError as exc:
            message, _, where = str(exc).partition(" - at `$")
            section = where.lstrip(".").split(".")[0].split("[")[0].rstrip("`") if where else ""
            if section not in POLICY_SECTIONS:
                named = (s for s in POLICY_SECTIONS if f"`{s}`" in message)
                section = next(named, "non_field_errors")
            raise serializers.ValidationError({section: [message]}) from None
        return attrs


class PolicyVersionSerializer(serializers.ModelSerializer):
    class Meta:
        model = PolicyVersion
        fields = ["number", "created", "author_name", "note", "document"]


class RevertSerializer(serializers.Serializer):
    version = serializers.IntegerField(min_value=1, max_value=2**31 - 1)
