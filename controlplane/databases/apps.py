"""App configuration of ``databases``."""

from __future__ import annotations

from django.apps import AppConfig


class DatabasesConfig(AppConfig):
    name = "controlplane.databases"
    label = "databases"
    verbose_name = "Databases"
