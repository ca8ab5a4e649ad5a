"""Events up: audit events and heartbeats from real Redis Streams into PostgreSQL."""

from __future__ import annotations

import time

import msgspec
import psycopg
import pytest
import redis as redis_lib
from django.conf import settings
from django.db import OperationalError, connection

from controlplane.audit.ingest import GROUP, StreamIngestor
from controlplane.audit.models import AuditEvent
from controlplane.audit.services import ingest_batch
from controlplane.fleet.models import Heartbeat, Worker
from proxyworker.config import fleet
from proxyworker.config.events import AuditEvent as AuditEventStruct
from tests.controlplane.conftest import World
from tests.support.redisserver import RedisServer

pytestmark = pytest.mark.django_db


def event(n: int, database: str = "a_orders", **kw: object) -> AuditEventStruct:
    fields: dict[str, object] = {
        "id": f"w1-{n}",
        "time": time.time() - 60 + n,
        "worker": "w1",
        "database": database,
        "user": "a_app",
        "client": "10.0.0.1:5555",
        "decision": "allow",
        "fingerprint": f"fp{n % 3}",
        "normalized": "SELECT $1",
        **kw,
    }
    return AuditEventStruct(**fields)  # type: ignore[arg-type]


def beat(worker: str, at: float, version: int | None = 3) -> fleet.Heartbeat:
    return fleet.Heartbeat(
        worker=worker,
        time=at,
        config_version=version,
        started=at - 100,
        connections=2,
        queries=10,
        denied=1,
        alerted=0,
        latency_p50_ms=0.4,
    )


def entry(n: int, doc: object) -> tuple[str, dict[bytes, bytes]]:
    return (f"{1000 + n}-0", {b"data": msgspec.json.encode(doc)})


def xadd(client: redis_lib.Redis, stream: str, doc: object) -> None:
    client.xadd(stream, {fleet.STREAM_FIELD: msgspec.json.encode(doc)})


def pending(client: redis_lib.Redis, stream: str = fleet.AUDIT_STREAM) -> int:
    return int(client.xpending(stream, GROUP)["pending"])


def test_it_ingests_idempotently_and_maps_tenants(world: World) -> None:
    entries = [entry(n, event(n)) for n in range(5)]
    entries.append(entry(9, event(9, database="nobody_owns_this")))
    first = ingest_batch(entries)
    assert (first.stored, first.duplicates, first.rejected) == (6, 0, 0)
    again = ingest_batch([*entries, entry(10, event(0))])  # redelivered + a duplicate id
    assert (again.stored, again.duplicates) == (0, 7)
    assert AuditEvent.objects.count() == 6
    assert AuditEvent.objects.filter(tenant=world.a).count() == 5
    assert AuditEvent.objects.get(event_id="w1-9").tenant is None
    assert len(again.audit_ids) == 7  # all of them may be acknowledged


def test_it_rejects_poison_entries_and_keeps_the_rest(world: World) -> None:
    entries = [
        ("1-0", {b"data": b"{not json"}),
        ("2-0", {b"other": b"{}"}),
        entry(3, {"id": "x", "time": "yesterday"}),
        entry(4, event(4, id="z" * 500)),
        entry(5, event(5, normalized="SELECT '\x00'")),
    ]
    result = ingest_batch(entries)
    assert (result.stored, result.rejected) == (1, 4)
    assert result.audit_ids == ["1-0", "2-0", "1003-0", "1004-0", "1005-0"]
    assert AuditEvent.objects.get().normalized == "SELECT '\ufffd'"


