"""asyncpg through a real worker: its statement cache, cursors with Execute row limits
(PortalSuspended), COPY, transactions, errors, concurrency — in both pool modes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from tests.support.worker import APP_PASSWORD, APP_USER, WorkerProcess


def run(
    worker: WorkerProcess, db: str, body: Callable[[asyncpg.Connection], Awaitable[Any]]
) -> Any:
    async def main() -> Any:
        conn = await asyncpg.connect(
            host="127.0.0.1", port=worker.port, user=APP_USER, password=APP_PASSWORD,
            database=db, ssl=False, timeout=10,
        )  # fmt: skip
        try:
            return await asyncio.wait_for(body(conn), 60)
        finally:
            await conn.close()

    return asyncio.run(main())


def test_it_uses_the_statement_cache(worker: WorkerProcess, db: str) -> None:
    async def body(conn: asyncpg.Connection) -> list[int]:
        return [await conn.fetchval("SELECT $1::int * 2", i) for i in range(50)]

    assert run(worker, db, body) == [i * 2 for i in range(50)]


def test_it_prepares_and_reuses_statements(worker: WorkerProcess, db: str) -> None:
    async def body(conn: asyncpg.Connection) -> list[Any]:
        stmt = await conn.prepare("SELECT $1::text || '!' AS shout, $2::int + 1 AS next")
        out = [tuple(await stmt.fetchrow("hi", n)) for n in range(10)]
        assert [a.name for a in stmt.get_attributes()] == ["shout", "next"]
        return out

    assert run(worker, db, body) == [("hi!", n + 1) for n in range(10)]


def test_it_suspends_portals_for_cursors(worker: WorkerProcess, db: str) -> None:
    async def body(conn: asyncpg.Connection) -> list[int]:
        seen: list[int] = []
        async with conn.transaction():
            cur = await conn.cursor("SELECT x FROM generate_series(1, 1000) x")
            while chunk := await cur.fetch(128):  # Execute with a row limit each time
                seen += [r["x"] for r in chunk]
        return seen

    assert run(worker, db, body) == list(range(1, 1001))


def test_it_copies_records_in_and_out(worker: WorkerProcess, db: str) -> None:
    table = f"apg_copy_{db}"

    async def body(conn: asyncpg.Connection) -> list[Any]:
        await conn.execute(f"DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (a int, b text)")
        await conn.copy_records_to_table(table, records=[(i, f"r{i}") for i in range(500)])
        rows = await conn.fetch(f"SELECT a, b FROM {table} ORDER BY a")
        chunks: list[bytes] = []

        async def sink(data: bytes) -> None:
            chunks.append(data)

        await conn.copy_from_query(f"SELECT a FROM {table} WHERE a < 3 ORDER BY a", output=sink)
        await conn.execute(f"DROP TABLE {table}")
        return [len(rows), tuple(rows[499]), b"".join(chunks)]

    assert run(worker, db, body) == [500, (499, "r499"), b"0\n1\n2\n"]


def test_it_rolls_back_failed_transactions(worker: WorkerProcess, db: str) -> None:
    table = f"apg_tx_{db}"

    async def body(conn: asyncpg.Connection) -> Any:
        await conn.execute(
            f"DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (a int primary key)"
        )
        with pytest.raises(asyncpg.UniqueViolationError):
            async with conn.transaction():
                await conn.execute(f"INSERT INTO {table} VALUES (1)")
                await conn.execute(f"INSERT INTO {table} VALUES (1)")
        count = await conn.fetchval(f"SELECT count(*) FROM {table}")
        await conn.execute(f"DROP TABLE {table}")
        return count

    assert run(worker, db, body) == 0


def test_it_serves_a_pool_of_concurrent_clients(worker: WorkerProcess, db: str) -> None:
    async def main() -> list[int]:
        async with asyncpg.create_pool(
            host="127.0.0.1", port=worker.port, user=APP_USER, password=APP_PASSWORD,
            database=db, ssl=False, min_size=5, max_size=10,
        ) as pool:  # fmt: skip
            return list(
                await asyncio.gather(
                    *(pool.fetchval("SELECT $1::int FROM pg_sleep(0.01)", i) for i in range(100))
                )
            )

    assert asyncio.run(main()) == list(range(100))
