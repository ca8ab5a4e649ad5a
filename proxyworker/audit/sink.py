"""Where audit events go: a bounded queue drained by one background task.

The relay only calls ``emit``, which never blocks: when the queue is full the event is counted
in ``sqlproxy_audit_dropped_total`` (and the sink should be made faster or the queue larger).
Standalone workers write JSON lines to a file or stdout; a worker fed by the control plane
appends them to a Redis stream (``audit/stream.py``) behind the same interface: a writer takes
one batch of lines and may be a coroutine function.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import sys
from collections.abc import Awaitable, Callable

import msgspec
from prometheus_client import Counter

from proxyworker.config.events import AuditEvent
from proxyworker.tasks import spawn

log = logging.getLogger(__name__)

AUDIT_EVENTS = Counter("sqlproxy_audit_events", "Audit events by decision", ["decision"])
AUDIT_DROPPED = Counter("sqlproxy_audit_dropped", "Audit events dropped: the queue was full")

Writer = Callable[[list[bytes]], Awaitable[None] | None]


def file_writer(path: str) -> Writer:
    if path == "-":

        def to_stdout(lines: list[bytes]) -> None:
            sys.stdout.buffer.write(b"".join(lines))
            sys.stdout.buffer.flush()

        return to_stdout
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)

    def to_file(lines: list[bytes]) -> None:
        os.write(fd, b"".join(lines))  # one append per batch: lines never interleave

    return to_file


class AuditSink:
    def __init__(self, writer: Writer | None, queue_size: int) -> None:
        self._writer = writer
        self._queue: asyncio.Queue[AuditEvent] = asyncio.Queue(queue_size)
        self._encoder = msgspec.json.Encoder()
        self._task: asyncio.Task[None] | None = None
        self._labels = {d: AUDIT_EVENTS.labels(d) for d in ("allow", "deny", "alert")}

    def emit(self, event: AuditEvent) -> None:
        self._labels[event.decision].inc()
        if self._writer is None:
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            AUDIT_DROPPED.inc()
            return
        if self._task is None:
            self._task = spawn(self._drain(), name="audit writer")

    async def _drain(self) -> None:
        assert self._writer is not None
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty() and len(batch) < 1000:
                batch.append(self._queue.get_nowait())
            lines = [self._encoder.encode(e) + b"\n" for e in batch]
            try:
                written = self._writer(lines)
                if inspect.isawaitable(written):
                    await written
            except OSError as exc:
                AUDIT_DROPPED.inc(len(batch))
                log.error("audit write failed: %s", exc)
            for _ in batch:
                self._queue.task_done()

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until everything queued is written (used at shutdown)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._queue.join()