def test_it_updates_workers_from_heartbeats(world: World, settings: object) -> None:
    now = time.time()
    ingest_batch(
        heartbeats=[
            entry(1, beat("w1", now - 10)),
            entry(2, beat("w1", now, 4)),
            entry(3, beat("w2", now, None)),
        ]
    )
    ingest_batch(heartbeats=[entry(4, beat("w1", now - 5, 2))])  # late: history only
    w1 = Worker.objects.get(worker_id="w1")
    assert w1.config_version == 4 and w1.connections == 2 and w1.latency_p50_ms == 0.4
    assert Worker.objects.get(worker_id="w2").config_version is None
    assert Heartbeat.objects.filter(worker=w1).count() == 3
    settings.SQLPROXY_HEARTBEAT_HISTORY = 2  # type: ignore[attr-defined]
    ingest_batch(heartbeats=[entry(5, beat("w1", now + 1))])
    assert Heartbeat.objects.filter(worker=w1).count() == 2


def test_it_reads_the_streams_and_acks_what_it_stored(world: World, redis: RedisServer) -> None:
    client = redis.client()
    for n in range(3):
        xadd(client, fleet.AUDIT_STREAM, event(n))
    xadd(client, fleet.HEARTBEAT_STREAM, beat("w9", time.time()))
    ingestor = StreamIngestor(client, "c1", block_ms=100)
    result = ingestor.run_once()
    assert result.stored == 3 and len(result.heartbeat_ids) == 1
    assert pending(client) == 0 and pending(client, fleet.HEARTBEAT_STREAM) == 0
    assert AuditEvent.objects.count() == 3 and Worker.objects.filter(worker_id="w9").exists()
    assert ingestor.run_once().stored == 0


def test_it_claims_entries_of_a_dead_consumer(world: World, redis: RedisServer) -> None:
    client = redis.client()
    StreamIngestor(client, "dead").ensure_groups()
    for n in range(4):
        xadd(client, fleet.AUDIT_STREAM, event(n))
    # "dead" read them and died before storing
    client.xreadgroup(GROUP, "dead", {fleet.AUDIT_STREAM: ">"}, count=10)
    assert pending(client) == 4
    alive = StreamIngestor(client, "alive", block_ms=100, claim_idle=0.0)
    alive._own_pending_done = True
    result = alive.run_once()
    assert result.stored == 4 and pending(client) == 0


@pytest.mark.django_db(transaction=True)
def test_it_acks_only_after_the_commit(world: World, redis: RedisServer) -> None:
    client = redis.client()
    for n in range(3):
        xadd(client, fleet.AUDIT_STREAM, event(n))
    ingestor = StreamIngestor(client, "c1", block_ms=100)
    db = settings.DATABASES["default"]
    with connection.cursor() as cursor:
        cursor.execute("SET lock_timeout = '300ms'")
    blocker = psycopg.connect(
        host=db["HOST"], port=db["PORT"], user=db["USER"], dbname=connection.settings_dict["NAME"]
    )
    try:
        blocker.execute("LOCK TABLE audit_auditevent IN ACCESS EXCLUSIVE MODE")
        with pytest.raises(OperationalError):
            ingestor.run_once()  # the database "is down": nothing stored, nothing acked
        assert pending(client) == 3
    finally:
        blocker.rollback()
        blocker.close()
    result = ingestor.run_once()  # its own pending entries, read again
    assert result.stored == 3 and pending(client) == 0
    assert AuditEvent.objects.count() == 3


def test_it_survives_a_redis_restart(world: World, redis: RedisServer) -> None:
    client = redis.client()
    ingestor = StreamIngestor(client, "c1", block_ms=100)
    ingestor.run_once()
    redis.stop()
    with pytest.raises(redis_lib.ConnectionError):
        ingestor.run_once()
    redis.start()  # empty: no persistence, the group is gone
    xadd(client, fleet.AUDIT_STREAM, event(1))
    with pytest.raises(redis_lib.ResponseError, match="NOGROUP"):
        ingestor.run_once()
    # the loop retries; the next round recreates the group from the stream's start
    assert ingestor.run_once().stored == 1


def test_it_keeps_the_rows_changed_per_table(world: World) -> None:
    doc = {**msgspec.to_builtins(event(1)), "rows": {"public.users": 3, "": 1}}
    ingest_batch([entry(1, doc)])
    assert AuditEvent.objects.get().rows == {"public.users": 3, "": 1}
