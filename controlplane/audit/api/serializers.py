"""Serializers of the audit API: events, the filters over them, statistics."""

from __future__ import annotations

from rest_framework import serializers

from controlplane.audit.models import AuditEvent


class AuditEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = AuditEvent
        fields = [
            "event_id",
            "time",
            "worker",
            "database",
            "user",
            "client",
            "application_name",
            "decision",
            "rule",
            "fingerprint",
            "normalized",
            "message",
            "protocol",
            "duration_ms",
            "command_tag",
            "rows",
        ]


class EventFilterSerializer(serializers.Serializer):
    """Query parameters shared by the event list and the statistics."""

    since = serializers.DateTimeField(required=False, help_text="Events at or after (ISO 8601).")
    until = serializers.DateTimeField(required=False, help_text="Events before (ISO 8601).")
    user = serializers.CharField(required=False, max_length=200)
    database = serializers.CharField(required=False, max_length=200)
    decision = serializers.ChoiceField(choices=AuditEvent.Decision.choices, required=False)
    rule = serializers.CharField(required=False, max_length=200)
    table = serializers.CharField(
        required=False,
        max_length=200,
        help_text="Events that changed rows of this table (schema.table), or whose normalized "
        "statement or message mentions it.",
    )
    fingerprint = serializers.CharField(required=False, max_length=200)

    def validate(self, attrs: dict[str, object]) -> dict[str, object]:
        since, until = attrs.get("since"), attrs.get("until")
        if since is not None and until is not None and since > until:  # type: ignore[operator]
            raise serializers.ValidationError({"until": "Must not be before since."})
        return attrs


class StatisticsFilterSerializer(EventFilterSerializer):
    top = serializers.IntegerField(required=False, min_value=1, max_value=100, default=10)


class CountsSerializer(serializers.Serializer):
    queries = serializers.IntegerField()
    denied = serializers.IntegerField()
    alerted = serializers.IntegerField()
    honeytoken_hits = serializers.IntegerField()


class DatabaseCountsSerializer(CountsSerializer):
    database = serializers.CharField()


class UserCountsSerializer(CountsSerializer):
    user = serializers.CharField()


class FingerprintSerializer(serializers.Serializer):
    fingerprint = serializers.CharField()
    normalized = serializers.CharField()
    count = serializers.IntegerField()
    denied = serializers.IntegerField()
    alerted = serializers.IntegerField()
    avg_duration_ms = serializers.FloatField(allow_null=True)
    last_seen = serializers.DateTimeField()


class StatisticsSerializer(serializers.Serializer):
    queries = serializers.IntegerField()
    allowed = serializers.IntegerField()
    denied = serializers.IntegerField()
    alerted = serializers.IntegerField()
    honeytoken_hits = serializers.IntegerField()
    blocks_by_rule = serializers.DictField(child=serializers.IntegerField())
    top_fingerprints = FingerprintSerializer(many=True)
    by_database = DatabaseCountsSerializer(many=True)
    by_user = UserCountsSerializer(many=True)
