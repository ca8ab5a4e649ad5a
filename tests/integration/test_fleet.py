"""Workers fed by the control plane, through a private redis-server: no snapshot means no
traffic; a publication is enforced in well under a second (a transaction in flight finishing
under the policy it started with); a restart while Redis is down uses the snapshot saved on
disk; an invalid snapshot changes nothing; audit events survive a Redis outage, and the
spools of worker ids no longer running are replayed; a second worker on the same state
directory and id refuses to run; heartbeats say which version each worker enforces.

Snapshots are written here the way the control plane writes them: SET the key, PUBLISH the
version (``proxyworker.config.fleet``)."""

from __future__ import annotations

import functools
import json
import os
import struct
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import msgspec
import psycopg
import pytest
from psycopg import errors

from proxyworker.__main__ import EXIT_STATE_DIR_IN_USE
from proxyworker.config import fleet, loads
from proxyworker.config.events import AuditEvent
from proxyworker.fleet import cancel_elsewhere, connect
from proxyworker.protocol.messages import cancel_request
from proxyworker.server import FLEET_CANCELS_PER_SECOND, Worker
from tests.support.net import free_port
from tests.support.pgcluster import PgCluster, wait_until
from tests.support.rawpg import RawConnection, fields
from tests.support.redisserver import RedisServer, start_redis
from tests.support.worker import (
    APP_PASSWORD,
    APP_USER,
    WorkerProcess,
    exit_of_sigterm_on_listening,
    launch_fleet,
)

DB = "sqlproxy_fleet"
SCHEMA = """
DROP TABLE IF EXISTS vault_a, vault_b, accounts;
CREATE TABLE vault_a (k text);
CREATE TABLE vault_b (k text);
INSERT INTO vault_a VALUES ('a');
INSERT INTO vault_b VALUES ('b');
CREATE TABLE accounts (id int PRIMARY KEY, v int);
INSERT INTO accounts SELECT g, 0 FROM generate_series(1, 20) g;
"""

OPEN = '[honeytokens]\ntables = ["vault_a"]'
"""Version 1 of the policy: vault_b may be read."""
CLOSED = '[honeytokens]\ntables = ["vault_a", "vault_b"]'
"""Version 2: it may not."""


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = start_redis()
    yield server
    server.destroy()


@pytest.fixture(scope="module")
def fleet_db(upstream: PgCluster) -> str:
    with upstream.connect("postgres") as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB}")
        conn.execute(f"CREATE DATABASE {DB}")
    with upstream.connect(DB) as conn:
        conn.execute(SCHEMA)
    return DB


@pytest.fixture
def redis(redis_server: RedisServer) -> RedisServer:
    """The module's Redis, running and empty."""
    redis_server.start()
    with redis_server.client() as client:
        client.flushall()
    return redis_server


@pytest.fixture
def started() -> Iterator[list[WorkerProcess]]:
    """Workers a test starts; stopped (and their log shown on failure) afterwards."""
    procs: list[WorkerProcess] = []
    yield procs
    for proc in procs:
        proc.stop()


def config_toml(upstream: PgCluster, policy: str) -> str:
    url = upstream.url("postgres", db=DB)
    return f"""
[[users]]
name = "{APP_USER}"
password = "{APP_PASSWORD}"

[[databases]]
name = "fleet"
upstream = "{url}"

[[databases]]
name = "fleet_tx"
upstream = "{url}"
pool_mode = "transaction"

[audit]
sample_allowed = 1.0

{policy}
"""


def publish(redis: RedisServer, version: int, toml: str) -> float:
    """Store and announce a snapshot as the control plane does; returns the time of PUBLISH."""
    snapshot = fleet.ConfigSnapshot(version=version, created=time.time(), config=loads(toml))
    with redis.client() as client:
        client.set(fleet.SNAPSHOT_KEY, fleet.encode_snapshot(snapshot))
        published = time.monotonic()
        client.publish(fleet.VERSION_CHANNEL, str(version))
    return published


