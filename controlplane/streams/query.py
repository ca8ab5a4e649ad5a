"""The ``query`` stream: run one statement THROUGH a proxy worker and stream its rows.

The control plane connects to a worker's listen address (``SQLPROXY_STREAM_WORKER``) with
psycopg, as a proxy user of the caller's tenant, with that user's password as the client gives
it (the control plane stores only SCRAM verifiers): every policy of the database applies, and
the worker audits the statement like any other. Rows come in chunks of ``batch_size``
(``cursor.stream``) and go out as ``query.rows`` frames; at most ``window`` batches are sent
ahead of the client's ``query.ack``. While the client is behind, nothing more is read from the
worker, so TCP pushes back on the worker and the server: a slow browser never makes the
control plane buffer a large result. ``cancel`` sends a CancelRequest through the worker (the
worker routes it to the right backend) and ends with ``query.done`` status ``cancelled``.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import decimal
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from django.conf import settings

from controlplane.streams.frames import (
    QueryColumnsFrame,
    QueryDoneFrame,
    QueryRowsFrame,
    QueryStart,
    ServerFrame,
)

log = logging.getLogger(__name__)

Send = Callable[[ServerFrame], Awaitable[None]]
MAX_VALUE_CHARS = 10_000
"""A longer text value is cut (the stream is for looking at results, not exporting them)."""


def jsonable(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return value[:MAX_VALUE_CHARS]
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)[:MAX_VALUE_CHARS]).decode()
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    return str(value)[:MAX_VALUE_CHARS]


def worker_address() -> tuple[str, int]:
    host, _, port = settings.SQLPROXY_STREAM_WORKER.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


class QueryRun:
    def __init__(self, frame: QueryStart, send: Send, *, application_name: str) -> None:
        self.frame = frame
        self.id = frame["id"]
        self._send = send
        self._application_name = application_name
        self._acked = 0
        self._sent = 0
        self._progress = asyncio.Condition()
        self._cancelled = False
        self._conn: psycopg.AsyncConnection[Any] | None = None

    async def ack(self, batch: int) -> None:
        async with self._progress:
            self._acked = max(self._acked, min(batch, self._sent))
            self._progress.notify_all()

    async def cancel(self) -> None:
        self._cancelled = True
        conn = self._conn
        if conn is not None:
            try:
                await conn.cancel_safe(timeout=5.0)
            except Exception as exc:  # the query may be over already
                log.debug("cancel of query %s: %s", self.id, exc)
        async with self._progress:
            self._progress.notify_all()

    async def _wait_for_window(self) -> None:
        async with self._progress:
            await self._progress.wait_for(
                lambda: self._cancelled or self._sent - self._acked < self.frame["window"]
            )

    def _done(self, status: str, rows: int, **kw: Any) -> QueryDoneFrame:
        frame: QueryDoneFrame = {
            "type": "query.done",
            "id": self.id,
            "status": status,  # type: ignore[typeddict-item]
            "rows": rows,
            "command_tag": kw.get("command_tag"),
            "sqlstate": kw.get("sqlstate"),
            "message": kw.get("message"),
        }
        return frame

    async def run(self) -> None:
        host, port = worker_address()
        rows_total = 0
        try:
            self._conn = await psycopg.AsyncConnection.connect(
                host=host,
                port=port,
                dbname=self.frame["database"],
                user=self.frame["user"],
                password=self.frame["password"],
                sslmode=settings.SQLPROXY_STREAM_WORKER_SSLMODE,
                application_name=self._application_name,
                connect_timeout=10,
                autocommit=True,
            )
        except psycopg.Error as exc:
            await self._send(self._done("error", 0, message=f"cannot connect: {exc}".strip()))
            return
        conn = self._conn
        try:
            cursor = conn.cursor()
            batch: list[list[Any]] = []
            columns_sent = False
            stream = cursor.stream(self.frame["sql"], size=self.frame["batch_size"])
            async for row in stream:
                if not columns_sent:
                    await self._send(self._columns(cursor))
                    columns_sent = True
                batch.append([jsonable(v) for v in row])
                if len(batch) >= self.frame["batch_size"]:
                    rows_total += len(batch)
                    await self._flush(batch)
                    batch = []
                    if self._cancelled:
                        break
            if self._cancelled:
                await stream.aclose()  # type: ignore[attr-defined]
                await self._send(self._done("cancelled", rows_total))
                return
            if not columns_sent and cursor.description is not None:
                await self._send(self._columns(cursor))
            if batch:
                rows_total += len(batch)
                await self._flush(batch)
            tag = cursor.statusmessage
            if tag is None and cursor.description is not None:
                tag = f"SELECT {rows_total}"  # a stream's last result has no tag to read
            await self._send(self._done("ok", rows_total, command_tag=tag))
        except psycopg.errors.QueryCanceled as exc:
            status = "cancelled" if self._cancelled else "error"
            await self._send(
                self._done(status, rows_total, sqlstate=exc.sqlstate, message=str(exc))
            )
        except psycopg.Error as exc:
            await self._send(
                self._done("error", rows_total, sqlstate=exc.sqlstate, message=str(exc).strip())
            )
        finally:
            await conn.close()

    def _columns(self, cursor: psycopg.AsyncCursor[Any]) -> QueryColumnsFrame:
        description = cursor.description or []
        return {
            "type": "query.columns",
            "id": self.id,
            "columns": [{"name": c.name, "type": str(c.type_display)} for c in description],
        }

    async def _flush(self, batch: list[list[Any]]) -> None:
        await self._wait_for_window()
        if self._cancelled:
            return
        self._sent += 1
        frame: QueryRowsFrame = {
            "type": "query.rows",
            "id": self.id,
            "batch": self._sent,
            "rows": batch,
        }
        await self._send(frame)
