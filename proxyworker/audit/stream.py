"""Audit events up to the control plane: XADD to the Redis stream, or spool while it is away.

``AuditStream.write`` is the writer of an :class:`~proxyworker.audit.sink.AuditSink`: it gets
batches of JSON lines in emission order. While Redis answers, each batch goes out as one
pipeline of ``XADD fleet.AUDIT_STREAM MAXLEN ~ fleet.STREAM_MAXLEN * data <json>``. The first
failure sends the batch, and every later one, to the local :class:`~proxyworker.audit.spool.Spool`
instead; a replay task waits for Redis to answer again, sends the spool in order, and only
when it is empty do batches go straight to Redis again — so order is kept and nothing is lost
unless the spool is full. A spool left by an earlier run is replayed the same way at start.

Each process spools to ``<state dir>/audit-spool.<worker id>.jsonl`` (:func:`spool_path`).
A spool whose worker id is no longer one of the running processes' (the worker restarted with
fewer processes, or under another id) is an orphan: :func:`replay_orphans`, run by one
process, replays each in order the same way and deletes its file once it is empty. An orphan
another live process holds (a worker of another fleet sharing the directory) is left alone.

Delivery is at least once: a pipeline cut by a lost connection may have added some entries
before the batch was spooled, and a crash in the middle of a replay sends part of the spool
again. Event ids are unique; the ingest side drops duplicates.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
from collections.abc import Collection

import redis.asyncio as aioredis
from prometheus_client import Counter
from redis.exceptions import RedisError

from proxyworker.audit.spool import Spool, SpoolBusy
from proxyworker.config import fleet
from proxyworker.tasks import spawn

log = logging.getLogger(__name__)

STREAMED = Counter("sqlproxy_audit_streamed", "Audit events appended to the Redis stream")

_REPLAY_BATCH = 1000
_MAX_BACKOFF = 1.0
_SPOOL_NAME = re.compile(r"audit-spool\.(.+)\.jsonl")


def spool_path(state_dir: str, worker_id: str) -> str:
    return os.path.join(state_dir, f"audit-spool.{worker_id}.jsonl")


def orphan_spools(state_dir: str, current_ids: Collection[str]) -> list[str]:
    """The spool files in ``state_dir`` of worker ids not in ``current_ids``, by name."""
    found = []
    with os.scandir(state_dir) as entries:
        for entry in entries:
            match = _SPOOL_NAME.fullmatch(entry.name)
            if match and match[1] not in current_ids and entry.is_file(follow_symlinks=False):
                found.append(entry.path)
    return sorted(found)


async def replay_orphans(
    client: aioredis.Redis, state_dir: str, current_ids: Collection[str]
) -> None:
    """Replay every spool in ``state_dir`` whose worker id is not in ``current_ids``, in
    order, waiting for Redis as long as it takes; delete each file once it is replayed. Run
    it as a task and cancel it at shutdown: a spool not fully replayed stays for next time."""
    for path in await asyncio.to_thread(orphan_spools, state_dir, current_ids):
        name = os.path.basename(path)
        try:
            spool = Spool(path, max_bytes=0)  # never appended to
        except SpoolBusy:
            log.info("audit spool of another live process left alone", extra={"file": name})
            continue
        except OSError as exc:
            log.error("cannot open an orphan audit spool: %s", exc, extra={"file": name})
            continue
        log.info(
            "adopting the audit spool of a worker id no longer running",
            extra={"file": name, "bytes": spool.pending},
        )
        try:
            await AuditStream(client, spool).replay_all()
        except BaseException:
            spool.close()
            raise
        # The thread closes the spool itself: a cancellation meanwhile lets it finish.
        await asyncio.to_thread(spool.remove)
        log.info("orphan audit spool replayed and removed", extra={"file": name})


class AuditStream:
    def __init__(self, client: aioredis.Redis, spool: Spool) -> None:
        self._redis = client
        self._spool = spool
        self._lock = asyncio.Lock()
        """Held around every use of the spool, and around a direct XADD: one batch at a
        time, in order (a reconfigured sink can briefly have two drain tasks)."""
        self._replay: asyncio.Task[None] | None = None
        self._last_drop_log = 0.0
        self._dropped_since_log = 0

    @property
    def spooling(self) -> bool:
        return self._replay is not None

    def start(self) -> None:
        """Replay what an earlier run left in the spool (call inside the event loop)."""
        if self._spool.pending:
            log.info("audit spool from an earlier run", extra={"bytes": self._spool.pending})
            self._start_replay()

    async def write(self, lines: list[bytes]) -> None:
        async with self._lock:
            if self._replay is None:
                try:
                    await self._xadd(lines)
                    return
                except (RedisError, OSError) as exc:
                    log.warning(
                        "audit stream unreachable; spooling events locally",
                        extra={"error": str(exc) or type(exc).__name__},
                    )
                    self._start_replay()
            await self._to_spool(lines)

    async def _to_spool(self, lines: list[bytes]) -> None:
        try:
            dropped = await asyncio.to_thread(self._spool.append, lines)
        except OSError as exc:
            dropped = len(lines)
            log.error("audit spool write failed: %s", exc)
        if dropped:
            self._dropped_since_log += dropped
            now = time.monotonic()
            if now - self._last_drop_log > 10:
                log.error(
                    "audit spool full: events dropped",
                    extra={"dropped": self._dropped_since_log, "limit": self._spool.max_bytes},
                )
                self._last_drop_log, self._dropped_since_log = now, 0

    async def _xadd(self, lines: list[bytes]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for line in lines:
            pipe.xadd(
                fleet.AUDIT_STREAM,
                {fleet.STREAM_FIELD: line.rstrip(b"\n")},
                maxlen=fleet.STREAM_MAXLEN,
                approximate=True,
            )
        await pipe.execute()
        STREAMED.inc(len(lines))

    def _start_replay(self) -> None:
        if self._replay is None:
            self._replay = spawn(self._replay_spool(), name="audit spool replay")

    async def _replay_spool(self) -> None:
        await self.replay_all()
        log.info("audit spool replayed; streaming again")

    async def replay_all(self) -> None:
        """Send the spool to Redis in order, waiting for Redis as long as it takes; return
        once the spool is empty."""
        delay = 0.05
        while True:
            try:
                await self._redis.ping()
                while True:
                    async with self._lock:
                        lines, nbytes = self._spool.read()
                        if not lines:
                            # Drained with the lock held: the next batch goes straight out.
                            self._replay = None
                            return
                    for start in range(0, len(lines), _REPLAY_BATCH):
                        await self._xadd(lines[start : start + _REPLAY_BATCH])
                    async with self._lock:
                        await asyncio.to_thread(self._spool.advance, nbytes)
                    delay = 0.05
            except (RedisError, OSError):
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF)

    async def flush(self, timeout: float) -> None:
        """Wait (up to ``timeout``) for a replay in progress to finish, at shutdown."""
        task = self._replay
        if task is not None:
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.shield(task)
            except TimeoutError:
                log.warning("audit spool not fully replayed", extra={"bytes": self._spool.pending})
