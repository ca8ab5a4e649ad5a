"""Serializers of the usage report: the audit statistics plus the rows changed."""

from __future__ import annotations

from rest_framework import serializers

from controlplane.audit.api.serializers import StatisticsSerializer


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
