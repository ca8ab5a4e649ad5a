"""Serializers of the proxy users API: a password or a verifier in, never either out."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from controlplane.api_validation import clean_instance
from controlplane.databases.models import Database
from controlplane.proxyusers import scram
from controlplane.proxyusers.models import ProxyUser


class ProxyUserSerializer(serializers.ModelSerializer):
    password = serializers.CharField(
        write_only=True,
        required=False,
        min_length=1,
        style={"input_type": "password"},
        help_text="Turned into a SCRAM-SHA-256 verifier; the plaintext is not stored.",
    )
    scram_verifier = serializers.CharField(
        write_only=True,
        required=False,
        max_length=300,
        help_text="SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey> instead of password.",
    )
    upstream_password = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        style={"input_type": "password"},
        help_text="Password of upstream_user, stored encrypted; never returned.",
    )
    databases = serializers.PrimaryKeyRelatedField(
        many=True, required=False, queryset=Database.objects.none()
    )

    class Meta:
        model = ProxyUser
        fields = [
            "id",
            "name",
            "password",
            "scram_verifier",
            "databases",
            "all_databases",
            "upstream_user",
            "upstream_password",
            "created",
            "updated",
        ]
        read_only_fields = ["created", "updated"]

    def get_fields(self) -> dict[str, Any]:
        fields = super().get_fields()
        tenant = self.context.get("tenant")
        databases = fields["databases"]
        assert isinstance(databases, serializers.ManyRelatedField)
        databases.child_relation.queryset = (  # type: ignore[attr-defined]
            Database.objects.filter(tenant=tenant) if tenant else Database.objects.none()
        )
        return fields

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        password, verifier = attrs.get("password"), attrs.get("scram_verifier")
        if password is not None and verifier is not None:
            raise serializers.ValidationError(
                {"password": "Give a password or a scram_verifier, not both."}
            )
        if self.instance is None and password is None and verifier is None:
            raise serializers.ValidationError({"password": "A password or scram_verifier."})
        candidate = ProxyUser(
            name=attrs.get("name", getattr(self.instance, "name", "")),
            scram_verifier=verifier or getattr(self.instance, "scram_verifier", "") or "",
        )
        if password is not None:
            candidate.scram_verifier = scram.make_verifier(password)
            attrs["scram_verifier"] = candidate.scram_verifier
        clean_instance(candidate)
        attrs.pop("password", None)
        return attrs

    def _save_upstream(self, user: ProxyUser, password: str | None) -> ProxyUser:
        if password is not None or not user.upstream_user:
            user.set_upstream_password(password if user.upstream_user else None)
            user.save(update_fields=["upstream_password_encrypted"])
        return user

    def create(self, validated_data: dict[str, Any]) -> ProxyUser:
        password = validated_data.pop("upstream_password", None)
        return self._save_upstream(super().create(validated_data), password)

    def update(self, instance: ProxyUser, validated_data: dict[str, Any]) -> ProxyUser:
        password = validated_data.pop("upstream_password", None)
        return self._save_upstream(super().update(instance, validated_data), password)
