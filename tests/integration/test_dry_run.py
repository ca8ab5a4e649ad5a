"""Dry run and preview over the wire, through real workers: ``--dry-run`` for every client,
``SET sqlproxy.dry_run`` / ``SET sqlproxy.preview`` for one session. Every write runs and is
rolled back: the client sees the real command tags (and a NOTICE saying what was rolled back),
the database (read over a direct connection) is unchanged. psycopg over the simple and the
extended protocol, asyncpg, both pool modes."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator

import asyncpg
import psycopg
import pytest
from psycopg import errors

from tests.conftest import databases_toml
from tests.support.net import free_port
from tests.support.pgcluster import PgCluster
from tests.support.worker import (
    APP_PASSWORD,
    APP_USER,
    NO_POLICY,
    WorkerProcess,
    launch,
    worker_config,
    write_config,
)

POLICY = """
[table_limits]
dr_limited = 5

[signatures]
enabled = true
"""
SCHEMA = """
DROP TABLE IF EXISTS dr_items, dr_limited CASCADE;
CREATE TABLE dr_items (id int PRIMARY KEY, name text);
CREATE TABLE dr_limited (id int PRIMARY KEY, v int);
"""
ROWS = """
TRUNCATE dr_items, dr_limited;
INSERT INTO dr_items SELECT g, 'item ' || g FROM generate_series(1, 20) g;
INSERT INTO dr_limited SELECT g, 0 FROM generate_series(1, 20) g;
"""


def state(upstream: PgCluster) -> tuple[object, ...]:
    with upstream.connect() as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM dr_items), (SELECT string_agg(name, ',' ORDER BY id) "
            "FROM dr_items), (SELECT sum(v) FROM dr_limited)"
        ).fetchone()
        assert row is not None
        return tuple(row)


@pytest.fixture(scope="module")
def schema(upstream: PgCluster) -> tuple[object, ...]:
    with upstream.connect() as conn:
        conn.execute(SCHEMA)
        conn.execute(ROWS)
    return state(upstream)


@pytest.fixture(scope="module")
def dry_worker(upstream: PgCluster, schema: tuple[object, ...]) -> Iterator[WorkerProcess]:
    """``python -m proxyworker --dry-run``."""
    port = free_port()
    text = worker_config(databases_toml(upstream), port=port, admin_port=-1, policy=POLICY)
    proc = WorkerProcess(write_config(text), port, -1, extra_args=["--dry-run"]).start()
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def guarded(upstream: PgCluster, schema: tuple[object, ...]) -> Iterator[WorkerProcess]:
    proc = launch(databases_toml(upstream), policy=POLICY)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def unguarded(upstream: PgCluster, schema: tuple[object, ...]) -> Iterator[WorkerProcess]:
    proc = launch(databases_toml(upstream), policy=NO_POLICY)
    yield proc
    proc.stop()


@pytest.fixture(autouse=True)
def fresh(upstream: PgCluster, schema: tuple[object, ...]) -> Iterator[None]:
    yield
    with upstream.connect() as conn:
        conn.execute(ROWS)  # the same tables: the workers know their OIDs


def connect(proc: WorkerProcess, db: str, protocol: str, **kw: object) -> psycopg.Connection:
    factory = psycopg.ClientCursor if protocol == "simple" else psycopg.Cursor
    conn = psycopg.connect(proc.dsn(db), cursor_factory=factory, **kw)  # type: ignore[arg-type]
    conn.notices = []  # type: ignore[attr-defined]
    conn.add_notice_handler(lambda d: conn.notices.append(d.message_primary))  # type: ignore[attr-defined]
    return conn


def notices(conn: psycopg.Connection) -> list[str]:
    return list(conn.notices)  # type: ignore[attr-defined]


PROTOCOLS = ["simple", "extended"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_it_rolls_back_every_write_of_a_dry_run_worker(
    dry_worker: WorkerProcess, upstream: PgCluster, db: str, protocol: str
) -> None:
    before = state(upstream)
    with connect(dry_worker, db, protocol, autocommit=True) as conn:
        cur = conn.execute("DELETE FROM dr_items WHERE id <= %s", [3])
        assert (cur.statusmessage, cur.rowcount) == ("DELETE 3", 3)
        assert notices(conn) == ["sqlproxy dry run: DELETE 3 rolled back"]
        cur = conn.execute("UPDATE dr_items SET name = 'x' RETURNING id")
        assert len(cur.fetchall()) == 20
        cur = conn.execute("INSERT INTO dr_items VALUES (100, 'new')")
        assert cur.statusmessage == "INSERT 0 1"
        # Reads are answered as they are, and the session stays idle between statements.
        assert conn.execute("SELECT count(*) FROM dr_items").fetchone() == (20,)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        # A failing write: its own error, nothing else.
        with pytest.raises(errors.UniqueViolation):
            conn.execute("INSERT INTO dr_items VALUES (1, 'dup')")
        assert conn.execute("SELECT 1").fetchone() == (1,)
        with pytest.raises(errors.InsufficientPrivilege, match="dry-run mode"):
            conn.execute("SET sqlproxy.dry_run = off")
        assert conn.execute("SHOW sqlproxy.dry_run").fetchone() == ("on",)
    assert state(upstream) == before


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_dry_run_commit_rolls_back_and_says_so(
    dry_worker: WorkerProcess, upstream: PgCluster, db: str, protocol: str
) -> None:
    before = state(upstream)
    with connect(dry_worker, db, protocol) as conn:
        conn.execute("UPDATE dr_items SET name = 'changed' WHERE id <= 4")
        conn.execute("DELETE FROM dr_items WHERE id = 20")
        # Inside the transaction the client sees its own changes.
        assert conn.execute("SELECT count(*) FROM dr_items").fetchone() == (19,)
        cur = conn.cursor()
        conn.commit()  # COMMIT: answered as COMMIT, really a ROLLBACK
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        assert notices(conn)[-1] == "sqlproxy dry run: UPDATE 4, DELETE 1 rolled back"
        cur.execute("SELECT count(*) FROM dr_items")
        assert cur.fetchone() == (20,)
        conn.commit()
    assert state(upstream) == before


def test_a_dry_run_string_with_transaction_control(
    dry_worker: WorkerProcess, upstream: PgCluster, db: str
) -> None:
    before = state(upstream)
    with connect(dry_worker, db, "simple", autocommit=True) as conn:
        cur = conn.execute(
            "BEGIN; DELETE FROM dr_items WHERE id < 10; COMMIT; "
            "UPDATE dr_limited SET v = 1 WHERE id = 1; SELECT count(*) FROM dr_items"
        )
        tags = [cur.statusmessage]
        while cur.nextset():
            tags.append(cur.statusmessage)
        assert tags == ["BEGIN", "DELETE 9", "COMMIT", "UPDATE 1", "SELECT 1"]
        assert cur.fetchone() == (20,)
        assert notices(conn) == [
            "sqlproxy dry run: DELETE 9 rolled back",
            "sqlproxy dry run: UPDATE 1 rolled back",
        ]
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert state(upstream) == before


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_session_switches_dry_run_on_and_off(
    guarded: WorkerProcess, upstream: PgCluster, db: str, protocol: str
) -> None:
    before = state(upstream)
    with connect(guarded, db, protocol, autocommit=True) as conn:
        cur = conn.execute("SET sqlproxy.dry_run = on")
        assert cur.statusmessage == "SET"
        assert conn.execute("SHOW sqlproxy.dry_run").fetchone() == ("on",)
        assert conn.execute("DELETE FROM dr_items WHERE id > 15").rowcount == 5
        # Over the row limit: still refused (the limit check runs before the rollback).
        with pytest.raises(errors.InsufficientPrivilege, match="table_limits"):
            conn.execute("UPDATE dr_limited SET v = 9")
        assert state(upstream) == before
        conn.execute("SET sqlproxy.dry_run TO off")
        assert conn.execute("SHOW sqlproxy.dry_run").fetchone() == ("off",)
        assert conn.execute("DELETE FROM dr_items WHERE id > 15").rowcount == 5
        with pytest.raises(errors.InvalidParameterValue):
            conn.execute("SET sqlproxy.dry_run = maybe")
        with pytest.raises(errors.InsufficientPrivilege, match="proxy-settings"):
            conn.execute("SET sqlproxy.baseline = ''")  # the guard's own: never the client's
    assert state(upstream)[0] == 15


def test_a_statement_prepared_before_the_switch_is_rolled_back_too(
    guarded: WorkerProcess, upstream: PgCluster, db: str
) -> None:
    with connect(guarded, db, "extended", autocommit=True) as conn:
        delete = "DELETE FROM dr_items WHERE id = %s"
        assert conn.execute(delete, [1], prepare=True).rowcount == 1
        conn.execute("SET sqlproxy.dry_run = on")
        assert conn.execute(delete, [2], prepare=True).rowcount == 1
        assert notices(conn) == ["sqlproxy dry run: DELETE 1 rolled back"]
    assert state(upstream)[0] == 19


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_switch_inside_a_transaction_cannot_commit_dry_run_writes(
    guarded: WorkerProcess, upstream: PgCluster, db: str, protocol: str
) -> None:
    before = state(upstream)
    with connect(guarded, db, protocol) as conn:
        conn.execute("SET sqlproxy.dry_run = on")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
        conn.execute("DELETE FROM dr_items WHERE id > 10")
        conn.execute("SET sqlproxy.dry_run = off")
        conn.commit()
        assert state(upstream) == before
        conn.execute("DELETE FROM dr_items WHERE id > 10")
        conn.commit()
    assert state(upstream)[0] == 10


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_preview_shows_the_first_rows_and_the_exact_count(
    guarded: WorkerProcess, upstream: PgCluster, db: str, protocol: str
) -> None:
    before = state(upstream)
    with connect(guarded, db, protocol, autocommit=True) as conn:
        conn.execute("SET sqlproxy.preview = on")
        cur = conn.execute("DELETE FROM dr_items WHERE id > %s", [8])
        rows = cur.fetchall()
        assert [c.name for c in cur.description or ()] == ["id", "name", "sqlproxy_affected"]
        assert len(rows) == 5 and {r[2] for r in rows} == {12}
        assert {r[0] for r in rows} <= set(range(9, 21))
        cur = conn.execute("UPDATE dr_items SET name = 'p' WHERE id = 3 RETURNING id")
        assert cur.fetchall() == [(3, 1)]
        assert conn.execute("DELETE FROM dr_items WHERE id > 100").fetchall() == []
        assert state(upstream) == before
        # Inside a transaction block: under a savepoint, the block stays usable.
        conn.execute("BEGIN")
        assert len(conn.execute("DELETE FROM dr_items").fetchall()) == 5
        assert conn.execute("SELECT count(*) FROM dr_items").fetchone() == (20,)
        conn.execute("COMMIT")
        conn.execute("SET sqlproxy.preview = off")
        assert conn.execute("DELETE FROM dr_items WHERE id > 18").rowcount == 2
    assert state(upstream)[0] == 18


def test_the_switches_work_without_a_policy(
    unguarded: WorkerProcess, upstream: PgCluster, db: str
) -> None:
    before = state(upstream)
    # (Either case: the worker looks for an x, then for the name.)
    for protocol, switch in itertools.product(
        PROTOCOLS, ["SET SQLPROXY.DRY_RUN = true", "set sqlproxy.dry_run to on"]
    ):
        with connect(unguarded, db, protocol, autocommit=True) as conn:
            conn.execute(switch)
            assert conn.execute("DELETE FROM dr_items").rowcount == 20
            assert notices(conn) == ["sqlproxy dry run: DELETE 20 rolled back"]
    assert state(upstream) == before


def test_asyncpg_dry_run_and_preview(guarded: WorkerProcess, upstream: PgCluster, db: str) -> None:
    before = state(upstream)

    async def run() -> None:
        conn = await asyncpg.connect(
            host="127.0.0.1", port=guarded.port, user=APP_USER, password=APP_PASSWORD,
            database=db, ssl=False,
        )  # fmt: skip
        seen: list[str] = []
        conn.add_log_listener(lambda _c, msg: seen.append(msg.message))
        try:
            assert await conn.execute("SET sqlproxy.dry_run = on") == "SET"
            assert await conn.execute("DELETE FROM dr_items WHERE id <= 2") == "DELETE 2"
            assert await conn.execute("DELETE FROM dr_items WHERE id > $1", 17) == "DELETE 3"
            async with conn.transaction():
                await conn.execute("UPDATE dr_items SET name = $1 WHERE id = 1", "t")
            assert await conn.fetchval("SHOW sqlproxy.dry_run") == "on"
            await conn.execute("SET sqlproxy.preview = on")
            rows = await conn.fetch("DELETE FROM dr_items WHERE id >= $1", 11)
            assert len(rows) == 5 and rows[0]["sqlproxy_affected"] == 10
            # Prepared before preview was on (asyncpg's statement cache): rolled back anyway.
            assert await conn.execute("DELETE FROM dr_items WHERE id > $1", 19) == "DELETE 1"
            await asyncio.sleep(0.05)  # notices are delivered from the protocol's callbacks
            assert "sqlproxy dry run: DELETE 2 rolled back" in seen
            assert "sqlproxy dry run: DELETE 3 rolled back" in seen
            assert "sqlproxy dry run: UPDATE 1 rolled back" in seen
        finally:
            await conn.close()

    asyncio.run(run())
    assert state(upstream) == before


def test_guard_dry_run_in_the_config_file(upstream: PgCluster, schema: tuple[object, ...]) -> None:
    proc = launch(databases_toml(upstream), policy=POLICY + "\n[guard]\ndry_run = true\n")
    try:
        with connect(proc, "app", "extended", autocommit=True) as conn:
            assert conn.execute("DELETE FROM dr_items").rowcount == 20
            assert conn.execute("SHOW sqlproxy.dry_run").fetchone() == ("on",)
    finally:
        proc.stop()
    assert state(upstream) == schema
