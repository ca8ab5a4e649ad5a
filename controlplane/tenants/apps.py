"""App configuration of ``tenants``."""

from __future__ import annotations

from django.apps import AppConfig


class TenantsConfig(AppConfig):
    name = "controlplane.tenants"
    label = "tenants"
    verbose_name = "Tenants"