def publish_raw(redis: RedisServer, version: int, data: bytes) -> None:
    with redis.client() as client:
        client.set(fleet.SNAPSHOT_KEY, data)
        client.publish(fleet.VERSION_CHANNEL, str(version))


def reads_vault_b(conn: psycopg.Connection[tuple[object, ...]]) -> bool:
    """True if the policy in force lets ``conn`` read vault_b, False if it is refused."""
    try:
        conn.execute("SELECT k FROM vault_b").fetchall()
        return True
    except errors.InsufficientPrivilege:
        if not conn.autocommit:
            conn.rollback()
        return False


def can_read_vault_b(proc: WorkerProcess, db: str = "fleet") -> bool:
    with psycopg.connect(proc.dsn(db), autocommit=True) as conn:
        return reads_vault_b(conn)


def metric(proc: WorkerProcess, name: str) -> float | None:
    status, text = proc.http("/metrics")
    assert status == 200
    for line in text.splitlines():
        if line.split(" ")[0] == name:  # the name with its labels, if any
            return float(line.split()[-1])
    return None


def heartbeats(redis: RedisServer, worker: str) -> list[fleet.Heartbeat]:
    with redis.client() as client:
        entries = client.xrange(fleet.HEARTBEAT_STREAM)
    beats = [
        msgspec.json.decode(data[fleet.STREAM_FIELD.encode()], type=fleet.Heartbeat)
        for _, data in entries
    ]
    return [b for b in beats if b.worker == worker]


def audit_ids(redis: RedisServer) -> list[str]:
    """The ids of the audit events in the stream, in stream order."""
    with redis.client() as client:
        entries = client.xrange(fleet.AUDIT_STREAM)
    return [msgspec.json.decode(d[fleet.STREAM_FIELD.encode()])["id"] for _, d in entries]


def saved_version(state_dir: Path) -> int | None:
    try:
        return int(json.loads((state_dir / "snapshot.json").read_bytes())["version"])
    except FileNotFoundError:
        return None


# --- no configuration: fail closed -----------------------------------------------------------


async def test_it_refuses_clients_until_a_snapshot_arrives(
    redis: RedisServer,
    upstream: PgCluster,
    fleet_db: str,
    tmp_path: Path,
    started: list[WorkerProcess],
) -> None:
    proc = launch_fleet(redis.url, str(tmp_path))
    started.append(proc)
    with pytest.raises(psycopg.OperationalError, match="sqlproxy: no configuration yet"):
        psycopg.connect(proc.dsn("fleet"))
    with pytest.raises(asyncpg.CannotConnectNowError):  # SQLSTATE 57P03
        await asyncpg.connect(
            host="127.0.0.1", port=proc.port, user=APP_USER, password=APP_PASSWORD,
            database="fleet", ssl=False,
        )  # fmt: skip
    status, body = proc.http("/readyz")
    assert status == 503
    assert "no configuration yet" in json.loads(body)["databases"]["configuration"]

    publish(redis, 1, config_toml(upstream, OPEN))
    wait_until(lambda: proc.http("/readyz")[0] == 200, timeout=5)
    with psycopg.connect(proc.dsn("fleet")) as conn:
        assert conn.execute("SELECT count(*) FROM accounts").fetchone() == (20,)
    assert metric(proc, "sqlproxy_config_version") == 1
    wait_until(lambda: saved_version(tmp_path) == 1, timeout=5)
    assert proc.stop() == 0


# --- swaps ---------------------------------------------------------------------------------


@pytest.mark.parametrize("db", ["fleet", "fleet_tx"], ids=["session", "transaction"])
def test_a_publication_is_enforced_in_under_a_second(
    redis: RedisServer,
    upstream: PgCluster,
    fleet_db: str,
    tmp_path: Path,
    started: list[WorkerProcess],
    db: str,
) -> None:
    publish(redis, 1, config_toml(upstream, OPEN))
    proc = launch_fleet(redis.url, str(tmp_path))
    started.append(proc)
    with psycopg.connect(proc.dsn(db), autocommit=True) as conn:
        assert reads_vault_b(conn)
        published = publish(redis, 2, config_toml(upstream, CLOSED))
        # The open session picks the new policy up at its next statement.
        while reads_vault_b(conn):
            assert time.monotonic() - published < 5, "version 2 was never enforced"
            time.sleep(0.005)
        elapsed = time.monotonic() - published
    assert elapsed < 1.0, f"enforced {elapsed:.3f}s after PUBLISH"
    assert not can_read_vault_b(proc, db)  # and new sessions, of course
    swapped = [json.loads(line) for line in proc.log().splitlines() if "swapped" in line]
    assert [s["version"] for s in swapped] == [2]


