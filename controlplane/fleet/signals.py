"""One clear mechanism for "config down": any saved or deleted tenant, database, proxy user or
policy (and a change of a user's databases) schedules one publication after commit, whatever
made the change (admin, API, import, shell)."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import m2m_changed, post_delete, post_save

from controlplane.databases.models import Database
from controlplane.fleet.services import schedule_publish
from controlplane.policies.models import Policy
from controlplane.proxyusers.models import ProxyUser
from controlplane.tenants.models import Tenant


def _changed(sender: type, **_: Any) -> None:
    schedule_publish()


for _model in (Tenant, Database, ProxyUser, Policy):
    post_save.connect(_changed, sender=_model, dispatch_uid=f"fleet.saved.{_model.__name__}")
    post_delete.connect(_changed, sender=_model, dispatch_uid=f"fleet.deleted.{_model.__name__}")
m2m_changed.connect(
    _changed, sender=ProxyUser.databases.through, dispatch_uid="fleet.user_databases"
)
