"""Fixtures for the control plane: Django's test database in the suite's private PostgreSQL
cluster, a private Redis, and the personas of tenant isolation.

alice owns tenant A, bob is a member of A, charlie owns tenant B and is an outsider to A.
Each has an API token for their tenant (``Persona.token``) and a staff login for the admin.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest
from django.contrib.auth.models import User
from django.db import connections
from rest_framework.test import APIClient

from controlplane.audit.services import ingest_batch
from controlplane.databases.models import Database
from controlplane.proxyusers.models import ProxyUser
from controlplane.streams.fanout import after_ingest
from controlplane.tenants.models import Membership, Tenant
from controlplane.tenants.services import create_token
from proxyworker.config.events import AuditEvent as AuditEventStruct
from tests.support.pgcluster import PgCluster
from tests.support.redisserver import RedisServer, start_redis

PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="session")
def django_db_modify_db_settings(upstream: PgCluster) -> None:
    from django.conf import settings

    settings.DATABASES["default"].update(
        ENGINE="django.db.backends.postgresql",
        NAME="sqlproxy_controlplane",
        HOST="127.0.0.1",
        PORT=str(upstream.port),
        USER="postgres",
        PASSWORD="",
    )
    settings.DATABASES["default"]["TEST"]["NAME"] = "test_sqlproxy_controlplane"
    # The connection object may already exist (with the SQLite backend of the settings).
    connections["default"].close()
    del connections["default"]


@pytest.fixture
def db(_django_db_helper: None) -> None:
    """pytest-django's ``db`` (tests/conftest.py's ``db`` names the worker's pool modes)."""


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = start_redis()
    yield server
    server.destroy()


@pytest.fixture
def redis(redis_server: RedisServer, settings: Any) -> Iterator[RedisServer]:
    """The private Redis, empty, and the control plane pointed at it."""
    if redis_server.process is None:
        redis_server.start()
    redis_server.client().flushall()
    settings.REDIS_URL = redis_server.url
    yield redis_server
    if redis_server.process is None:  # a test stopped it
        redis_server.start()


@dataclass
class Persona:
    user: User
    tenant: Tenant
    token: str

    def api(self) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {self.token}")
        return client


@dataclass
class World:
    alice: Persona
    bob: Persona
    charlie: Persona
    a: Tenant
    b: Tenant
    a_db: Database
    b_db: Database
    a_user: ProxyUser


def _user(name: str) -> User:
    return User.objects.create_user(name, f"{name}@example.com", PASSWORD, is_staff=True)


@pytest.fixture
def world(db: None) -> World:
    a = Tenant.objects.create(name="Tenant A", slug="a")
    b = Tenant.objects.create(name="Tenant B", slug="b")
    alice, bob, charlie = _user("alice"), _user("bob"), _user("charlie")
    Membership.objects.create(tenant=a, user=alice, role=Membership.Role.OWNER)
    Membership.objects.create(tenant=a, user=bob, role=Membership.Role.MEMBER)
    Membership.objects.create(tenant=b, user=charlie, role=Membership.Role.OWNER)
    a_db = Database(
        tenant=a, name="a_orders", host="127.0.0.1", port=5432, dbname="orders", user="app"
    )
    a_db.set_password("a-upstream-pw")
    a_db.save()
    b_db = Database(
        tenant=b, name="b_billing", host="127.0.0.1", port=5432, dbname="billing", user="app"
    )
    b_db.save()
    a_user = ProxyUser(tenant=a, name="a_app")
    a_user.set_password("a-app-pw")
    a_user.save()
    a_user.databases.set([a_db])
    return World(
        alice=Persona(alice, a, create_token(a, alice, "alice")[1]),
        bob=Persona(bob, a, create_token(a, bob, "bob")[1]),
        charlie=Persona(charlie, b, create_token(b, charlie, "charlie")[1]),
        a=a,
        b=b,
        a_db=a_db,
        b_db=b_db,
        a_user=a_user,
    )


def ingest(*events: AuditEventStruct) -> None:
    """Store events as the ingest process does, then fan them out (alerts, reports, streams)."""
    entries = [
        (f"{time.time_ns()}-{n}", {b"data": msgspec.json.encode(e)}) for n, e in enumerate(events)
    ]
    ingest_batch(entries)
    after_ingest(entries)
