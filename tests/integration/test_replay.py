"""Transaction pooling replays a client's prepared statement on a server connection that has
never seen it. When that replayed Parse fails, the client must get the error: the server
skips the rest of the batch, and a swallowed error would leave the client waiting."""

from __future__ import annotations

import threading

import psycopg
import pytest
from psycopg import errors

from proxyworker.protocol import messages as m
from tests.support.pgcluster import PgCluster, wait_until
from tests.support.rawpg import RawConnection, fields
from tests.support.worker import APP_PASSWORD, APP_USER, WorkerProcess


def test_a_failed_replay_reaches_the_client(worker: WorkerProcess, upstream: PgCluster) -> None:
    with upstream.connect() as direct:
        direct.execute("DROP TABLE IF EXISTS replay_probe; CREATE TABLE replay_probe (x int)")
    conn = psycopg.connect(worker.dsn("app_tx"), autocommit=True, prepare_threshold=0)
    try:
        assert conn.execute("SELECT count(*) FROM replay_probe").fetchone() == (0,)
        with upstream.connect() as direct:
            # Drop the table and every server connection that holds the statement.
            direct.execute("DROP TABLE replay_probe")
            direct.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() "
                "AND datname = current_database()"
            )
            wait_until(
                lambda: (
                    direct.execute(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() "
                        "AND datname = current_database()"
                    ).fetchone()
                    == (0,)
                )
            )
        outcome: list[BaseException | None] = []

        def run() -> None:
            try:
                conn.execute("SELECT count(*) FROM replay_probe")  # Bind only: replayed Parse
                outcome.append(None)
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join(10)
        assert outcome, "the client is still waiting: the replay's error was swallowed"
        assert isinstance(outcome[0], errors.UndefinedTable)
    finally:
        conn.close()


@pytest.fixture(autouse=True)
def _no_leftover(upstream: PgCluster) -> None:
    with upstream.connect() as direct:
        direct.execute("DROP TABLE IF EXISTS replay_probe")


def test_a_batch_pipelined_past_an_error_gets_its_ready_for_query(worker: WorkerProcess) -> None:
    """The error arrives before the client sent its Sync (psycopg's executemany in pipeline
    mode): what the client sends after it is skipped by the server, not awaited."""
    raw = RawConnection(worker.port)
    try:
        raw.login(APP_USER, APP_PASSWORD, "app_tx")
        parse = m.parse("many", "wat ($1)")
        bind = m.message(m.BIND, b"\0many\0" + b"\0\0" + b"\0\1" + b"\0\0\0\1" + b"1" + b"\0\0")
        execute = m.message(m.EXECUTE, b"\0\0\0\0\0")
        raw.send(parse + bind + execute)
        kind, body = raw.read_message()
        assert kind == b"E" and fields(body)["C"] == "42601"
        raw.send(bind + execute + m.message(m.SYNC, b""))
        assert raw.read_message() == (b"Z", b"I")
        assert raw.query("SELECT 1")[-1] == (b"Z", b"I")
    finally:
        raw.close()
