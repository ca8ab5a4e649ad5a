"""``/api/v1/stream`` for real: daphne serving the control plane, ``manage.py ingest`` fanning
out through channels-redis, a worker fed by the control plane, and a real WebSocket client
(``websockets``). A statement blocked by the worker reaches alice's and bob's sockets and not
charlie's; the metrics stream reports the worker and its config version; a query runs through
the worker (its policy applies) with backpressure and cancellation."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
import websockets
from channels.db import database_sync_to_async as sync_to_async
from django.conf import settings as django_settings
from websockets.asyncio.client import ClientConnection

from controlplane.fleet.models import ConfigState
from tests.controlplane.conftest import World
from tests.controlplane.e2e import (
    APP_PASSWORD,
    Stack,
    make_tenant_a_real,
    running_stack,
    wait_for_enforcement,
)
from tests.support.pgcluster import PgCluster
from tests.support.redisserver import RedisServer

pytestmark = pytest.mark.django_db(transaction=True)
WORKER = "w-stream"


@pytest.fixture(scope="module")
def stack(django_db_setup: None, upstream: PgCluster, redis_server: RedisServer) -> Iterator[Stack]:
    if redis_server.process is None:
        redis_server.start()
    with running_stack(upstream, redis_server, WORKER) as running:
        yield running


@pytest.fixture
def live(stack: Stack, world: World, upstream: PgCluster, settings: Any) -> Stack:
    """Tenant A real and enforced (Redis not flushed: the control plane numbers its snapshot
    above what the worker already enforces)."""
    settings.REDIS_URL = stack.redis.url
    make_tenant_a_real(world, upstream)
    try:
        wait_for_enforcement(stack)
    except AssertionError:
        raise AssertionError(stack.control_plane.logs()) from None
    return stack


@pytest.fixture
async def opened() -> AsyncIterator[list[ClientConnection]]:
    sockets: list[ClientConnection] = []
    yield sockets
    for ws in sockets:
        await ws.close()


async def connect(stack: Stack, opened: list[ClientConnection], **kw: Any) -> ClientConnection:
    ws = await websockets.connect(stack.control_plane.ws_url, open_timeout=10, **kw)
    opened.append(ws)
    return ws


async def recv(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))  # type: ignore[no-any-return]


async def send(ws: ClientConnection, frame: dict[str, Any]) -> None:
    await ws.send(json.dumps(frame))


async def until(ws: ClientConnection, kind: str, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        got = await recv(ws, max(deadline - time.monotonic(), 0.01))
        if got["type"] == kind:
            return got


async def audit_events(
    ws: ClientConnection, marker: str, seconds: float, first: bool = False
) -> list[dict[str, Any]]:
    """The audit events whose statement mentions ``marker`` that arrive within ``seconds``
    (or the first one, with ``first``)."""
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0 and not (first and found):
        try:
            got = await recv(ws, left)
        except TimeoutError:
            break
        if got["type"] == "audit.event" and marker in got["event"]["normalized"]:
            found.append(got["event"])
    return found


def blocked_statement(stack: Stack, marker: str) -> float:
    """Send a statement the worker refuses (honeytoken table); returns when it was refused."""
    with (
        psycopg.connect(stack.dsn(), autocommit=True) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute(f"SELECT k AS {marker} FROM secret_keys")
    return time.monotonic()


async def test_it_refuses_bad_credentials_with_close_codes(
    live: Stack, world: World, opened: list[ClientConnection]
) -> None:
    ws = await connect(live, opened)
    error = await recv(ws)
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await ws.recv()
    assert error["code"] == "unauthenticated" and closed.value.rcvd.code == 4401
    ws = await connect(
        live, opened, additional_headers={"Authorization": f"Bearer {world.charlie.token}"}
    )
    ws_other = await websockets.connect(
        live.control_plane.ws_url + "?tenant=a",
        additional_headers={"Authorization": f"Bearer {world.charlie.token}"},
    )
    opened.append(ws_other)
    assert (await recv(ws_other))["code"] == "forbidden"
    with pytest.raises(websockets.ConnectionClosed) as closed:
        await ws_other.recv()
    assert closed.value.rcvd.code == 4403


async def test_a_blocked_statement_reaches_its_tenant_live(
    live: Stack, world: World, opened: list[ClientConnection]
) -> None:
    alice = await connect(
        live, opened, additional_headers={"Authorization": f"Bearer {world.alice.token}"}
    )
    bob = await connect(live, opened, subprotocols=["sqlproxy", f"bearer.{world.bob.token}"])
    assert bob.subprotocol == "sqlproxy"
    charlie = await connect(
        live, opened, additional_headers={"Authorization": f"Bearer {world.charlie.token}"}
    )
    for ws in (alice, bob, charlie):
        await send(ws, {"type": "subscribe", "stream": "audit", "filters": {"decision": "deny"}})
        assert (await recv(ws))["type"] == "subscribed"
    refused_at = await sync_to_async(blocked_statement)(live, "live_marker")
    (event,) = await audit_events(alice, "live_marker", 5.0, first=True)
    latency = time.monotonic() - refused_at
    assert latency < 2.0, f"took {latency:.2f}s"
    assert (event["database"], event["user"], event["decision"]) == ("a_orders", "a_app", "deny")
    assert event["rule"] == "honeytoken_table" and event["worker"] == WORKER
    assert [e["event_id"] for e in await audit_events(bob, "live_marker", 1.0)] == [
        event["event_id"]
    ]
    assert await audit_events(charlie, "live_marker", 1.0) == []


async def test_an_idle_socket_stays_open_and_live(
    live: Stack, world: World, opened: list[ClientConnection]
) -> None:
    """The channel layer waits for group messages with a 5 s blocking pop: a Redis read
    timeout at or below that killed every socket idle for 5 s (daphne closed it with 1011)."""
    alice = await connect(
        live, opened, additional_headers={"Authorization": f"Bearer {world.alice.token}"}
    )
    await send(alice, {"type": "subscribe", "stream": "audit", "filters": {"decision": "deny"}})
    assert (await recv(alice))["type"] == "subscribed"
    deadline = time.monotonic() + 30
    while True:  # until nothing has come for longer than one blocking pop
        try:
            early = await recv(alice, timeout=7.0)
        except TimeoutError:
            break
        assert early["type"] == "audit.event", early  # (the fixture's own denials)
        assert time.monotonic() < deadline, "never idle"
    await sync_to_async(blocked_statement)(live, "idle_marker")
    (event,) = await audit_events(alice, "idle_marker", 5.0, first=True)
    assert event["rule"] == "honeytoken_table"


async def test_metrics_report_the_worker_and_its_version(
    live: Stack, world: World, opened: list[ClientConnection]
) -> None:
    alice = await connect(
        live, opened, additional_headers={"Authorization": f"Bearer {world.alice.token}"}
    )
    await send(alice, {"type": "subscribe", "stream": "metrics"})
    assert (await recv(alice))["type"] == "subscribed"
    version = await sync_to_async(lambda: ConfigState.objects.get().published_version)()
    deadline = time.monotonic() + 10
    while True:
        snap = await until(alice, "metrics.snapshot")
        workers = {w["worker"]: w for w in snap["workers"]}
        if WORKER in workers and workers[WORKER]["config_version"] == version:
            break
        assert time.monotonic() < deadline, snap
    assert workers[WORKER]["alive"] and workers[WORKER]["current"]
    assert snap["published_version"] == version and snap["fleet"] is None


async def rows_of(ws: ClientConnection, query: str, ack: bool = True) -> dict[str, Any]:
    batches: list[int] = []
    total = 0
    while True:
        got = await recv(ws)
        assert got.get("id") == query, got
        if got["type"] == "query.rows":
            batches.append(got["batch"])
            total += len(got["rows"])
            if ack:
                await send(ws, {"type": "query.ack", "id": query, "batch": got["batch"]})
        elif got["type"] == "query.done":
            return {**got, "batches": batches, "received": total}


async def test_a_query_runs_through_the_worker_with_backpressure(
    live: Stack, world: World, opened: list[ClientConnection]
) -> None:
    alice = await connect(
        live, opened, additional_headers={"Authorization": f"Bearer {world.alice.token}"}
    )
    start = {
        "type": "query.start",
        "database": "a_orders",
        "user": "a_app",
        "password": APP_PASSWORD,
    }
    await send(
        alice,
        {**start, "id": "q1", "sql": "SELECT g, g::text AS t FROM generate_series(1, 5000) g",
         "batch_size": 1000, "window": 2},
    )  # fmt: skip
    columns = await recv(alice)
    assert columns == {
        "type": "query.columns",
        "id": "q1",
        "columns": [{"name": "g", "type": "int4"}, {"name": "t", "type": "text"}],
    }
    first, second = await recv(alice), await recv(alice)
    assert (first["batch"], second["batch"]) == (1, 2) and first["rows"][0] == [1, "1"]
    with pytest.raises(TimeoutError):  # two batches ahead of the acks: it waits
        await recv(alice, timeout=0.7)
    await send(alice, {"type": "query.ack", "id": "q1", "batch": 2})
    done = await rows_of(alice, "q1")
    assert done["batches"] == [3, 4, 5] and done["status"] == "ok"
    assert done["rows"] == 5000 and done["command_tag"] == "SELECT 5000"

    # the worker's policy applies to stream queries too
    await send(alice, {**start, "id": "q2", "sql": "SELECT * FROM secret_keys"})
    done = await rows_of(alice, "q2")
    assert (done["status"], done["sqlstate"]) == ("error", "42501")
    assert "honeytoken" in done["message"]

    # cancellation: while paused by backpressure, and while the server works
    await send(
        alice,
        {**start, "id": "q3", "sql": "SELECT g FROM generate_series(1, 10000000) g",
         "batch_size": 100, "window": 1},
    )  # fmt: skip
    assert (await recv(alice))["type"] == "query.columns"
    assert (await recv(alice))["batch"] == 1
    await send(alice, {"type": "query.cancel", "id": "q3"})
    done = await rows_of(alice, "q3", ack=False)
    assert done["status"] == "cancelled" and done["batches"] == []
    await send(
        alice,
        {**start, "id": "q4", "sql": "SELECT count(*) FROM generate_series(1, 3000000000) g"},
    )
    await asyncio.sleep(0.5)
    await send(alice, {"type": "query.cancel", "id": "q4"})
    done = await rows_of(alice, "q4")
    assert (done["status"], done["sqlstate"]) == ("cancelled", "57014")


async def test_an_outsider_cannot_query_through_another_tenants_database(
    live: Stack, world: World, opened: list[ClientConnection]
) -> None:
    charlie = await connect(
        live, opened, additional_headers={"Authorization": f"Bearer {world.charlie.token}"}
    )
    await send(
        charlie,
        {"type": "query.start", "id": "x", "database": "a_orders", "user": "a_app",
         "password": APP_PASSWORD, "sql": "SELECT 1"},
    )  # fmt: skip
    got = await recv(charlie)
    assert got["type"] == "error" and got["code"] == "forbidden" and got["ref"] == "x"
    assert django_settings.SQLPROXY_STREAM_WORKER  # configured, but never reached for charlie
