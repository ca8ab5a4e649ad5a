"""Operating a worker: SIGHUP reload without dropping connections, SIGTERM drain, metrics and
health endpoints, JSON logs, a client that stops reading, and --workers N."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import proxyworker
from tests.conftest import databases_toml
from tests.support.net import free_port
from tests.support.pgcluster import PgCluster, wait_until
from tests.support.rawpg import RawConnection, fields
from tests.support.worker import (
    APP_PASSWORD,
    APP_USER,
    WorkerProcess,
    exit_of_sigterm_on_listening,
    launch,
    worker_config,
    write_config,
)


@pytest.fixture
def own_worker(upstream: PgCluster) -> Iterator[WorkerProcess]:
    proc = launch(databases_toml(upstream))
    yield proc
    proc.stop()


def test_it_reloads_on_sighup_without_dropping_connections(own_worker: WorkerProcess) -> None:
    with psycopg.connect(own_worker.dsn("app"), autocommit=True) as kept:
        kept.execute("SELECT 1")
        with open(own_worker.config_path, "a") as fh:
            fh.write('\n[[users]]\nname = "late"\npassword = "late-pw"\n')
        own_worker.signal(signal.SIGHUP)

        def late_user_works() -> bool:
            try:
                with psycopg.connect(own_worker.dsn("app", user="late", password="late-pw")):
                    return True
            except psycopg.OperationalError:
                return False

        wait_until(late_user_works, timeout=10)
        assert kept.execute("SELECT 'kept'").fetchone() == ("kept",)


def test_it_keeps_the_running_config_when_a_reload_is_invalid(own_worker: WorkerProcess) -> None:
    with open(own_worker.config_path, "a") as fh:
        fh.write("\n[listen]\nport = 'not a number'\n")
    own_worker.signal(signal.SIGHUP)
    wait_until(lambda: "reload failed" in own_worker.log(), timeout=10)
    line = next(json.loads(x) for x in own_worker.log().splitlines() if "reload failed" in x)
    assert own_worker.config_path in line["message"]
    assert own_worker.proc is not None and own_worker.proc.poll() is None
    with psycopg.connect(own_worker.dsn("app")) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_sigterm_right_after_start_drains(upstream: PgCluster, tmp_path: Path) -> None:
    """A SIGTERM the moment the port is open: drained and exit 0, not the default action."""
    for attempt in range(10):
        text = worker_config(databases_toml(upstream), port=free_port(), admin_port=free_port())
        log = str(tmp_path / f"worker-{attempt}.log")
        assert exit_of_sigterm_on_listening(["--config", write_config(text)], log) == 0


def test_it_drains_on_sigterm(own_worker: WorkerProcess, upstream: PgCluster, db: str) -> None:
    table = f"drain_{db}"
    with upstream.connect() as direct:
        direct.execute(f"DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (x int)")
    idle = psycopg.connect(own_worker.dsn(db), autocommit=True)
    busy = psycopg.connect(own_worker.dsn(db))
    busy.execute(f"INSERT INTO {table} VALUES (1)")  # a transaction is open
    own_worker.signal(signal.SIGTERM)
    wait_until(lambda: "draining" in own_worker.log(), timeout=10)
    # The idle client is told to go; the one mid-transaction may still commit.
    with pytest.raises(psycopg.OperationalError, match="the worker is stopping"):
        idle.execute("SELECT 1")
    busy.commit()
    assert own_worker.proc is not None
    assert own_worker.proc.wait(15) == 0
    busy.close()
    idle.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", own_worker.port), timeout=2)
    with upstream.connect() as direct:
        assert direct.execute(f"SELECT x FROM {table}").fetchall() == [(1,)]


def test_a_transaction_left_open_ends_the_drain_at_shutdown_timeout(
    upstream: PgCluster, db: str
) -> None:
    """A client that never ends its transaction holds a SIGTERM drain for shutdown_timeout at
    most: then it is told why (57P01), its transaction rolls back and the worker exits 0."""
    proc = launch(databases_toml(upstream), extra="shutdown_timeout = 0.5")
    table = f"drain_timeout_{db}"
    with upstream.connect() as direct:
        direct.execute(f"DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (x int)")
    lingering = psycopg.connect(proc.dsn(db))
    try:
        lingering.execute(f"INSERT INTO {table} VALUES (1)")  # and never commits
        started = time.monotonic()
        proc.signal(signal.SIGTERM)
        assert proc.proc is not None and proc.proc.wait(15) == 0
        assert 0.45 < time.monotonic() - started < 10
        with pytest.raises(psycopg.OperationalError, match="shutdown timeout reached"):
            lingering.execute("SELECT 1")
    finally:
        lingering.close()
        proc.stop()
    with upstream.connect() as direct:
        assert direct.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)


def test_it_exports_metrics_and_health(worker: WorkerProcess, db: str) -> None:
    with psycopg.connect(worker.dsn(db), autocommit=True) as conn:
        for _ in range(3):
            conn.execute("SELECT 1")
    status, text = worker.http("/metrics")
    assert status == 200
    queries = [
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith(f'sqlproxy_queries_total{{database="{db}"}}')
    ]
    assert queries and queries[0] >= 3
    for name in (
        "sqlproxy_client_connections",
        "sqlproxy_query_duration_seconds_bucket",
        "sqlproxy_pool_wait_seconds_bucket",
        "sqlproxy_client_bytes_received_total",
        "sqlproxy_server_connections",
    ):
        assert name in text
    compiled = "yes" if proxyworker.COMPILED else "no"
    assert f'sqlproxy_build_info{{compiled="{compiled}",version="' in text
    assert worker.http("/healthz") == (200, "ok\n")
    status, body = worker.http("/readyz")
    assert (status, json.loads(body)["ready"]) == (200, True)
    assert worker.http("/nope")[0] == 404


def test_it_closes_server_connections_idle_past_server_idle_timeout(
    upstream: PgCluster, db: str
) -> None:
    """A server connection idle in the pool longer than server_idle_timeout is closed, not
    sooner; one linked to its client (session mode) is never idle, however long the client
    waits; a client in transaction mode gets a fresh one for its next transaction."""
    proc = launch(databases_toml(upstream, extra="server_idle_timeout = 1.0"))
    marker = f"idle_timeout_{db}"

    def backends() -> int:
        with upstream.connect() as admin:
            row = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (marker,)
            ).fetchone()
        assert row is not None
        return int(row[0])

    try:
        with psycopg.connect(proc.dsn(db), autocommit=True, application_name=marker) as conn:
            conn.execute("SELECT 1")
            assert backends() == 1
            if db == "app":
                time.sleep(2.5)
                assert backends() == 1
            else:
                wait_until(lambda: backends() == 0, timeout=10)
            # The server connection is idle from the end of this statement (transaction mode:
            # a fresh one) or of the session, not before now: a lower bound that no delay in
            # this process can move past the real start.
            idle_since = time.monotonic()
            assert conn.execute("SELECT 'last'").fetchone() == ("last",)
        assert backends() == 1
        wait_until(lambda: backends() == 0, timeout=10)
        assert time.monotonic() - idle_since > 0.9
        with psycopg.connect(proc.dsn(db), autocommit=True) as conn:
            assert conn.execute("SELECT 'again'").fetchone() == ("again",)
    finally:
        proc.stop()


def test_a_client_waits_for_a_server_connection_at_most_pool_timeout(
    upstream: PgCluster, db: str
) -> None:
    """pool_size 1: a second client waits for the only server connection, gets it when the
    first gives it back (transaction mode: at the end of its transaction; session mode: when
    it leaves), and is refused with 53300 naming the pool once pool_timeout has passed."""
    proc = launch(databases_toml(upstream, pool_size=1, extra="pool_timeout = 0.5"))
    try:
        # its open transaction holds the server
        with psycopg.connect(proc.dsn(db)) as holder:
            holder.execute("SELECT 1")
            waiting = RawConnection(proc.port)
            started = time.monotonic()
            kind, body = waiting.login(APP_USER, APP_PASSWORD, db)[-1]
            waited = time.monotonic() - started
            waiting.close()
            error = fields(body)
            assert (kind, error["S"], error["C"]) == (b"E", "FATAL", "53300"), error
            assert error["M"] == (
                f'sqlproxy: database "{db}": no server connection became free within 0.5s '
                "(pool_size 1, pool_timeout)"
            )
            assert 0.45 < waited < 5, waited

            give_back = holder.close if db == "app" else holder.rollback
            timer = threading.Timer(0.2, give_back)
            timer.start()
            with psycopg.connect(proc.dsn(db), autocommit=True, connect_timeout=10) as served:
                assert served.execute("SELECT 'served'").fetchone() == ("served",)
            timer.join()
    finally:
        proc.stop()


def test_it_writes_json_logs(worker: WorkerProcess) -> None:
    first = json.loads(worker.log().splitlines()[0])
    assert first["message"] == "listening" and first["port"] == worker.port
    assert first["compiled"] is proxyworker.COMPILED  # (the worker imports the same tree)
    assert {"time", "level", "logger"} <= set(first)


def test_a_client_that_stops_reading_blocks_nobody_else(worker: WorkerProcess, db: str) -> None:
    stuck = RawConnection(worker.port)
    stuck.login(APP_USER, APP_PASSWORD, db)
    stuck.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    # About 200 MB of results that the client will never read.
    stuck.send_message(b"Q", b"SELECT repeat('x', 1000) FROM generate_series(1, 200000)\0")
    try:
        with psycopg.connect(worker.dsn(db), autocommit=True) as other:
            for i in range(50):
                assert other.execute("SELECT %s::int", (i,)).fetchone() == (i,)
    finally:
        stuck.close()


def test_it_refuses_clients_over_max_client_conn(upstream: PgCluster) -> None:
    proc = launch(databases_toml(upstream), extra="max_client_conn = 2")
    try:
        proc.wait_for_no_clients()
        first = psycopg.connect(proc.dsn("app"))
        second = psycopg.connect(proc.dsn("app"))
        with pytest.raises(psycopg.OperationalError, match="too many clients"):
            psycopg.connect(proc.dsn("app"))
        first.close()
        second.close()
    finally:
        proc.stop()


def test_it_serves_with_several_processes(upstream: PgCluster) -> None:
    proc = launch(databases_toml(upstream), workers=2)
    try:
        # SO_REUSEPORT spreads connections by a hash of their addresses: 8 all land in one
        # process about once in 128 runs, so connect until both have some (16 at most: one in
        # 32,768 runs; pool_size is 20).
        conns = [psycopg.connect(proc.dsn("app"), autocommit=True) for _ in range(8)]
        while {c.info.backend_pid >> 24 for c in conns} != {0, 1} and len(conns) < 16:
            conns.append(psycopg.connect(proc.dsn("app"), autocommit=True))
        assert {c.info.backend_pid >> 24 for c in conns} == {0, 1}
        for c in conns:
            assert c.execute("SELECT 1").fetchone() == (1,)
        status, text = proc.http("/metrics")
        assert status == 200
        assert f"sqlproxy_client_connections {len(conns)}.0" in text  # merged across processes
        for c in conns:
            c.close()
    finally:
        assert proc.stop() == 0
