"""The worker's operations endpoint: /metrics (Prometheus), /healthz and /readyz.

A deliberately tiny HTTP/1.0 responder on asyncio streams: three GET routes, no keep-alive,
request heads capped at 8 KiB. It never touches client sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import Awaitable, Callable

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

from proxyworker import metrics

ReadyCheck = Callable[[], Awaitable[dict[str, str]]]


def _registry() -> CollectorRegistry:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return REGISTRY
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return registry


async def serve(host: str, port: int, ready: ReadyCheck) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(10):
                head = await reader.readuntil(b"\r\n\r\n")
                status, ctype, body = await _route(head[:8192], ready)
                writer.write(
                    f"HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, host, port)


async def _route(head: bytes, ready: ReadyCheck) -> tuple[str, str, bytes]:
    parts = head.split(b" ", 2)
    if len(parts) < 3 or parts[0] != b"GET":
        return "405 Method Not Allowed", "text/plain", b"only GET\n"
    path = parts[1].split(b"?")[0]
    if path == b"/metrics":
        metrics.flush()
        return "200 OK", CONTENT_TYPE_LATEST, generate_latest(_registry())
    if path == b"/healthz":
        return "200 OK", "text/plain", b"ok\n"
    if path == b"/readyz":
        results = await ready()
        ok = bool(results) and all(v == "ok" for v in results.values())
        body = json.dumps({"ready": ok, "databases": results}).encode() + b"\n"
        return ("200 OK" if ok else "503 Service Unavailable"), "application/json", body
    return "404 Not Found", "text/plain", b"not found\n"
