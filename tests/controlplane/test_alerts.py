"""Alerts and webhooks: rules over ingested audit events (honeytoken always, blocks,
rate-limit refusals, bursts from one client), dedup and throttling, and deliveries to a local
HTTP server that checks Slack's and Discord's message shapes and our HMAC signature. Retries:
with Celery's ``apply`` path (eager) and with a real Celery worker process over Redis, whose
attempts are spaced by the exponential backoff and end marked failed."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from controlplane import celery_app
from controlplane.alerts import payloads, services
from controlplane.alerts.models import Alert, Delivery, WebhookEndpoint
from controlplane.alerts.tasks import deliver_webhook
from controlplane.tenants.models import Tenant
from proxyworker.config.events import AuditEvent as AuditEventStruct
from tests.controlplane.conftest import World, ingest
from tests.support.controlplane import database_url
from tests.support.redisserver import RedisServer
from tests.support.webhooks import WebhookReceiver
from tests.support.worker import ROOT

pytestmark = pytest.mark.django_db(transaction=True)
_seq = iter(range(1, 10**9))


def event(**kw: Any) -> AuditEventStruct:
    fields: dict[str, Any] = {
        "id": f"al-{next(_seq)}-{time.time_ns()}",
        "time": time.time(),
        "worker": "w1",
        "database": "a_orders",
        "user": "a_app",
        "client": f"10.1.2.3:{40000 + next(_seq) % 1000}",
        "decision": "deny",
        "rule": "honeytoken_table",
        "normalized": "SELECT * FROM secret_keys",
        "message": "honeytoken table secret_keys",
        **kw,
    }
    return AuditEventStruct(**fields)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver().start()
    yield server
    server.stop()


def endpoint(tenant: Tenant, receiver: WebhookReceiver, kind: str, **kw: Any) -> WebhookEndpoint:
    hook = WebhookEndpoint(tenant=tenant, name=kind, kind=kind, url=receiver.url(f"/{kind}"), **kw)
    hook.set_secret(receiver.secret)
    hook.save()
    return hook


def test_it_posts_valid_slack_discord_and_signed_json(
    world: World, receiver: WebhookReceiver
) -> None:
    for kind in ("slack", "discord", "json"):
        endpoint(world.a, receiver, kind)
    ingest(event())
    assert sorted(r.path for r in receiver.received) == ["/discord", "/json", "/slack"]
    for got in receiver.received:
        assert got.problems == [], (got.path, got.problems)
    by_path = {r.path: r.json() for r in receiver.received}
    assert by_path["/slack"]["blocks"][0]["text"]["text"] == "Honeytoken touched: a_orders"
    assert by_path["/discord"]["embeds"][0]["fields"][0] == {
        "name": "Database", "value": "a_orders", "inline": True,
    }  # fmt: skip
    assert by_path["/json"]["type"] == "alert" and by_path["/json"]["kind"] == "honeytoken"
    assert set(Delivery.objects.values_list("status", flat=True)) == {"delivered"}


def test_a_tampered_body_fails_the_signature_check(receiver: WebhookReceiver) -> None:
    body = payloads.body_for("json", payloads.Notice(kind="block", title="t", tenant="A"))
    ts = str(int(time.time()))
    headers = {
        k.lower(): v for k, v in payloads.headers_for("json", body, receiver.secret, ts).items()
    }
    assert receiver.check("/json", headers, body) == []
    assert receiver.check("/json", headers, body.replace(b'"t"', b'"x"')) == ["bad signature"]
    wrong = payloads.headers_for("json", body, "another-secret", ts)
    assert receiver.check("/json", {k.lower(): v for k, v in wrong.items()}, body) == [
        "bad signature"
    ]


def test_an_attack_is_one_alert_per_key_and_window(world: World, receiver: WebhookReceiver) -> None:
    endpoint(world.a, receiver, "slack", on_burst=False)
    ingest(*[event() for _ in range(40)])  # 40 honeytoken hits from one client, one batch
    ingest(*[event() for _ in range(10)])  # and the next batch
    honeytoken = Alert.objects.get()  # a honeytoken hit is not also a "block" alert
    assert honeytoken.kind == "honeytoken" and honeytoken.count == 50
    assert len(receiver.received) == 1  # one notification, not 50


def test_honeytoken_hits_always_alert_other_rules_follow_the_endpoint(
    world: World, receiver: WebhookReceiver
) -> None:
    endpoint(world.a, receiver, "json", on_block=False, on_rate_limit=False, on_burst=False)
    ingest(
        event(decision="alert", rule="honeytoken_value"),  # action "alert": let through
        event(rule="signature:server-file-access", normalized="SELECT pg_read_file($1)"),
        event(rule="rate_limit", message="rate limit exceeded"),
    )
    assert list(Alert.objects.values_list("kind", flat=True)) == ["honeytoken"]
    assert [r.json()["kind"] for r in receiver.received] == ["honeytoken"]


def test_rate_limit_refusals_and_bursts_from_one_client(
    world: World, receiver: WebhookReceiver
) -> None:
    endpoint(world.a, receiver, "discord", burst_blocks=5, burst_seconds=60)
    ingest(*[event(rule="rate_limit", user="busy", normalized="SELECT $1") for _ in range(3)])
    assert Alert.objects.get(kind="rate_limit").count == 3
    ingest(*[event(rule="signature:x", client=f"10.9.9.9:{p}") for p in range(5000, 5006)])
    burst = Alert.objects.get(kind="burst")
    assert burst.client.startswith("10.9.9.9:") and burst.count >= 5
    kinds = sorted(r.json()["embeds"][0]["title"].split(":")[0] for r in receiver.received)
    assert "Burst of blocked statements from one client" in kinds
    assert all(r.problems == [] for r in receiver.received)


def test_an_outsider_hears_nothing_of_tenant_a(world: World, receiver: WebhookReceiver) -> None:
    endpoint(world.b, receiver, "slack")  # charlie's tenant
    endpoint(world.a, receiver, "json")
    ingest(event(), event(rule="rate_limit"))
    assert sorted(r.path for r in receiver.received) == ["/json", "/json"]
    assert not Alert.objects.filter(tenant=world.b).exists()
    assert Alert.objects.filter(tenant=world.a).count() == 2


def test_a_failing_endpoint_is_retried_then_marked(
    world: World, receiver: WebhookReceiver, settings: Any
) -> None:
    """Through Celery's eager ``apply`` path: each retry runs at once (countdown ignored)."""
    settings.SQLPROXY_WEBHOOK_RETRY_BASE_SECONDS = 0.0
    hook = endpoint(world.a, receiver, "json")
    receiver.fail_first = 2
    ingest(event())
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.attempts, len(receiver.received)) == ("delivered", 3, 3)
    receiver.fail_first = -1
    ingest(event(rule="rate_limit"))
    failed = Delivery.objects.get(status="failed")
    assert failed.attempts == deliver_webhook.max_retries + 1
    assert failed.last_error.startswith("HTTP 500") and failed.response_status == 500
    hook.refresh_from_db()
    assert hook.failing