@pytest.mark.parametrize("db", ["fleet", "fleet_tx"], ids=["session", "transaction"])
def test_a_transaction_in_flight_finishes_under_its_policy(
    redis: RedisServer,
    upstream: PgCluster,
    fleet_db: str,
    tmp_path: Path,
    started: list[WorkerProcess],
    db: str,
) -> None:
    publish(redis, 1, config_toml(upstream, OPEN))
    proc = launch_fleet(redis.url, str(tmp_path))
    started.append(proc)
    with psycopg.connect(proc.dsn(db)) as conn:
        conn.execute("UPDATE accounts SET v = v + 1 WHERE id = 1")
        assert reads_vault_b(conn)  # inside the open transaction
        publish(redis, 2, config_toml(upstream, CLOSED))
        wait_until(lambda: not can_read_vault_b(proc, db), timeout=5)
        assert reads_vault_b(conn)  # still version 1: the transaction started under it
        conn.commit()
        assert not reads_vault_b(conn)  # the next transaction runs under version 2


def test_it_never_goes_back_to_an_older_version(
    redis: RedisServer,
    upstream: PgCluster,
    fleet_db: str,
    tmp_path: Path,
    started: list[WorkerProcess],
) -> None:
    publish(redis, 5, config_toml(upstream, CLOSED))
    proc = launch_fleet(redis.url, str(tmp_path))
    started.append(proc)
    publish(redis, 4, config_toml(upstream, OPEN))
    publish(redis, 6, config_toml(upstream, CLOSED) + "\n[signatures]\nenabled = false\n")
    wait_until(lambda: metric(proc, "sqlproxy_config_version") == 6, timeout=5)
    assert not can_read_vault_b(proc)
    assert '"version": 4' not in proc.log()


def test_an_invalid_snapshot_is_ignored_and_the_old_one_stays(
    redis: RedisServer,
    upstream: PgCluster,
    fleet_db: str,
    tmp_path: Path,
    started: list[WorkerProcess],
) -> None:
    publish(redis, 1, config_toml(upstream, OPEN))
    proc = launch_fleet(redis.url, str(tmp_path))
    started.append(proc)
    good = msgspec.json.decode(fleet.encode_snapshot(
        fleet.ConfigSnapshot(version=2, created=time.time(),
                             config=loads(config_toml(upstream, CLOSED)))
    ))  # fmt: skip
    good["config"]["databases"][1]["pool_mode"] = "txn"
    publish_raw(redis, 2, msgspec.json.encode(good))
    wait_until(lambda: "invalid snapshot" in proc.log(), timeout=5)
    line = next(json.loads(x) for x in proc.log().splitlines() if "invalid snapshot" in x)
    assert "$.config.databases[1].pool_mode" in line["error"]
    publish_raw(redis, 3, b"{not json")
    wait_until(lambda: proc.log().count("invalid snapshot") >= 2, timeout=5)

    assert can_read_vault_b(proc)  # version 1 still in force
    assert metric(proc, "sqlproxy_config_version") == 1
    assert metric(proc, 'sqlproxy_config_reloads_total{outcome="failed"}') == 2
    assert saved_version(tmp_path) == 1
    publish(redis, 4, config_toml(upstream, CLOSED))
    wait_until(lambda: not can_read_vault_b(proc), timeout=5)


# --- Redis away ----------------------------------------------------------------------------


