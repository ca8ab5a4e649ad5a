"""Serializers of the reports API: the usage report (the audit statistics plus the rows
changed) and the report schedules, whose webhook is one of the caller's tenant."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from controlplane.alerts.models import WebhookEndpoint
from controlplane.audit.api.serializers import StatisticsSerializer
from controlplane.reports.models import ReportSchedule


class TableRowsSerializer(serializers.Serializer):
    table = serializers.CharField(help_text="Empty: rows the command tags report, not attributed.")
    rows = serializers.IntegerField()


class DatabaseRowsSerializer(serializers.Serializer):
    database = serializers.CharField()
    rows = serializers.IntegerField()


class UserRowsSerializer(serializers.Serializer):
    user = serializers.CharField()
    rows = serializers.IntegerField()


class RowsChangedSerializer(serializers.Serializer):
    total = serializers.IntegerField()
    by_table = TableRowsSerializer(many=True)
    by_database = DatabaseRowsSerializer(many=True)
    by_user = UserRowsSerializer(many=True)


class UsageSerializer(StatisticsSerializer):
    rows_changed = RowsChangedSerializer()


class RecipientsField(serializers.ListField):
    """``email_to`` as a JSON list of addresses; the model keeps them one per line."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("source", "*")
        super().__init__(child=serializers.EmailField(max_length=254), **kwargs)

    def to_internal_value(self, data: Any) -> dict[str, str]:
        return {"email_to": "\n".join(super().to_internal_value(data))}

    def to_representation(self, data: ReportSchedule) -> list[str]:
        return data.recipients()


class ReportScheduleSerializer(serializers.ModelSerializer):
    email_to = RecipientsField(required=False, help_text="Recipients (empty: no email).")
    webhook = serializers.PrimaryKeyRelatedField(
        queryset=WebhookEndpoint.objects.none(),
        required=False,
        allow_null=True,
        help_text="Id of a webhook endpoint of the tenant to post the report to too.",
    )

    class Meta:
        model = ReportSchedule
        fields = [
            "id",
            "name",
            "period",
            "email_to",
            "webhook",
            "enabled",
            "next_run",
            "last_sent",
            "last_error",
        ]
        read_only_fields = ["last_sent", "last_error"]

    def get_fields(self) -> dict[str, Any]:
        fields = super().get_fields()
        tenant = self.context.get("tenant")
        webhook = fields["webhook"]
        assert isinstance(webhook, serializers.PrimaryKeyRelatedField)
        webhook.queryset = (
            WebhookEndpoint.objects.filter(tenant=tenant)
            if tenant
            else WebhookEndpoint.objects.none()
        )
        return fields
