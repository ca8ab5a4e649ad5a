"""The audit stream writer against a real redis-server: straight to the stream while Redis
answers, to the spool while it does not, and the spool replayed in order once it is back;
the spools of worker ids no longer running replayed and removed."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest

from proxyworker import fleet as worker_fleet
from proxyworker.audit.spool import Spool
from proxyworker.audit.stream import AuditStream, replay_orphans
from proxyworker.config import fleet
from proxyworker.tasks import spawn
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


def leave_spool(path: Path, start: int, count: int) -> list[str]:
    """A spool as a stopped worker leaves it; the ids of its events, in order."""
    spool = Spool(str(path), 1 << 20)
    spool.append(events(start, count))
    spool.close()
    return [f"e-{i}" for i in range(start, start + count)]


async def test_it_replays_the_spools_of_worker_ids_no_longer_running(
    server: RedisServer, tmp_path: Path
) -> None:
    orphans = {
        "w": leave_spool(tmp_path / "audit-spool.w.jsonl", 0, 1500),
        "w-2": leave_spool(tmp_path / "audit-spool.w-2.jsonl", 2000, 40),
        "w-3": leave_spool(tmp_path / "audit-spool.w-3.jsonl", 3000, 0),  # empty: removed too
    }
    leave_spool(tmp_path / "audit-spool.w-0.jsonl", 4000, 10)
    leave_spool(tmp_path / "audit-spool.w-1.jsonl", 5000, 10)
    current = (tmp_path / "audit-spool.w-0.jsonl").read_bytes()
    others = ["audit-spool.w-4.jsonl.tmp", "audit-spool.jsonl", "snapshot.json"]
    for name in others:
        (tmp_path / name).write_bytes(b"".join(events(6000, 5)))

    client = worker_fleet.connect(server.url)
    await replay_orphans(client, str(tmp_path), ["w-0", "w-1"])
    ids = stream_ids(server)
    assert sorted(ids) == sorted(i for spooled in orphans.values() for i in spooled)
    for spooled in orphans.values():
        assert [i for i in ids if i in set(spooled)] == spooled  # each in its order
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["audit-spool.w-0.jsonl", "audit-spool.w-1.jsonl", *others]
    )
    assert (tmp_path / "audit-spool.w-0.jsonl").read_bytes() == current  # not replayed here
    await client.aclose()


async def test_it_waits_for_redis_to_replay_an_orphan(server: RedisServer, tmp_path: Path) -> None:
    spooled = leave_spool(tmp_path / "audit-spool.gone.jsonl", 0, 20)
    server.stop()
    client = worker_fleet.connect(server.url)
    replay = spawn(replay_orphans(client, str(tmp_path), ["here"]), name="orphan spools")
    await asyncio.sleep(0.3)
    assert not replay.done()
    server.start()
    await asyncio.wait_for(replay, 10)
    assert stream_ids(server) == spooled
    assert not (tmp_path / "audit-spool.gone.jsonl").exists()
    await client.aclose()


async def test_it_leaves_alone_an_orphan_another_process_holds(
    server: RedisServer, tmp_path: Path
) -> None:
    path = tmp_path / "audit-spool.elsewhere.jsonl"
    spooled = leave_spool(path, 0, 20)
    holder = Spool(str(path), 1 << 20)  # as the live worker of another fleet would
    client = worker_fleet.connect(server.url)
    await replay_orphans(client, str(tmp_path), ["here"])
    assert stream_ids(server) == []
    assert path.exists() and holder.pending > 0
    holder.close()
    await replay_orphans(client, str(tmp_path), ["here"])  # the next start adopts it
    assert stream_ids(server) == spooled
    assert not path.exists()
    await client.aclose()


async def test_an_orphan_not_replayed_by_shutdown_stays_for_the_next_start(
    server: RedisServer, tmp_path: Path
) -> None:
    path = tmp_path / "audit-spool.gone.jsonl"
    spooled = leave_spool(path, 0, 20)
    server.stop()
    client = worker_fleet.connect(server.url)
    replay = spawn(replay_orphans(client, str(tmp_path), ["here"]), name="orphan spools")
    await asyncio.sleep(0.3)
    replay.cancel()
    await asyncio.gather(replay, return_exceptions=True)
    await client.aclose()
    left = Spool(str(path), 1 << 20)  # closed, so unlocked, and whole
    assert left.read()[0] == events(0, 20)
    left.close()
    server.start()
    client = worker_fleet.connect(server.url)
    await replay_orphans(client, str(tmp_path), ["here"])
    assert stream_ids(server) == spooled
    await client.aclose()
