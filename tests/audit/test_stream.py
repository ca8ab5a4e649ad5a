"""The audit stream writer against a real redis-server: straight to the stream while Redis
answers, to the spool while it does not, and the spool replayed in order once it is back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest

from proxyworker import fleet as worker_fleet
from proxyworker.audit.spool import Spool
from proxyworker.audit.stream import AuditStream
from proxyworker.config import fleet
from tests.support.redisserver import RedisServer, start_redis


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = start_redis()
    yield server
    server.destroy()


@pytest.fixture
def server(redis_server: RedisServer) -> RedisServer:
    redis_server.start()
    with redis_server.client() as client:
        client.flushall()
    return redis_server


def events(start: int, count: int) -> list[bytes]:
    return [msgspec.json.encode({"id": f"e-{i}"}) + b"\n" for i in range(start, start + count)]


def stream_ids(server: RedisServer) -> list[str]:
    with server.client() as client:
        entries = client.xrange(fleet.AUDIT_STREAM)
    return [msgspec.json.decode(data[fleet.STREAM_FIELD.encode()])["id"] for _, data in entries]


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.02)


async def test_it_spools_while_redis_is_away_and_replays_in_order(
    server: RedisServer, tmp_path: Path
) -> None:
    client = worker_fleet.connect(server.url)
    spool = Spool(str(tmp_path / "spool.jsonl"), 1 << 20)
    stream = AuditStream(client, spool)
    await stream.write(events(0, 100))
    assert stream_ids(server) == [f"e-{i}" for i in range(100)]

    server.stop(save=True)
    await stream.write(events(100, 50))
    await stream.write(events(150, 50))
    assert stream.spooling and spool.pending > 0
    server.start()
    await wait_for(lambda: not stream.spooling)
    await stream.write(events(200, 10))  # straight to Redis again, after the replay
    assert stream_ids(server) == [f"e-{i}" for i in range(210)]
    assert spool.pending == 0
    await client.aclose()


async def test_it_replays_a_spool_left_by_an_earlier_run(
    server: RedisServer, tmp_path: Path
) -> None:
    path = str(tmp_path / "spool.jsonl")
    left = Spool(path, 1 << 20)
    left.append(events(0, 30))
    left.close()
    client = worker_fleet.connect(server.url)
    stream = AuditStream(client, Spool(path, 1 << 20))
    stream.start()
    await stream.write(events(30, 5))  # waits behind the old spool
    await wait_for(lambda: not stream.spooling)
    assert stream_ids(server) == [f"e-{i}" for i in range(35)]
    await client.aclose()
