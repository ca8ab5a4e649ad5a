"""``manage.py demo``: the demo tenant `make run` serves, made idempotently.

An administrator (``admin``, password from ``SQLPROXY_DEMO_ADMIN_PASSWORD``), a tenant
"Demo" owned by them, and that tenant's databases, users and policy imported from
``examples/sqlproxy.toml`` — the file a standalone worker reads, unchanged. Prints what to do
next; ``{HTTP}`` and ``{PROXY_PORT}`` are filled in by scripts/run_stack.py.
"""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from controlplane.tenants.models import ApiToken, Membership, Tenant
from controlplane.tenants.services import create_token, import_worker_toml
from proxyworker.config.loader import ConfigError

EXAMPLE = "examples/sqlproxy.toml"
TOKEN_NAME = "make run"


class Command(BaseCommand):
    help = "Create or update the demo tenant from examples/sqlproxy.toml."

    def handle(self, *args: Any, **options: Any) -> None:
        password = os.environ.get("SQLPROXY_DEMO_ADMIN_PASSWORD")
        if not password:
            raise CommandError("SQLPROXY_DEMO_ADMIN_PASSWORD is not set")
        path = os.path.join(settings.BASE_DIR, EXAMPLE)
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        with transaction.atomic():
            admin, _ = get_user_model().objects.get_or_create(
                username="admin", defaults={"is_staff": True, "is_superuser": True}
            )
            admin.set_password(password)
            admin.save()
            tenant, _ = Tenant.objects.get_or_create(slug="demo", defaults={"name": "Demo"})
            Membership.objects.update_or_create(
                tenant=tenant, user=admin, defaults={"role": Membership.Role.OWNER}
            )
            try:
                report = import_worker_toml(tenant, text, path=EXAMPLE, author=admin, via="demo")
            except ConfigError as exc:
                raise CommandError(str(exc)) from None
            ApiToken.objects.filter(tenant=tenant, name=TOKEN_NAME).delete()
            _, token = create_token(tenant, admin, TOKEN_NAME)
        self.stdout.write(
            f"""
SQL Proxy is up: control plane, ingest, Celery worker and beat, one proxy worker.

  Admin:      {{HTTP}}/admin/     user admin, password {password}
  Dashboard:  {{HTTP}}/dashboard/
  API:        curl -H 'Authorization: Bearer {token}' {{HTTP}}/api/v1/databases/
  Tenant:     Demo ({report.summary()})

Connect through the worker (the tenant's policy is enforced):

  PGPASSWORD=app-secret psql "host=127.0.0.1 port={{PROXY_PORT}} user=app dbname=demo"

  DELETE FROM users WHERE id > 5;        -- over the limit of 10 rows: refused, nothing deleted
  SELECT * FROM secret_keys;             -- a honeytoken table: refused (and audited)
  SELECT pg_read_file('/etc/passwd');    -- a signature: refused

Change the policy in the admin (Policies) and the worker enforces it within a second.
"""
        )
