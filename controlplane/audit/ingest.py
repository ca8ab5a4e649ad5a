"""The ingest loop: Redis Streams (audit events, heartbeats) into the database.

One consumer group (``GROUP``) over ``fleet.AUDIT_STREAM`` and ``fleet.HEARTBEAT_STREAM``; any
number of ``manage.py ingest`` processes share the work. Each round:

1. entries of this consumer still pending (after a restart under the same name) are read again,
   entries of consumers silent for ``claim_idle`` seconds are claimed (XAUTOCLAIM), then new
   ones are read (XREADGROUP, blocking up to ``block_ms``);
2. ``services.ingest_batch`` stores them in one transaction;
3. only then are they acknowledged (XACK). A crash in between redelivers them, and the unique
   event id makes the second insert a no-op.

Redis or database outages are logged and retried with a capped backoff; the loop never exits
on them. If Redis lost the group (a restart without persistence), it is created again.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable

import redis
from django.db import DatabaseError, close_old_connections

from controlplane.audit.services import Entry, IngestResult, ingest_batch
from controlplane.streams.fanout import after_ingest
from proxyworker.config import fleet

log = logging.getLogger(__name__)

GROUP = "sqlproxy-controlplane"
STREAMS = (fleet.AUDIT_STREAM, fleet.HEARTBEAT_STREAM)


def default_consumer_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class StreamIngestor:
    def __init__(
        self,
        client: redis.Redis,
        consumer: str | None = None,
        *,
        batch_size: int = 500,
        block_ms: int = 1000,
        claim_idle: float = 60.0,
    ) -> None:
        self.client = client
        self.consumer = consumer or default_consumer_name()
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.claim_idle_ms = int(claim_idle * 1000)
        self._groups_ready = False
        self._own_pending_done = False

    def ensure_groups(self) -> None:
        for stream in STREAMS:
            try:
                self.client.xgroup_create(stream, GROUP, id="0", mkstream=True)
                log.info("created consumer group %s on %s", GROUP, stream)
            except redis.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._groups_ready = True

    def _read(self) -> dict[str, list[Entry]]:
        batches: dict[str, list[Entry]] = {stream: [] for stream in STREAMS}
        if not self._own_pending_done:
            # Our own unacknowledged entries (we crashed under this name before).
            reply = self.client.xreadgroup(
                GROUP, self.consumer, dict.fromkeys(STREAMS, "0"), count=self.batch_size
            )
            for stream, entries in reply or []:
                batches[_text(stream)] += [(_text(i), f) for i, f in entries if f is not None]
            if any(batches.values()):
                return batches
            self._own_pending_done = True
        for stream in STREAMS:
            claimed = self.client.xautoclaim(
                stream, GROUP, self.consumer, self.claim_idle_ms, "0-0", count=self.batch_size
            )
            entries = claimed[1]
            if entries:
                log.warning(
                    "claimed %d pending entries of %s from idle consumers", len(entries), stream
                )
                batches[stream] += [(_text(i), f) for i, f in entries if f is not None]
        if any(batches.values()):
            return batches
        reply = self.client.xreadgroup(
            GROUP,
            self.consumer,
            dict.fromkeys(STREAMS, ">"),
            count=self.batch_size,
            block=self.block_ms,
        )
        for stream, entries in reply or []:
            batches[_text(stream)] += [(_text(i), f) for i, f in entries if f is not None]
        return batches

    def run_once(self) -> IngestResult:
        """Read, store, acknowledge one batch. Raises on Redis or database errors."""
        if not self._groups_ready:
            self.ensure_groups()
        try:
            batches = self._read()
        except redis.ResponseError as exc:
            if "NOGROUP" in str(exc):
                self._groups_ready = False
            raise
        audit, beats = batches[fleet.AUDIT_STREAM], batches[fleet.HEARTBEAT_STREAM]
        if not audit and not beats:
            return IngestResult()
        try:
            result = ingest_batch(audit, beats)  # committed when it returns
        except Exception:
            self._own_pending_done = False  # read what we hold again next round
            raise
        after_ingest(audit, beats)  # live streams and alerts; never raises
        if result.audit_ids:
            self.client.xack(fleet.AUDIT_STREAM, GROUP, *result.audit_ids)
        if result.heartbeat_ids:
            self.client.xack(fleet.HEARTBEAT_STREAM, GROUP, *result.heartbeat_ids)
        if result.stored or result.duplicates or result.rejected:
            log.info(
                "ingested %d audit events (%d duplicates, %d rejected), %d heartbeats",
                result.stored,
                result.duplicates,
                result.rejected,
                len(result.heartbeat_ids),
            )
        return result

    def run_forever(self, should_stop: Callable[[], bool] = lambda: False) -> None:
        delay = 0.5
        while not should_stop():
            try:
                close_old_connections()
                self.run_once()
                delay = 0.5
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                log.warning("Redis unavailable (%s); retrying in %.1fs", exc, delay)
            except redis.ResponseError as exc:
                log.warning("Redis error (%s); retrying in %.1fs", exc, delay)
            except DatabaseError as exc:
                log.error(
                    "database error, nothing acknowledged (%s); retrying in %.1fs", exc, delay
                )
            else:
                continue
            time.sleep(delay)
            delay = min(delay * 2, 10.0)
