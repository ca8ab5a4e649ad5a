"""App configuration of ``proxyusers``."""

from __future__ import annotations

from django.apps import AppConfig


class ProxyUsersConfig(AppConfig):
    name = "controlplane.proxyusers"
    label = "proxyusers"
    verbose_name = "Proxy users"
