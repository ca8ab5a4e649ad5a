"""psycopg 3 through a real worker: sync, async, pipeline, COPY, prepared statements,
notices, notifications and errors mid-stream — in both pool modes."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from psycopg import errors

from tests.support.pgcluster import PgCluster
from tests.support.worker import WorkerProcess


def test_it_runs_simple_and_parameterized_queries(worker: WorkerProcess, db: str) -> None:
    with psycopg.connect(worker.dsn(db), autocommit=True) as conn:
        assert conn.execute("SELECT 1 + 1").fetchone() == (2,)
        rows = conn.execute("SELECT %s::int * x FROM generate_series(1, 3) x", (7,)).fetchall()
        assert rows == [(7,), (14,), (21,)]
        assert conn.info.parameter_status("server_version") is not None


def test_it_keeps_server_side_prepared_statements(worker: WorkerProcess, db: str) -> None:
    with psycopg.connect(worker.dsn(db), prepare_threshold=0, autocommit=True) as conn:
        for i in range(20):
            assert conn.execute("SELECT %s::int + 1, 'p'", (i,)).fetchone() == (i + 1, "p")
        # Many distinct statements, interleaved, each re-used.
        for i in range(3):
            for n in range(5):
                assert conn.execute(f"SELECT {n} + %s::int", (i,)).fetchone() == (n + i,)


def test_it_pipelines_many_syncs(worker: WorkerProcess, db: str) -> None:
    with psycopg.connect(worker.dsn(db), autocommit=True) as conn:
        with conn.pipeline():
            cursors = [conn.execute("SELECT %s::int", (i,)) for i in range(50)]
        assert [c.fetchone() for c in cursors] == [(i,) for i in range(50)]


def test_it_reports_errors_mid_stream_and_stays_usable(worker: WorkerProcess, db: str) -> None:
    with psycopg.connect(worker.dsn(db), autocommit=True) as conn:
        with pytest.raises(errors.DivisionByZero):
            conn.execute("SELECT 10 / (3 - x) FROM generate_series(1, 5) x").fetchall()
        with pytest.raises(errors.UndefinedTable):
            conn.execute("SELECT * FROM no_such_table")
        assert conn.execute("SELECT 'still here'").fetchone() == ("still here",)


def test_it_copies_in_and_out(worker: WorkerProcess, db: str) -> None:
    table = f"copy_{db}"
    with psycopg.connect(worker.dsn(db), autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(f"CREATE TABLE {table} (id int, name text)")
        rows = [(i, f"name {i}" * 50) for i in range(2000)]
        with conn.cursor() as cur:
            with cur.copy(f"COPY {table} FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (2000,)
            with cur.copy(f"COPY {table} TO STDOUT") as copy:
                out = [(int(a), b) for a, b in copy.rows()]
        assert sorted(out) == rows
        conn.execute(f"DROP TABLE {table}")


def test_it_relays_notices_and_notifications(worker: WorkerProcess, db: str) -> None:
    notices: list[str] = []
    with psycopg.connect(worker.dsn("app"), autocommit=True) as listener:
        listener.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
        listener.execute("DO $$BEGIN RAISE NOTICE 'hello from the server'; END$$")
        assert notices == ["hello from the server"]
        listener.execute(f"LISTEN chan_{db}")
        with psycopg.connect(worker.dsn(db), autocommit=True) as sender:
            sender.execute(f"NOTIFY chan_{db}, 'payload'")
        received = next(listener.notifies(timeout=5, stop_after=1))
        assert received.payload == "payload"


def test_a_notification_carries_the_pid_its_sender_knows(worker: WorkerProcess) -> None:
    """Session mode: the sender's pid as the worker handed it out (BackendKeyData), as
    PostgreSQL gives a listener the sender's backend pid."""
    with (
        psycopg.connect(worker.dsn("app"), autocommit=True) as listener,
        psycopg.connect(worker.dsn("app"), autocommit=True) as sender,
    ):
        listener.execute("LISTEN chan_pid")
        listener.execute("NOTIFY chan_pid, 'self'")
        sender.execute("NOTIFY chan_pid, 'other'")
        got = {n.payload: n.pid for n in listener.notifies(timeout=5, stop_after=2)}
        assert got == {"self": listener.info.backend_pid, "other": sender.info.backend_pid}
        backend = sender.execute("SELECT pg_backend_pid()").fetchone()
        assert backend is not None and backend[0] != sender.info.backend_pid


def test_it_keeps_transactions_on_one_server_connection(worker: WorkerProcess, db: str) -> None:
    with psycopg.connect(worker.dsn(db)) as conn:
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()
        conn.execute("CREATE TEMP TABLE t_in_tx (x int)")
        for _ in range(5):
            assert conn.execute("SELECT pg_backend_pid()").fetchone() == pid
        conn.rollback()


def test_it_runs_async_clients_concurrently(worker: WorkerProcess, db: str) -> None:
    async def one(i: int) -> int:
        async with await psycopg.AsyncConnection.connect(worker.dsn(db), autocommit=True) as c:
            cur = await c.execute("SELECT %s::int, pg_sleep(0.05)", (i,))
            row = await cur.fetchone()
            assert row is not None
            return int(row[0])

    async def main() -> list[int]:
        return list(await asyncio.gather(*(one(i) for i in range(30))))

    assert asyncio.run(main()) == list(range(30))


def test_it_returns_exactly_what_a_direct_connection_returns(
    worker: WorkerProcess, upstream: PgCluster, db: str
) -> None:
    sql = (
        "SELECT x, x::text, x * 1.5, repeat('ab', x), NULL::int, now()::date, "
        "ARRAY[x, x + 1], jsonb_build_object('k', x) FROM generate_series(1, 200) x"
    )
    with upstream.connect() as direct, psycopg.connect(worker.dsn(db)) as proxied:
        assert proxied.execute(sql).fetchall() == direct.execute(sql).fetchall()
        binary = proxied.cursor(binary=True).execute(sql).fetchall()
        assert binary == direct.cursor(binary=True).execute(sql).fetchall()


def test_it_relays_errors_in_a_non_utf8_client_encoding(worker: WorkerProcess, db: str) -> None:
    with psycopg.connect(worker.dsn(db), autocommit=True) as conn:
        conn.execute("SET client_encoding = 'LATIN9'")
        with pytest.raises(errors.RaiseException) as exc:
            conn.execute("DO $$BEGIN RAISE EXCEPTION 'café €'; END$$")
        assert exc.value.diag.message_primary == "café €"
        assert conn.execute("SELECT 'ok'").fetchone() == ("ok",)