def test_it_restarts_from_the_saved_snapshot_while_redis_is_down(
    redis: RedisServer,
    upstream: PgCluster,
    fleet_db: str,
    tmp_path: Path,
    started: list[WorkerProcess],
) -> None:
    publish(redis, 1, config_toml(upstream, OPEN))
    proc = launch_fleet(redis.url, str(tmp_path))
    started.append(proc)
    publish(redis, 2, config_toml(upstream, CLOSED))
    wait_until(lambda: saved_version(tmp_path) == 2, timeout=5)
    proc.stop()
    redis.stop()  # its data is gone too

    proc.start()  # same ports, same state directory
    assert not can_read_vault_b(proc)  # version 2, from disk
    assert proc.http("/readyz")[0] == 200
    assert '"source": "disk"' in proc.log()

    # Redis comes back empty, then the control plane publishes again.
    redis.start()
    publish(redis, 3, config_toml(upstream, OPEN))
    wait_until(lambda: can_read_vault_b(proc), timeout=10)
    assert "control plane reachable again" in proc.log()
    wait_until(lambda: saved_version(tmp_path) == 3, timeout=5)


def test_a_publication_missed_while_disconnected_is_picked_up(
    redis: RedisServer,
    upstream: PgCluster,
    fleet_db: str,
    tmp_path: Path,
    started: list[WorkerProcess],
) -> None:
    publish(redis, 1, config_toml(upstream, OPEN))
    proc = launch_fleet(redis.url, str(tmp_path))
    started.append(proc)
    # Listening comes before the subscription: wait until it has subscribed and read the key,
    # or the key set below would be read as its first snapshot rather than missed.
    wait_until(lambda: "sqlproxy_control_plane_connected 1.0" in proc.http("/metrics")[1])
    # Version 2 is stored but its PUBLISH never reached the worker (as when it is sent while
    # the subscription is broken): nothing changes yet...
    with redis.client() as client:
        snapshot = fleet.ConfigSnapshot(
            version=2, created=time.time(), config=loads(config_toml(upstream, CLOSED))
        )
        client.set(fleet.SNAPSHOT_KEY, fleet.encode_snapshot(snapshot))
    time.sleep(0.3)
    assert can_read_vault_b(proc)
    # ...until the worker reconnects, and reads the key again.
    redis.stop(save=True)
    wait_until(lambda: "control plane unreachable" in proc.log(), timeout=10)
    assert can_read_vault_b(proc)  # still enforcing version 1 meanwhile
    redis.start()
    wait_until(lambda: not can_read_vault_b(proc), timeout=10)
    assert "control plane reachable again" in proc.log()


def test_no_audit_event_is_lost_while_redis_is_away(
    redis: RedisServer,
    upstream: PgCluster,
    fleet_db: str,
    tmp_path: Path,
    started: list[WorkerProcess],
) -> None:
    publish(redis, 1, config_toml(upstream, OPEN))
    proc = launch_fleet(redis.url, str(tmp_path), worker_id="loaded")
    started.append(proc)
    stop = threading.Event()
    counts: list[int] = []
    failures: list[BaseException] = []

    def client(db: str) -> None:
        # Every statement is audited: allowed ones (sample_allowed = 1.0) and refused ones.
        # (No prepared statements: the request that prepares one gets an event of its own,
        # which the count below does not expect.)
        n = 0
        try:
            with psycopg.connect(proc.dsn(db), autocommit=True, prepare_threshold=None) as conn:
                while not stop.is_set():
                    conn.execute("SELECT v FROM accounts WHERE id = %s", (n % 20 + 1,))
                    try:
                        conn.execute("SELECT k FROM vault_a")
                    except errors.InsufficientPrivilege:
                        pass
                    n += 2
        except BaseException as exc:
            failures.append(exc)
        counts.append(n)

    threads = [threading.Thread(target=client, args=(db,)) for db in ("fleet", "fleet_tx") * 3]
    for t in threads:
        t.start()
    time.sleep(1.0)
    redis.stop(save=True)  # what Redis acknowledged before is kept; the rest is spooled
    wait_until(lambda: "spooling events locally" in proc.log(), timeout=10)
    time.sleep(1.5)
    assert os.path.getsize(tmp_path / "audit-spool.loaded.jsonl") > 0
    redis.start()
    time.sleep(1.0)
    stop.set()
    for t in threads:
        t.join(30)
    assert not failures, failures
    emitted = sum(counts)
    assert emitted > 1000

    wait_until(lambda: len(set(audit_ids(redis))) >= emitted, timeout=20)
    ids = set(audit_ids(redis))
    assert len(ids) == emitted
    # One process, one sequence: every number from 1 to the last one is there.
    prefix = {i.rsplit("-", 1)[0] for i in ids}
    assert len(prefix) == 1
    assert {int(i.rsplit("-", 1)[1]) for i in ids} == set(range(1, emitted + 1))
    assert metric(proc, "sqlproxy_audit_dropped_total") == 0
    assert metric(proc, "sqlproxy_audit_spool_dropped_total") == 0
    assert (metric(proc, "sqlproxy_audit_spooled_total") or 0) > 0
    wait_until(lambda: os.path.getsize(tmp_path / "audit-spool.loaded.jsonl") == 0, timeout=5)


