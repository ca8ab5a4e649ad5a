"""Serializers of the alerts API: webhook endpoints (the secret is write-only, like the
admin's) and the read-only alerts with their deliveries."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from rest_framework import serializers

from controlplane.alerts.models import Alert, Delivery, WebhookEndpoint


class WebhookEndpointSerializer(serializers.ModelSerializer):
    secret = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        max_length=500,
        style={"input_type": "password"},
        help_text="HMAC-SHA256 key of the generic JSON kind; stored encrypted, never returned. "
        "Absent: keep. Blank: none (JSON posts go unsigned).",
    )
    has_secret = serializers.SerializerMethodField()

    class Meta:
        model = WebhookEndpoint
        fields = [
            "id",
            "name",
            "kind",
            "url",
            "secret",
            "has_secret",
            "enabled",
            "on_block",
            "on_rate_limit",
            "on_burst",
            "burst_blocks",
            "burst_seconds",
            "failing",
            "created",
        ]
        read_only_fields = ["failing", "created"]

    def get_has_secret(self, obj: WebhookEndpoint) -> bool:
        return bool(obj.secret_encrypted)

    def validate_url(self, value: str) -> str:
        # The model's URLField also takes ftp(s)://; an endpoint is posted to over HTTP.
        if urlsplit(value).scheme.lower() not in {"http", "https"}:
            raise serializers.ValidationError("Enter an http:// or https:// URL.")
        return value

    def _save(self, endpoint: WebhookEndpoint, attrs: dict[str, Any]) -> WebhookEndpoint:
        secret = attrs.pop("secret", None)
        for key, value in attrs.items():
            setattr(endpoint, key, value)
        if secret is not None:
            endpoint.set_secret(secret)
        endpoint.save()
        return endpoint

    def create(self, validated_data: dict[str, Any]) -> WebhookEndpoint:
        return self._save(WebhookEndpoint(), validated_data)

    def update(self, instance: WebhookEndpoint, validated_data: dict[str, Any]) -> WebhookEndpoint:
        return self._save(instance, validated_data)


class DeliverySerializer(serializers.ModelSerializer):
    class Meta:
        model = Delivery
        fields = [
            "id",
            "endpoint",
            "subject",
            "status",
            "attempts",
            "response_status",
            "last_error",
            "created",
            "next_attempt",
            "finished",
        ]
        read_only_fields = fields


class AlertSerializer(serializers.ModelSerializer):
    deliveries = DeliverySerializer(many=True, read_only=True)

    class Meta:
        model = Alert
        fields = [
            "id",
            "kind",
            "first_seen",
            "last_seen",
            "count",
            "first_event_id",
            "database",
            "user",
            "client",
            "rule",
            "message",
            "normalized",
            "deliveries",
        ]
        read_only_fields = fields


class AlertFilterSerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=Alert.Kind.choices, required=False)
