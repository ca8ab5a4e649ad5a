"""CancelRequest: each client holds its own key, and a cancel reaches exactly the server backend
running that client's query — also when the kernel hands the cancel connection to another
worker process (--workers 2)."""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import errors

from tests.conftest import databases_toml
from tests.support.pgcluster import PgCluster
from tests.support.rawpg import RawConnection, fields
from tests.support.worker import APP_PASSWORD, APP_USER, WorkerProcess, launch


def sleep_and_cancel(conn: psycopg.Connection, canceller: psycopg.Connection) -> float:
    """Run pg_sleep(30) on ``conn`` and cancel it through ``canceller``'s key after 0.5 s."""
    timer = threading.Timer(0.5, canceller.cancel_safe)
    started = time.monotonic()
    timer.start()
    try:
        with pytest.raises(errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(30)")
    finally:
        timer.cancel()
    return time.monotonic() - started


def test_it_cancels_the_running_query(worker: WorkerProcess, db: str) -> None:
    with psycopg.connect(worker.dsn(db), autocommit=True) as conn:
        assert sleep_and_cancel(conn, conn) < 10
        assert conn.execute("SELECT 'usable'").fetchone() == ("usable",)


def test_it_never_cancels_another_clients_query(worker: WorkerProcess, db: str) -> None:
    with (
        psycopg.connect(worker.dsn(db), autocommit=True) as idle,
        psycopg.connect(worker.dsn(db), autocommit=True) as busy,
    ):
        assert idle.info.backend_pid != busy.info.backend_pid
        timer = threading.Timer(0.3, idle.cancel_safe)
        timer.start()
        # The idle client's cancel must not reach the busy client's backend.
        assert busy.execute("SELECT pg_sleep(1.5), 'finished'").fetchone() == ("", "finished")
        timer.join()


def test_it_hands_each_client_its_own_key(worker: WorkerProcess, db: str) -> None:
    conns = [psycopg.connect(worker.dsn(db), autocommit=True) for _ in range(5)]
    try:
        keys = {c.info.backend_pid for c in conns}
        assert len(keys) == 5
        server_pids = {c.execute("SELECT pg_backend_pid()").fetchone()[0] for c in conns[:1]}
        assert not keys & server_pids  # the client's pid is the worker's, not the backend's
    finally:
        for c in conns:
            c.close()


@pytest.fixture(scope="module")
def two_workers(upstream: PgCluster) -> Iterator[WorkerProcess]:
    proc = launch(databases_toml(upstream), workers=2)
    yield proc
    proc.stop()


def test_it_routes_cancels_between_worker_processes(two_workers: WorkerProcess) -> None:
    conns = [psycopg.connect(two_workers.dsn("app"), autocommit=True) for _ in range(6)]
    try:
        owners = {c.info.backend_pid >> 24 for c in conns}
        assert owners <= {0, 1}
        for conn in conns:
            # cancel() opens a new connection, which the kernel may give to either process.
            assert sleep_and_cancel(conn, conn) < 10
    finally:
        for c in conns:
            c.close()


def test_it_cancels_a_batch_still_waiting_for_its_sync(worker: WorkerProcess, db: str) -> None:
    raw = RawConnection(worker.port)
    after_login = raw.login(APP_USER, APP_PASSWORD, db)
    (pid, secret) = next(struct.unpack("!ii", body) for kind, body in after_login if kind == b"K")
    raw.send_message(b"P", b"\0SELECT pg_sleep(30)\0\0\0")
    raw.send_message(b"B", b"\0\0\0\0\0\0\0\0")
    raw.send_message(b"H")  # Flush
    assert [raw.read_message()[0] for _ in range(2)] == [b"1", b"2"]
    raw.send_message(b"E", b"\0\0\0\0\0")  # runs now; no Sync is sent
    time.sleep(0.5)
    canceller = RawConnection(worker.port)
    canceller.send(struct.pack("!iiii", 16, 80877102, pid, secret))
    with pytest.raises(ConnectionError):
        canceller.recv_exact(1)  # closed once the cancel was delivered
    kind, body = raw.read_message()
    assert (kind, fields(body)["C"]) == (b"E", "57014")
    raw.send_message(b"S")
    assert raw.read_message() == (b"Z", b"I")
    raw.close()


def test_notifications_carry_the_clients_pid(worker: WorkerProcess) -> None:
    with psycopg.connect(worker.dsn("app"), autocommit=True) as conn:
        conn.execute("LISTEN own_pid")
        conn.execute("NOTIFY own_pid, 'mine'")
        received = next(conn.notifies(timeout=5, stop_after=1))
        assert received.payload == "mine"
        assert received.pid == conn.info.backend_pid