# --- audit spools across restarts ----------------------------------------------------------


def leave_spool(state_dir: Path, worker: str, count: int) -> list[str]:
    """The spool a stopped worker ``worker`` left with ``count`` events; their ids in order."""
    events = [
        AuditEvent(
            id=f"{worker}-4242.0badc0de-{n}", time=time.time(), worker=worker, database="fleet",
            user=APP_USER, client="127.0.0.1:50000", decision="allow",
            normalized="SELECT v FROM accounts WHERE id = $1",
        )
        for n in range(1, count + 1)
    ]  # fmt: skip
    (state_dir / f"audit-spool.{worker}.jsonl").write_bytes(
        b"".join(msgspec.json.encode(e) + b"\n" for e in events)
    )
    return [e.id for e in events]


def test_spools_of_worker_ids_no_longer_running_are_replayed(
    redis: RedisServer, tmp_path: Path, started: list[WorkerProcess]
) -> None:
    # Left by earlier shapes of this worker: one process ("shrunk"), then six ("shrunk-5").
    orphans = {w: leave_spool(tmp_path, w, n) for w, n in (("shrunk", 1200), ("shrunk-5", 300))}
    own = leave_spool(tmp_path, "shrunk-1", 100)  # a current process's: it replays its own
    sizes = {w: (tmp_path / f"audit-spool.{w}.jsonl").stat().st_size for w in orphans}
    proc = launch_fleet(redis.url, str(tmp_path), worker_id="shrunk", workers=2)
    started.append(proc)
    spooled = [*own, *(i for ids in orphans.values() for i in ids)]
    wait_until(lambda: set(spooled) <= set(audit_ids(redis)), timeout=10)
    ids = audit_ids(redis)
    for events in (own, *orphans.values()):
        assert [i for i in ids if i in set(events)] == events  # each in its order
    wait_until(lambda: not any((tmp_path / f"audit-spool.{w}.jsonl").exists() for w in orphans))
    assert (tmp_path / "audit-spool.shrunk-1.jsonl").stat().st_size == 0
    adopted = [json.loads(x) for x in proc.log().splitlines() if "adopting the audit spool" in x]
    assert sorted((a["file"], a["bytes"]) for a in adopted) == sorted(
        (f"audit-spool.{w}.jsonl", size) for w, size in sizes.items()
    )
    assert proc.stop() == 0


@pytest.mark.parametrize("workers", [1, 2])
def test_a_second_worker_on_the_same_id_and_state_dir_exits(
    redis: RedisServer, tmp_path: Path, started: list[WorkerProcess], workers: int
) -> None:
    first = launch_fleet(redis.url, str(tmp_path), worker_id="twin", workers=workers)
    started.append(first)
    port, admin_port = free_port(), free_port()
    source = [
        "--control-plane", redis.url, "--worker-id", "twin", "--state-dir", str(tmp_path),
        "--listen", f"127.0.0.1:{port}", "--admin-port", str(admin_port),
    ]  # fmt: skip
    second = WorkerProcess(str(tmp_path / "second"), port, admin_port, workers, source=source)
    started.append(second)
    with pytest.raises(RuntimeError, match="worker did not start"):
        second.start()
    assert second.proc is not None
    assert second.proc.returncode == EXIT_STATE_DIR_IN_USE
    assert "another live process runs as this worker id" in second.log()
    assert "restarting" not in second.log()  # a supervisor gives up at once
    assert first.proc is not None and first.proc.poll() is None
    assert first.stop() == 0


