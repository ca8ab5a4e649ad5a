"""Every database gets its policy (the default, version 1) when it is created, whichever way
it is created (admin, API, import, shell)."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_save
from django.dispatch import receiver

from controlplane.databases.models import Database
from controlplane.policies.services import ensure_policy


@receiver(post_save, sender=Database, dispatch_uid="policies.create_for_database")
def create_policy(sender: type[Database], instance: Database, created: bool, **_: Any) -> None:
    if created:
        ensure_policy(instance)
