"""The floor under any Python relay: bytes forwarded both ways on uvloop, nothing else.

No parsing, no pooling, no metrics, no guard: each client gets its own server connection and
every chunk read is written to the other side as is. Whatever the worker costs beyond this
is its own; what this costs is the price of Python and uvloop themselves (a callback per read,
a write per chunk). ``bench/run.py --floor`` runs it beside PgBouncer and the worker, in the
same interleaved rounds. Not a product: authentication passes through to the server.

Run: ``.venv/bin/python bench/floor.py LISTEN_PORT UPSTREAM_PORT``.
"""

from __future__ import annotations

import asyncio
import sys
from typing import cast

import uvloop

HOST = "127.0.0.1"


class _Server(asyncio.Protocol):
    def __init__(self, client: _Client) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # (uvloop's is not a subclass)

    def data_received(self, data: bytes) -> None:
        self.client.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.transport.close()


class _Client(asyncio.Protocol):
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.server: _Server | None = None
        self.early: list[bytes] = []
        self.task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # (uvloop's is not a subclass)
        self.task = asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, server = await loop.create_connection(
                lambda: _Server(self), HOST, self.upstream_port
            )
        except OSError:
            self.transport.close()
            return
        assert server.transport is not None
        for data in self.early:
            server.transport.write(data)
        self.early.clear()
        self.server = server

    def data_received(self, data: bytes) -> None:
        if self.server is None:
            self.early.append(data)
        else:
            assert self.server.transport is not None
            self.server.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.server is not None and self.server.transport is not None:
            self.server.transport.close()


async def _serve(port: int, upstream_port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Client(upstream_port), HOST, port)
    await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(_serve(int(sys.argv[1]), int(sys.argv[2])))