def test_backoff_doubles_up_to_its_cap() -> None:
    assert [services.backoff(n, base=2.0) for n in range(1, 6)] == [2, 4, 8, 16, 32]
    assert services.backoff(20, base=2.0) == 600.0


def test_a_4xx_answer_is_not_retried(world: World, receiver: WebhookReceiver) -> None:
    hook = endpoint(world.a, receiver, "json")
    hook.set_secret("not-the-receivers-secret")  # the receiver answers 400
    hook.save()
    ingest(event())
    delivery = Delivery.objects.get()
    assert (delivery.status, delivery.attempts, delivery.response_status) == ("failed", 1, 400)


def _fresh_broker_connections() -> None:
    """Drop the app's cached broker connections, so the next send uses the current URL."""
    celery_app._pool = None
    celery_app.amqp._producer_pool = None


@pytest.fixture
def celery_worker(redis: RedisServer, settings: Any) -> Iterator[subprocess.Popen[bytes]]:
    """A real Celery worker process (production settings, the test database, Redis broker)."""
    log_path = os.path.join(tempfile.mkdtemp(prefix="sqlproxy-celery-"), "worker.log")
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "controlplane.settings.runtime",
        "DATABASE_URL": database_url(connection.settings_dict),
        "REDIS_URL": redis.url,
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,
        "SQLPROXY_SECRET_KEY": settings.SQLPROXY_SECRET_KEYS[0],
        "SQLPROXY_WEBHOOK_RETRY_BASE_SECONDS": "0.4",
        "SQLPROXY_WEBHOOK_MAX_ATTEMPTS": "4",
        "PYTHONPATH": ROOT,
    }
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "controlplane", "worker", "--pool", "solo",
             "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "info"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    conf = celery_app.conf
    saved = (conf.task_always_eager, conf.broker_url)
    conf.task_always_eager, conf.broker_url = False, redis.url
    _fresh_broker_connections()
    try:
        deadline = time.monotonic() + 30
        while b"ready." not in Path(log_path).read_bytes():
            assert proc.poll() is None and time.monotonic() < deadline, Path(log_path).read_text()
            time.sleep(0.1)
        yield proc
    finally:
        conf.task_always_eager, conf.broker_url = saved
        _fresh_broker_connections()
        proc.terminate()
        proc.wait(timeout=20)


