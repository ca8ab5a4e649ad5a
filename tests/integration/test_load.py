"""Many clients at once through one worker process."""

from __future__ import annotations

import asyncio
import resource

import asyncpg

from tests.support.worker import APP_PASSWORD, APP_USER, WorkerProcess

CLIENTS = 1000


def test_it_serves_1000_concurrent_clients_in_transaction_mode(worker: WorkerProcess) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4096)), hard))
    all_connected = asyncio.Event()
    connected = 0

    async def client(i: int) -> int:
        nonlocal connected
        conn = await asyncpg.connect(
            host="127.0.0.1", port=worker.port, user=APP_USER, password=APP_PASSWORD,
            database="app_tx", ssl=False, timeout=60, statement_cache_size=0,
        )  # fmt: skip
        try:
            connected += 1
            if connected == CLIENTS:
                all_connected.set()
            await all_connected.wait()  # every client is connected at the same time
            value = await conn.fetchval("SELECT $1::int + 1", i)
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock_shared(1)")
            return int(value)
        finally:
            await conn.close()

    async def main() -> list[int]:
        clients = asyncio.gather(*(client(i) for i in range(CLIENTS)))
        return list(await asyncio.wait_for(clients, 120))

    assert asyncio.run(main()) == [i + 1 for i in range(CLIENTS)]
    status, text = worker.http("/metrics")
    assert status == 200
    servers = [
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith('sqlproxy_server_connections{database="app_tx"}')
    ]
    assert servers and servers[0] <= 20  # 1,000 clients shared the pool of 20