@pytest.mark.parametrize("flag", [None, "127.0.0.2"], ids=["snapshot", "command-line"])
def test_the_admin_port_listens_where_it_is_told(
    redis: RedisServer,
    upstream: PgCluster,
    fleet_db: str,
    tmp_path: Path,
    started: list[WorkerProcess],
    flag: str | None,
) -> None:
    """``[admin] host`` of the snapshot (the control plane's SQLPROXY_FLEET_ADMIN_HOST), or
    ``--admin-host`` over it: in a container the probes and the scraper come from outside."""
    publish(redis, 1, config_toml(upstream, OPEN + '\n[admin]\nhost = "127.0.0.3"\n'))
    port, admin_port = free_port(), free_port()
    source = [
        "--control-plane", redis.url, "--worker-id", "w1", "--state-dir", str(tmp_path),
        "--listen", f"127.0.0.1:{port}", "--admin-port", str(admin_port),
    ]  # fmt: skip
    if flag is not None:
        source += ["--admin-host", flag]
    # (admin_port -1: start() waits on 127.0.0.1, where it must not listen)
    proc = WorkerProcess(str(tmp_path / "worker"), port, -1, source=source)
    started.append(proc.start())
    expected = flag or "127.0.0.3"

    def health(host: str) -> int | None:
        try:
            with urllib.request.urlopen(f"http://{host}:{admin_port}/healthz", timeout=5) as r:
                return int(r.status)
        except urllib.error.URLError as exc:
            assert isinstance(exc.reason, ConnectionRefusedError), exc
            return None

    wait_until(lambda: health(expected) == 200, timeout=10)
    for other in {"127.0.0.1", "127.0.0.2", "127.0.0.3"} - {expected}:
        assert health(other) is None, f"/healthz answered on {other}"
    assert proc.stop() == 0


def test_sigterm_right_after_start_stops_the_worker(
    redis: RedisServer, upstream: PgCluster, fleet_db: str, tmp_path: Path
) -> None:
    """A SIGTERM while the worker is still subscribing to the control plane: the cancellation
    can be lost inside the Redis client, and the worker must stop all the same (it hung
    until killed, about one start in five)."""
    publish(redis, 1, config_toml(upstream, OPEN))
    for attempt in range(20):
        state = tmp_path / str(attempt)
        source = [
            "--control-plane", redis.url, "--worker-id", "w1", "--state-dir", str(state),
            "--listen", f"127.0.0.1:{free_port()}", "--admin-port", str(free_port()),
        ]  # fmt: skip
        state.mkdir()
        log = state / "worker.log"
        assert exit_of_sigterm_on_listening(source, str(log)) == 0, log.read_text()


# --- heartbeats ----------------------------------------------------------------------------


def test_heartbeats_say_which_version_is_enforced(
    redis: RedisServer,
    upstream: PgCluster,
    fleet_db: str,
    tmp_path: Path,
    started: list[WorkerProcess],
) -> None:
    publish(redis, 1, config_toml(upstream, OPEN))
    proc = launch_fleet(redis.url, str(tmp_path), worker_id="beating")
    started.append(proc)
    with psycopg.connect(proc.dsn("fleet"), autocommit=True) as conn:
        for _ in range(50):
            conn.execute("SELECT 1")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM vault_a")
        wait_until(lambda: any(b.queries >= 51 for b in heartbeats(redis, "beating")), 5)
        beat = next(b for b in heartbeats(redis, "beating") if b.queries >= 51)
        assert beat.config_version == 1
        assert beat.connections == 1
        assert beat.denied == 1
        assert beat.alerted == 0
        assert time.time() - 5 < beat.time <= time.time()
        assert beat.started <= beat.time
        with_latency = [b for b in heartbeats(redis, "beating") if b.latency_p50_ms is not None]
        assert with_latency
        assert 0 < with_latency[0].latency_p50_ms <= with_latency[0].latency_p99_ms  # type: ignore[operator]
    publish(redis, 2, config_toml(upstream, CLOSED))

    def latest() -> tuple[int | None, int]:
        beat = heartbeats(redis, "beating")[-1]
        return beat.config_version, beat.connections

    wait_until(lambda: latest() == (2, 0), timeout=5)


