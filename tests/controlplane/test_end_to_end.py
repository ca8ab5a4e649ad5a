"""The control plane and a real worker process, end to end, over a real Redis.

Config down: a policy saved through the API is enforced by a worker fed over Redis in under a
second. Events up: what the worker audits reaches the API through the real ingest process,
and none of it is lost while Redis is away. The control plane away: the worker keeps
enforcing what it last had, also across its own restart.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from django.contrib.auth.models import User
from django.test import Client
from rest_framework.test import APIClient

from controlplane.audit.models import AuditEvent
from controlplane.databases.models import Database
from controlplane.fleet import services as fleet_services
from controlplane.policies.models import Policy
from controlplane.policies.services import ensure_policy
from controlplane.proxyusers.models import ProxyUser
from controlplane.tenants.models import Membership, Tenant
from controlplane.tenants.services import create_token
from tests.controlplane.test_admin import policy_form
from tests.support.controlplane import ControlPlane, start_control_plane
from tests.support.pgcluster import PgCluster, wait_until
from tests.support.redisserver import RedisServer
from tests.support.worker import WorkerProcess, launch_fleet

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "e2e_secret"
REFUSED = "protected table"


@dataclass
class Stack:
    api: APIClient
    database: Database
    worker: WorkerProcess
    redis: RedisServer
    upstream: PgCluster

    def dsn(self) -> str:
        return (
            f"host=127.0.0.1 port={self.worker.port} dbname=e2e user=e2e_app "
            "password=e2e-pw sslmode=disable"
        )

    def refused(self) -> bool:
        """Whether the worker refuses to read the secret table now (a new transaction)."""
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            try:
                conn.execute(f"SELECT * FROM {SECRET}")
            except psycopg.errors.InsufficientPrivilege as exc:
                assert REFUSED in str(exc)
                return True
            return False

    def put_policy(self, toml: str) -> None:
        response = self.api.put(
            f"/api/v1/databases/{self.database.pk}/policy.toml",
            toml,
            content_type="application/toml",
        )
        assert response.status_code == 200, response.content


@pytest.fixture
def stack(
    transactional_db: None, upstream: PgCluster, redis: RedisServer, tmp_path: Path
) -> Iterator[Stack]:
    with upstream.connect() as direct:
        direct.execute(
            f"DROP TABLE IF EXISTS {SECRET}; CREATE TABLE {SECRET} (k text);"
            f"INSERT INTO {SECRET} VALUES ('canary')"
        )
    tenant = Tenant.objects.create(name="End to end", slug="e2e")
    owner = User.objects.create_user("dana", "dana@example.com", "pw", is_staff=True)
    Membership.objects.create(tenant=tenant, user=owner, role=Membership.Role.OWNER)
    database = Database.objects.create(
        tenant=tenant,
        name="e2e",
        host="127.0.0.1",
        port=upstream.port,
        dbname="sqlproxy_test",
        user="postgres",
        sslmode="disable",
    )
    app = ProxyUser(tenant=tenant, name="e2e_app")
    app.set_password("e2e-pw")
    app.save()
    app.databases.set([database])
    ensure_policy(database)
    fleet_services.publish()
    worker = launch_fleet(redis.url, str(tmp_path / "worker"), worker_id="e2e")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {create_token(tenant, owner, 'e2e')[1]}")
    yield Stack(api, database, worker, redis, upstream)
    worker.stop()


@pytest.fixture
def ingest(stack: Stack, tmp_path: Path) -> Iterator[ControlPlane]:
    """The real control plane processes (daphne, ``manage.py ingest``) on this test's
    database, committed since the tests are transactional."""
    from django.conf import settings
    from django.db import connection

    control_plane = start_control_plane(
        str(tmp_path / "controlplane"),
        database=connection.settings_dict,
        redis_url=stack.redis.url,
        secret_key=settings.SECRET_KEY,
        fernet_key=settings.SQLPROXY_SECRET_KEYS[0],
    )
    yield control_plane
    control_plane.stop()


def test_a_policy_saved_through_the_api_is_enforced_within_a_second(stack: Stack) -> None:
    assert not stack.refused()
    started = time.monotonic()
    stack.put_policy(f'[honeytokens]\ntables = ["{SECRET}"]\n')
    while not stack.refused():
        assert time.monotonic() - started < 1.0, "not enforced within a second of saving"
        time.sleep(0.01)
    # And lifted the same way.
    started = time.monotonic()
    stack.put_policy("[table_limits]\nother = 5\n")
    while stack.refused():
        assert time.monotonic() - started < 1.0
        time.sleep(0.01)


def test_a_policy_saved_in_the_admin_is_enforced_within_a_second(stack: Stack) -> None:
    admin = Client()
    assert admin.login(username="dana", password="pw")
    policy = Policy.objects.get(database=stack.database)
    url = f"/admin/policies/policy/{policy.pk}/change/"
    data = {**policy_form(policy, honeytoken_tables=f'["{SECRET}"]'), "_confirm_diff": "1"}
    assert not stack.refused()
    started = time.monotonic()
    assert admin.post(url, data).status_code == 302  # saved, after the diff was confirmed
    while not stack.refused():
        assert time.monotonic() - started < 1.0, "not enforced within a second of saving"
        time.sleep(0.01)


def test_what_the_worker_audits_is_in_the_api(stack: Stack, ingest: ControlPlane) -> None:
    stack.put_policy(f'[honeytokens]\ntables = ["{SECRET}"]\n')
    wait_until(stack.refused, timeout=5)

    def listed() -> list[dict[str, object]]:
        response = stack.api.get("/api/v1/audit/events/", {"decision": "deny", "database": "e2e"})
        assert response.status_code == 200
        return list(response.json()["results"])

    wait_until(lambda: bool(listed()), timeout=15)
    event = listed()[0]
    assert event["rule"] == "honeytoken_table"
    assert event["user"] == "e2e_app"
    assert event["worker"] == "e2e"
    assert event["normalized"] == f"SELECT * FROM {SECRET}"


def test_no_audit_event_is_lost_while_redis_is_away(stack: Stack, ingest: ControlPlane) -> None:
    stack.put_policy(f'[honeytokens]\ntables = ["{SECRET}"]\n')
    wait_until(stack.refused, timeout=5)
    sent = 0
    with psycopg.connect(stack.dsn(), autocommit=True) as conn:

        def refuse_some(n: int) -> None:
            nonlocal sent
            for _ in range(n):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(f"SELECT * FROM {SECRET}")
                sent += 1

        refuse_some(100)
        # Redis restarts with what it had saved (a production Redis persists its streams);
        # the worker spools what it cannot send meanwhile and replays it afterwards.
        stack.redis.stop(save=True)
        refuse_some(200)
        stack.redis.start()
        refuse_some(100)
    wait_until(
        lambda: AuditEvent.objects.filter(worker="e2e", decision="deny").count() >= sent,
        timeout=30,
    )
    # Event ids end in the worker's sequence number: every one of them, each exactly once
    # (the first refusal is the probe that waited for the policy).
    ids = AuditEvent.objects.filter(worker="e2e").values_list("event_id", flat=True)
    sequence = sorted(int(i.rsplit("-", 1)[1]) for i in ids)
    assert sequence == list(range(1, sent + 2))


def test_the_worker_keeps_enforcing_without_the_control_plane(stack: Stack) -> None:
    stack.put_policy(f'[honeytokens]\ntables = ["{SECRET}"]\n')
    wait_until(stack.refused, timeout=5)
    stack.redis.stop()
    assert stack.refused()
    # Restarted while Redis is still away: it starts from the snapshot it kept on disk.
    stack.worker.stop()
    stack.worker.start()
    assert stack.refused()
    stack.redis.start()
