"""App configuration of ``policies``; connects the signal that gives each database a policy."""

from __future__ import annotations

from django.apps import AppConfig


class PoliciesConfig(AppConfig):
    name = "controlplane.policies"
    label = "policies"
    verbose_name = "Policies"

    def ready(self) -> None:
        from controlplane.policies import signals  # noqa: F401