def command_lines(supervisor: int) -> list[str]:
    """The command lines of a supervisor and of the processes it started."""
    lines = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\x00", b" ").decode()
        except (OSError, ValueError):
            continue  # (not a process, or one that just ended)
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if supervisor in (int(entry.name), parent):
            lines.append(cmdline)
    return lines


@pytest.mark.parametrize("url_from", ["argument", "file", "env"])
def test_each_process_follows_the_control_plane(
    redis: RedisServer,
    upstream: PgCluster,
    fleet_db: str,
    tmp_path: Path,
    started: list[WorkerProcess],
    url_from: str,
) -> None:
    publish(redis, 1, config_toml(upstream, OPEN))
    proc = launch_fleet(redis.url, str(tmp_path), worker_id="multi", workers=2, url_from=url_from)
    started.append(proc)
    assert proc.proc is not None
    lines = command_lines(proc.proc.pid)
    assert len(lines) == 3, lines  # the supervisor and its two worker processes
    # Given in a file or the environment, the URL (and a password in it) is in no listing.
    assert all((redis.url in line) is (url_from == "argument") for line in lines), lines
    assert proc.http("/readyz")[0] == 200
    publish(redis, 2, config_toml(upstream, CLOSED))

    def all_on_2() -> bool:
        latest = {}
        for name in ("multi-0", "multi-1"):
            beats = heartbeats(redis, name)
            latest[name] = beats[-1].config_version if beats else None
        return set(latest.values()) == {2}

    wait_until(all_on_2, timeout=5)
    # The kernel spreads connections over the two listeners by a hash of the client's
    # address and port: keep connecting until both answered (16 all on one: 1 run in 32,768).
    conns: list[psycopg.Connection[tuple[object, ...]]] = []
    try:
        while len(conns) < 16 and len({c.info.backend_pid >> 24 for c in conns}) < 2:
            conns.append(psycopg.connect(proc.dsn("fleet"), autocommit=True))
        assert {c.info.backend_pid >> 24 for c in conns} == {0, 1}
        assert not any(reads_vault_b(c) for c in conns)
    finally:
        for c in conns:
            c.close()
    assert proc.stop() == 0


# --- cancels across replicas ---------------------------------------------------------------

SLEEP_ALLOWED = "[signatures]\nenabled = false"
"""(pg_sleep is one of the default signatures.)"""


def sleeping_session(proc: WorkerProcess) -> tuple[RawConnection, int, int]:
    """A client of ``proc`` that has just sent ``SELECT pg_sleep(30)``, and its cancel key."""
    raw = RawConnection(proc.port)
    after_login = raw.login(APP_USER, APP_PASSWORD, "fleet")
    pid, secret = next(struct.unpack("!ii", body) for kind, body in after_login if kind == b"K")
    raw.send_message(b"Q", b"SELECT pg_sleep(30)\0")
    time.sleep(0.5)  # running on the server
    return raw, pid, secret


def send_cancel(proc: WorkerProcess, pid: int, secret: int) -> None:
    """A CancelRequest to ``proc``; returns when the worker has closed the connection."""
    canceller = RawConnection(proc.port)
    canceller.send(cancel_request(pid, secret))
    with pytest.raises(ConnectionError):
        canceller.recv_exact(1)
    canceller.close()


