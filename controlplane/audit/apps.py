"""App configuration of ``audit``."""

from __future__ import annotations

from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "controlplane.audit"
    label = "audit"
    verbose_name = "Audit"