def test_a_real_worker_retries_with_backoff_and_marks_failure(
    world: World, receiver: WebhookReceiver, celery_worker: subprocess.Popen[bytes]
) -> None:
    endpoint(world.a, receiver, "slack")
    receiver.fail_first = -1  # always 500
    ingest(event())  # queued through the broker on commit
    deadline = time.monotonic() + 30
    delivery = Delivery.objects.get()
    while delivery.status != "failed":
        assert time.monotonic() < deadline, (delivery.status, delivery.attempts)
        time.sleep(0.1)
        delivery.refresh_from_db()
    assert delivery.attempts == 4 and len(receiver.received) == 4
    gaps = [b.at - a.at for a, b in zip(receiver.received, receiver.received[1:], strict=False)]
    # 0.4 s, 0.8 s, 1.6 s: exponential, never sooner than the backoff
    for gap, backoff in zip(gaps, (0.4, 0.8, 1.6), strict=True):
        assert backoff <= gap < backoff + 1.5, gaps
    assert all(r.problems == [] for r in receiver.received)


def test_the_sweep_sends_what_no_task_will(world: World, receiver: WebhookReceiver) -> None:
    """A delivery whose task never got queued (broker down at commit), or whose worker died
    mid-send, is queued again once it is overdue."""
    hook = endpoint(world.a, receiver, "slack")
    long_ago = timezone.now() - dt.timedelta(minutes=10)
    body = payloads.body_for("slack", payloads.Notice(kind="block", title="lost", tenant="A"))
    lost = Delivery.objects.create(endpoint=hook, subject="lost", body=body, next_attempt=long_ago)
    dead = Delivery.objects.create(
        endpoint=hook, subject="dead", body=body, status="sending",
        attempts=1, next_attempt=long_ago,
    )  # fmt: skip
    waiting = Delivery.objects.create(
        endpoint=hook, subject="backing off", body=b"{}",
        next_attempt=timezone.now() + dt.timedelta(minutes=5),
    )  # fmt: skip
    assert services.sweep_stalled() == 2
    lost.refresh_from_db()
    dead.refresh_from_db()
    waiting.refresh_from_db()
    assert (lost.status, dead.status, dead.attempts) == ("delivered", "delivered", 2)
    assert waiting.status == "pending" and len(receiver.received) == 2