def test_a_cancel_sent_to_another_replica_reaches_the_session(
    redis: RedisServer,
    upstream: PgCluster,
    fleet_db: str,
    tmp_path: Path,
    started: list[WorkerProcess],
) -> None:
    """Two replicas behind a load balancer: the cancel connection lands on the one that does
    not hold the session. Both are single processes that hand out the same pids, so only the
    secret tells their clients apart."""
    publish(redis, 1, config_toml(upstream, SLEEP_ALLOWED))
    holder = launch_fleet(redis.url, str(tmp_path / "a"), worker_id="replica-a")
    other = launch_fleet(redis.url, str(tmp_path / "b"), worker_id="replica-b")
    started += [holder, other]
    bystander, b_pid, b_secret = sleeping_session(other)
    raw, pid, secret = sleeping_session(holder)
    assert pid == b_pid and secret != b_secret

    send_cancel(other, pid, secret ^ 1)  # a wrong secret cancels nothing...
    send_cancel(other, pid + 1, secret)  # ...nor does a wrong pid
    wait_until(lambda: metric(other, 'sqlproxy_cancel_requests_total{outcome="to_fleet"}') == 2)
    time.sleep(0.5)
    assert metric(holder, 'sqlproxy_cancel_requests_total{outcome="forwarded"}') is None

    started_at = time.monotonic()
    send_cancel(other, pid, secret)
    *_, (kind, body), ready = raw.read_until_ready()  # (after a RowDescription)
    assert (kind, fields(body)["C"]) == (b"E", "57014")
    assert time.monotonic() - started_at < 5
    assert ready == (b"Z", b"I")
    assert raw.query("SELECT 1")[-1] == (b"Z", b"I")  # the session goes on
    assert metric(holder, 'sqlproxy_cancel_requests_total{outcome="forwarded"}') == 1
    # The other replica's own client, with the same pid, was never touched.
    assert metric(other, 'sqlproxy_cancel_requests_total{outcome="forwarded"}') is None
    bystander.sock.settimeout(0.5)
    with pytest.raises(TimeoutError):
        bystander.recv_exact(1)
    raw.close()
    bystander.close()


def test_a_cancel_that_cannot_reach_the_fleet_is_counted_and_the_worker_stays_up(
    redis: RedisServer,
    upstream: PgCluster,
    fleet_db: str,
    tmp_path: Path,
    started: list[WorkerProcess],
) -> None:
    publish(redis, 1, config_toml(upstream, OPEN))
    proc = launch_fleet(redis.url, str(tmp_path))
    started.append(proc)
    wait_until(lambda: proc.http("/readyz")[0] == 200, timeout=5)
    redis.stop()
    send_cancel(proc, 12345, 67890)
    assert metric(proc, 'sqlproxy_cancel_requests_total{outcome="undelivered"}') == 1
    assert "cannot hand a cancel to the fleet" in proc.log()
    with psycopg.connect(proc.dsn("fleet"), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM accounts").fetchone() == (20,)


async def test_a_flood_of_unknown_keys_is_not_passed_on_to_the_fleet(
    redis: RedisServer,
) -> None:
    """At most FLEET_CANCELS_PER_SECOND per process per second go out through Redis."""
    client = connect(redis.url)
    heard = client.pubsub()
    await heard.subscribe(fleet.CANCEL_CHANNEL)
    worker = Worker(loads(""))
    worker.cancel_elsewhere = functools.partial(cancel_elsewhere, client)
    try:
        started_at = time.monotonic()
        for n in range(FLEET_CANCELS_PER_SECOND + 50):
            await worker.cancel(n, n)
        assert time.monotonic() - started_at < 1.0  # (one window: the cap is per second)
        keys = []
        quiet_until = time.monotonic() + 1.0  # (None also stands for a subscribe notice)
        while time.monotonic() < quiet_until:
            message = await heard.get_message(ignore_subscribe_messages=True, timeout=0.1)
            if message is not None:
                keys.append(fleet.decode_cancel(message["data"]))
                quiet_until = time.monotonic() + 1.0
        assert keys == [(n, n) for n in range(FLEET_CANCELS_PER_SECOND)]
    finally:
        await heard.aclose()
        await client.aclose()
