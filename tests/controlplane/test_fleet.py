"""Config down: the compiled snapshot, its version, publication to a real Redis, outages."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.db import transaction

from controlplane.databases.models import Database
from controlplane.fleet import services
from controlplane.fleet.models import ConfigState
from controlplane.policies.models import Policy
from controlplane.policies.services import update_policy
from controlplane.proxyusers.models import ProxyUser
from proxyworker.config import fleet
from proxyworker.config.policy import DatabasePolicy
from proxyworker.protocol.scram import make_verifier as worker_make_verifier
from proxyworker.protocol.scram import parse_verifier
from tests.controlplane.conftest import World
from tests.support.redisserver import RedisServer

pytestmark = pytest.mark.django_db


def test_it_compiles_every_tenant_with_its_own_policy(world: World) -> None:
    policy = Policy.objects.get(database=world.a_db)
    update_policy(policy, DatabasePolicy(table_limits={"users": 3}))
    snapshot = fleet.decode_snapshot(fleet.encode_snapshot(services.compile_snapshot()))
    config = snapshot.config
    assert [db.name for db in config.databases] == ["a_orders", "b_billing"]
    a_orders = config.databases[0]
    assert a_orders.policy is not None and a_orders.policy.table_limits == {"users": 3}
    assert config.policy_for("b_billing") == DatabasePolicy()
    target = a_orders.target()
    assert (target.host, target.user, target.password, target.dbname) == (
        "127.0.0.1",
        "app",
        "a-upstream-pw",
        "orders",
    )
    # users reach their own tenant's databases only
    assert [(u.name, u.databases) for u in config.users] == [("a_app", ["a_orders"])]


def test_the_process_sections_come_from_the_settings(settings: Any) -> None:
    settings.SQLPROXY_FLEET = {
        "listen_host": "0.0.0.0",
        "listen_port": 7432,
        "admin_host": "0.0.0.0",
        "admin_port": 9300,
        "audit_sample_allowed": 0.25,
    }
    config = services.compile_config()
    assert (config.listen.host, config.listen.port) == ("0.0.0.0", 7432)
    assert (config.admin.host, config.admin.port) == ("0.0.0.0", 9300)
    assert config.audit.sample_allowed == 0.25


def test_it_leaves_out_users_without_databases(world: World) -> None:
    world.a_user.databases.clear()
    assert services.compile_config().users == []
    world.a_user.all_databases = True
    world.a_user.save()
    Database.objects.create(tenant=world.a, name="a_more", host="h", dbname="d", user="u")
    (user,) = services.compile_config().users
    assert user.databases == ["a_more", "a_orders"]


def test_it_bumps_the_version_only_when_the_config_changes(world: World) -> None:
    first = services.compile_snapshot()
    assert services.compile_snapshot().version == first.version
    world.a_db.pool_size = 3
    world.a_db.save()
    assert services.compile_snapshot().version == first.version + 1


def test_its_verifier_is_what_the_worker_computes() -> None:
    from controlplane.proxyusers import scram

    salt = b"0123456789abcdef"
    for password in ("plain-ascii", "pässword-1", "ﬁ\u00a0Ⅸ", "\u0007bell"):
        ours = scram.make_verifier(password, salt=salt)
        assert scram.verify_password(password, ours)
        assert not scram.verify_password("other", ours)
        assert parse_verifier(ours) == worker_make_verifier(password, salt=salt)


def _listen(redis: RedisServer) -> Any:
    pubsub = redis.client().pubsub()
    pubsub.subscribe(fleet.VERSION_CHANNEL)
    assert pubsub.get_message(timeout=2)["type"] == "subscribe"
    return pubsub


def _next_version(pubsub: Any, timeout: float = 5.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.2)
        if message and message["type"] == "message":
            return int(message["data"])
    raise TimeoutError("no version published")


@pytest.mark.django_db(transaction=True)
def test_it_publishes_once_on_commit(world: World, redis: RedisServer) -> None:
    pubsub = _listen(redis)
    with transaction.atomic():
        policy = Policy.objects.get(database=world.a_db)
        update_policy(policy, DatabasePolicy(table_limits={"orders": 5}))
        world.a_db.pool_size = 4
        world.a_db.save()
        assert redis.client().get(fleet.SNAPSHOT_KEY) is None  # not before the commit
    version = _next_version(pubsub)
    with pytest.raises(TimeoutError):  # one publication per transaction, however many changes
        _next_version(pubsub, timeout=0.5)
    stored = fleet.decode_snapshot(redis.client().get(fleet.SNAPSHOT_KEY))
    assert stored.version == version == ConfigState.objects.get().published_version
    assert stored.config.policy_for("a_orders").table_limits == {"orders": 5}
    assert stored.config.databases[0].pool_size == 4


@pytest.mark.django_db(transaction=True)
def test_it_keeps_the_change_and_retries_when_redis_is_down(
    world: World, redis: RedisServer
) -> None:
    services.publish()
    published = ConfigState.objects.get().published_version
    redis.stop()
    with transaction.atomic():
        world.a_db.pool_size = 9
        world.a_db.save()
    world.a_db.refresh_from_db()
    assert world.a_db.pool_size == 9  # committed
    state = ConfigState.objects.get()
    assert state.pending and state.published_version == published
    assert "Redis unreachable" in state.last_error
    redis.start()
    pubsub = _listen(redis)
    from controlplane.fleet.tasks import publish_pending

    assert publish_pending.delay().get() == state.version  # the beat task, run eagerly
    assert _next_version(pubsub) == state.version
    state.refresh_from_db()
    assert not state.pending and state.last_error == ""
    stored = fleet.decode_snapshot(redis.client().get(fleet.SNAPSHOT_KEY))
    assert stored.config.databases[0].pool_size == 9


def test_it_never_replaces_a_newer_snapshot(world: World, redis: RedisServer) -> None:
    services.publish()
    ours = ConfigState.objects.get().version
    newer = fleet.ConfigSnapshot(version=ours + 10, created=0.0, config=services.compile_config())
    redis.client().set(fleet.SNAPSHOT_KEY, fleet.encode_snapshot(newer))
    ProxyUser.objects.filter(pk=world.a_user.pk).update(name="a_renamed")
    held = services.publish()
    # renumbered above what Redis held, then published
    assert held == ours + 11
    stored = fleet.decode_snapshot(redis.client().get(fleet.SNAPSHOT_KEY))
    assert stored.version == ours + 11 and stored.config.users[0].name == "a_renamed"


@pytest.mark.django_db(transaction=True)
def test_it_publishes_an_api_change_once_before_answering(world: World, redis: RedisServer) -> None:
    pubsub = _listen(redis)
    policy = Policy.objects.get(database=world.a_db)
    response = world.alice.api().put(
        f"/api/v1/databases/{world.a_db.pk}/policy.toml",
        "[table_limits]\nusers = 1\n",
        content_type="application/toml",
    )
    assert response.status_code == 200
    # by the time the API answered, Redis holds the new snapshot
    stored = fleet.decode_snapshot(redis.client().get(fleet.SNAPSHOT_KEY))
    assert stored.config.policy_for("a_orders").table_limits == {"users": 1}
    assert _next_version(pubsub) == stored.version
    with pytest.raises(TimeoutError):
        _next_version(pubsub, timeout=0.5)
    assert policy.versions.count() == 2
