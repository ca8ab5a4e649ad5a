"""Serializers of the databases API; the upstream password is write-only."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from controlplane.api_validation import clean_instance
from controlplane.databases.models import POOL_FIELDS, Database


class DatabaseSerializer(serializers.ModelSerializer):
    password = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        style={"input_type": "password"},
        help_text="Upstream password; stored encrypted, never returned. Blank: none.",
    )
    has_password = serializers.SerializerMethodField()
    policy = serializers.PrimaryKeyRelatedField(read_only=True)

    class Meta:
        model = Database
        fields = [
            "id",
            "name",
            "host",
            "port",
            "dbname",
            "user",
            "password",
            "has_password",
            "sslmode",
            "sslrootcert",
            *POOL_FIELDS,
            "policy",
            "created",
            "updated",
        ]
        read_only_fields = ["created", "updated"]

    def get_has_password(self, obj: Database) -> bool:
        return bool(obj.password_encrypted)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        candidate = Database(**{k: v for k, v in attrs.items() if k != "password"})
        if self.instance is not None:
            for f in Database._meta.concrete_fields:
                if f.attname not in attrs:
                    setattr(candidate, f.attname, getattr(self.instance, f.attname))
        if "password" in attrs:
            candidate.set_password(attrs["password"])
        clean_instance(candidate)
        return attrs

    def _save(self, instance: Database, attrs: dict[str, Any]) -> Database:
        password = attrs.pop("password", None)
        for key, value in attrs.items():
            setattr(instance, key, value)
        if password is not None:
            instance.set_password(password)
        instance.save()
        return instance

    def create(self, validated_data: dict[str, Any]) -> Database:
        return self._save(Database(), validated_data)

    def update(self, instance: Database, validated_data: dict[str, Any]) -> Database:
        return self._save(instance, validated_data)
