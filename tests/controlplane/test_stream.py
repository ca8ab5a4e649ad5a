"""``/api/v1/stream`` through Channels' WebsocketCommunicator: authentication (header token,
subprotocol token, admin session), close codes, the audit tail with filters, metrics
snapshots, and tenant isolation — alice (owner) and bob (member) see tenant A's events,
charlie (outsider) sees none of them. The fan-out is the ingest's own (``after_ingest`` after
``ingest_batch``); the channel layer is the in-memory one (the daphne tests use Redis)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from channels.db import database_sync_to_async as sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.test import Client

from controlplane.audit.services import ingest_batch
from controlplane.streams import principal
from controlplane.streams.fanout import after_ingest
from controlplane.streams.routing import websocket_application
from controlplane.tenants.models import Membership
from proxyworker.config import fleet
from proxyworker.config.events import AuditEvent as AuditEventStruct
from tests.controlplane.conftest import PASSWORD, World

pytestmark = pytest.mark.django_db(transaction=True)

Headers = list[tuple[bytes, bytes]]
_seq = iter(range(1, 10**9))


def event(database: str = "a_orders", **kw: Any) -> AuditEventStruct:
    n = next(_seq)
    fields: dict[str, Any] = {
        "id": f"t-{n}-{time.time_ns()}",
        "time": time.time(),
        "worker": "w1",
        "database": database,
        "user": "a_app",
        "client": "10.0.0.7:5000",
        "decision": "deny",
        "rule": "honeytoken_table",
        "fingerprint": "fp1",
        "normalized": "SELECT * FROM secret_keys",
        "message": "honeytoken table secret_keys",
        **kw,
    }
    return AuditEventStruct(**fields)


def _entry(doc: object) -> tuple[str, dict[bytes, bytes]]:
    return (f"{time.time_ns()}-0", {b"data": msgspec.json.encode(doc)})


def _ingest(audit: list[object] = (), beats: list[object] = ()) -> None:  # type: ignore[assignment]
    """What the ingest loop does for one batch: store (commit), then fan out."""
    a, b = [_entry(x) for x in audit], [_entry(x) for x in beats]
    ingest_batch(a, b)
    after_ingest(a, b)


ingest = sync_to_async(_ingest)


async def connect(
    path: str = "/api/v1/stream", headers: Headers = (), subprotocols: list[str] = ()
) -> WebsocketCommunicator:  # type: ignore[assignment]
    comm = WebsocketCommunicator(
        websocket_application(), path, headers=list(headers), subprotocols=list(subprotocols)
    )
    connected, subprotocol = await comm.connect()
    assert connected
    comm.subprotocol = subprotocol  # type: ignore[attr-defined]
    return comm


def bearer(token: str) -> Headers:
    return [(b"authorization", f"Bearer {token}".encode())]


async def frame(comm: WebsocketCommunicator, timeout: float = 3.0) -> dict[str, Any]:
    return json.loads(await comm.receive_from(timeout=timeout))  # type: ignore[no-any-return]


async def subscribe(comm: WebsocketCommunicator, stream: str, **filters: str) -> None:
    await comm.send_json_to({"type": "subscribe", "stream": stream, "filters": filters})
    assert await frame(comm) == {"type": "subscribed", "stream": stream, "ref": None}


async def refused(comm: WebsocketCommunicator) -> tuple[dict[str, Any], int]:
    error = await frame(comm)
    closed = await comm.receive_output(timeout=3)
    assert closed["type"] == "websocket.close"
    return error, closed["code"]


@pytest.fixture
async def sockets() -> AsyncIterator[list[WebsocketCommunicator]]:
    opened: list[WebsocketCommunicator] = []
    yield opened
    for comm in opened:
        await comm.disconnect()


async def test_it_closes_an_unauthenticated_socket_with_4401(world: World) -> None:
    comm = await connect()
    error, code = await refused(comm)
    assert code == principal.CLOSE_UNAUTHENTICATED == 4401
    assert error["type"] == "error" and error["code"] == "unauthenticated"
    assert "authentication required" in error["message"]
    comm = await connect(headers=bearer("sqlp_not-a-real-token"))
    error, code = await refused(comm)
    assert (code, error["message"]) == (4401, "invalid token")


async def test_it_closes_a_socket_asking_for_another_tenant_with_4403(world: World) -> None:
    comm = await connect("/api/v1/stream?tenant=a", headers=bearer(world.charlie.token))
    error, code = await refused(comm)
    assert code == principal.CLOSE_FORBIDDEN == 4403
    assert error["code"] == "forbidden" and "not valid for this tenant" in error["message"]


async def test_it_answers_the_subprotocol_without_echoing_the_token(world: World) -> None:
    comm = await connect(subprotocols=["sqlproxy", f"bearer.{world.bob.token}"])
    assert comm.subprotocol == "sqlproxy"  # type: ignore[attr-defined]
    await subscribe(comm, "audit")
    await comm.disconnect()


async def test_the_audit_tail_shows_each_tenant_its_own_events_only(
    world: World, sockets: list[WebsocketCommunicator]
) -> None:
    alice = await connect(headers=bearer(world.alice.token))
    bob = await connect(subprotocols=["sqlproxy", f"bearer.{world.bob.token}"])
    charlie = await connect(headers=bearer(world.charlie.token))
    sockets += [alice, bob, charlie]
    for comm in sockets:
        await subscribe(comm, "audit")
    a_event, b_event = event("a_orders"), event("b_billing", user="b_app")
    await ingest([a_event, b_event, event("nobody_owns_this")])
    for comm in (alice, bob):
        got = await frame(comm)
        assert got["type"] == "audit.event"
        assert got["event"]["event_id"] == a_event.id
        assert got["event"]["rule"] == "honeytoken_table"
        assert await comm.receive_nothing(timeout=0.3)  # not B's, not the unowned one
    got = await frame(charlie)
    assert got["event"]["event_id"] == b_event.id
    assert await charlie.receive_nothing(timeout=0.3)


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"decision": "allow"}, ["allowed"]),
        ({"rule": "rate_limit"}, ["rate"]),
        ({"user": "report_user"}, ["report"]),
        ({"table": "SECRET_KEYS"}, ["honey"]),
        ({"database": "a_orders", "decision": "deny"}, ["honey", "rate", "report"]),
        ({"database": "a_other"}, []),
    ],
)
async def test_the_audit_tail_applies_its_filters(
    world: World, filters: dict[str, str], expected: list[str]
) -> None:
    comm = await connect(headers=bearer(world.alice.token))
    await subscribe(comm, "audit", **filters)
    events = {
        "honey": event(),
        "allowed": event(decision="allow", rule=None, message=None, normalized="SELECT 1"),
        "rate": event(rule="rate_limit", normalized="SELECT $1", message="rate limit"),
        "report": event(
            user="report_user", rule="table_limit", normalized="DELETE FROM t", message=None
        ),
    }
    await ingest(list(events.values()))
    names = {e.id: name for name, e in events.items()}
    got = []
    while not await comm.receive_nothing(timeout=0.3):
        got.append(names[(await frame(comm))["event"]["event_id"]])
    assert got == expected
    await comm.disconnect()


async def test_bad_frames_get_an_error_and_the_socket_stays_open(world: World) -> None:
    comm = await connect(headers=bearer(world.alice.token))
    for bad, message in [
        ("not json", "not JSON"),
        ("[1]", "JSON object"),
        ('{"type": "dance"}', "'type' must be"),
        ('{"type": "subscribe", "stream": "secrets"}', "'stream' must be"),
        ('{"type": "subscribe", "stream": "audit", "filters": {"tenant": "b"}}', "unknown"),
        ('{"type": "subscribe", "stream": "audit", "filters": {"decision": "x"}}', "decision"),
        ('{"type": "query.cancel", "id": "q9"}', "no such query"),
    ]:
        await comm.send_to(text_data=bad)
        got = await frame(comm)
        assert got["type"] == "error" and message in got["message"], (bad, got)
    await subscribe(comm, "audit")
    await comm.disconnect()


async def test_a_removed_member_is_cut_off(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(principal, "REFRESH_SECONDS", 0.0)
    bob = await connect(headers=bearer(world.bob.token))
    await subscribe(bob, "audit")
    await ingest([event()])
    assert (await frame(bob))["type"] == "audit.event"
    await sync_to_async(Membership.objects.filter(user=world.bob.user).delete)()
    await ingest([event()])
    error, code = await refused(bob)
    assert code == 4403 and error["message"] == "access revoked"


def _session_cookie(user: User) -> bytes:
    client = Client()
    assert client.login(username=user.username, password=PASSWORD)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


async def test_an_admin_session_works_from_its_own_origin_only(world: World) -> None:
    cookie = await sync_to_async(_session_cookie)(world.alice.user)
    comm = await connect(headers=[(b"cookie", cookie), (b"origin", b"http://evil.example")])
    error, code = await refused(comm)
    assert code == 4403 and "foreign origin" in error["message"]
    comm = await connect(headers=[(b"cookie", cookie), (b"origin", b"http://localhost:8000")])
    await subscribe(comm, "audit")
    a_event = event()
    await ingest([event("b_billing"), a_event])
    assert (await frame(comm))["event"]["event_id"] == a_event.id
    await comm.disconnect()


STARTED = time.time() - 500


def beat(worker: str, at: float, queries: int, denied: int, version: int | None = 7) -> Any:
    return fleet.Heartbeat(
        worker=worker,
        time=at,
        config_version=version,
        started=STARTED,
        connections=3,
        queries=queries,
        denied=denied,
        alerted=0,
        latency_p50_ms=0.5,
        latency_p99_ms=4.0,
    )


async def next_snapshot(comm: WebsocketCommunicator) -> dict[str, Any]:
    while True:
        got = await frame(comm, timeout=5)
        if got["type"] == "metrics.snapshot":
            return got


async def test_metrics_snapshots_come_every_second_from_heartbeats(world: World) -> None:
    root = await sync_to_async(User.objects.create_superuser)("root", "r@example.com", PASSWORD)
    cookie = await sync_to_async(_session_cookie)(root)
    now = time.time()
    await ingest(beats=[beat("w1", now - 1, 100, 5)])
    admin = await connect(headers=[(b"cookie", cookie), (b"origin", b"http://127.0.0.1")])
    alice = await connect(headers=bearer(world.alice.token))
    charlie = await connect(headers=bearer(world.charlie.token))
    for comm in (admin, alice, charlie):
        await subscribe(comm, "metrics")
    await ingest([event()], beats=[beat("w1", now, 300, 9), beat("w2", now, 10, 0, None)])
    started = time.monotonic()
    snap = await next_snapshot(admin)
    assert time.monotonic() - started < 1.5
    w1, w2 = snap["workers"]
    assert (w1["worker"], w1["config_version"], w1["alive"]) == ("w1", 7, True)
    assert w1["qps"] == pytest.approx(200.0, rel=0.01)
    assert w1["blocks_per_s"] == pytest.approx(4.0, rel=0.01)
    assert (w1["p50_ms"], w1["p99_ms"], w1["connections"]) == (0.5, 4.0, 3)
    assert w2["config_version"] is None and w2["current"] is False
    assert snap["fleet"]["qps"] == pytest.approx(200.0, rel=0.01)
    assert snap["fleet"]["connections"] == 6
    # tenants see the workers' status, not the traffic of every tenant
    for comm, blocked in ((alice, 1), (charlie, 0)):
        snap = await next_snapshot(comm)
        assert snap["fleet"] is None
        assert [w["worker"] for w in snap["workers"]] == ["w1", "w2"]
        assert snap["workers"][0]["qps"] is None and snap["workers"][0]["config_version"] == 7
        while snap["tenant"]["blocked"] != blocked:  # the event may land in the next tick
            snap = await next_snapshot(comm)
            assert blocked
    for comm in (admin, alice, charlie):
        await comm.disconnect()
