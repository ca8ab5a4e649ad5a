"""The fleet contract: how the control plane and the workers talk through Redis.

Config down: the control plane stores a :class:`ConfigSnapshot` (JSON) under
:data:`SNAPSHOT_KEY` and publishes its version on :data:`VERSION_CHANNEL`; a worker that hears a
version newer than the one it enforces reads the key and swaps to it. Events up: workers append
audit events (:class:`~proxyworker.config.events.AuditEvent`) to :data:`AUDIT_STREAM` and
:class:`Heartbeat` records to :data:`HEARTBEAT_STREAM`, one JSON document in the ``data`` field
of each stream entry. Across workers: a CancelRequest that reaches a worker which does not
hold the session goes to every worker on :data:`CANCEL_CHANNEL` (:func:`encode_cancel`), and
the one that holds it forwards it. Nothing here does I/O; both sides import these names.
"""

from __future__ import annotations

import struct

import msgspec

from proxyworker.config.schema import WorkerConfig

SNAPSHOT_KEY = "sqlproxy:config:snapshot"
"""The newest snapshot (JSON of ConfigSnapshot)."""
VERSION_CHANNEL = "sqlproxy:config:version"
"""Pub/sub channel; each message is the new snapshot's version as decimal text."""
CANCEL_CHANNEL = "sqlproxy:cancel"
"""Pub/sub channel among workers; each message is a CancelRequest's key (``encode_cancel``)."""
AUDIT_STREAM = "sqlproxy:audit"
HEARTBEAT_STREAM = "sqlproxy:heartbeats"
STREAM_FIELD = "data"
"""The field of a stream entry that carries the JSON document."""
STREAM_MAXLEN = 1_000_000
"""Approximate cap (XADD MAXLEN ~) so an absent consumer cannot exhaust Redis memory."""


class ConfigSnapshot(msgspec.Struct, kw_only=True):
    version: int
    """Increases with every change; a worker never swaps to an older one."""
    created: float
    """Unix time the control plane compiled it."""
    config: WorkerConfig


class Heartbeat(msgspec.Struct, kw_only=True):
    worker: str
    time: float
    config_version: int | None
    """The snapshot version this worker enforces (None: standalone TOML)."""
    started: float
    connections: int
    """Client connections open now."""
    queries: int
    """Since the worker started (counters: the reader takes differences)."""
    denied: int
    alerted: int
    latency_p50_ms: float | None = None
    """Over the interval since the previous heartbeat (None: no queries in it)."""
    latency_p99_ms: float | None = None


def encode_snapshot(snapshot: ConfigSnapshot) -> bytes:
    return msgspec.json.encode(snapshot)


def decode_snapshot(data: bytes | str) -> ConfigSnapshot:
    """Raises msgspec.ValidationError (with the path of the bad key) or DecodeError."""
    return msgspec.json.decode(data, type=ConfigSnapshot)


_CANCEL_KEY = struct.Struct("!ii")


def encode_cancel(pid: int, secret: int) -> bytes:
    """A CancelRequest's key as the client sent it: two int32, network order."""
    return _CANCEL_KEY.pack(pid, secret)


def decode_cancel(data: bytes) -> tuple[int, int] | None:
    """The key of a message on CANCEL_CHANNEL, or None if it is not one."""
    if len(data) != _CANCEL_KEY.size:
        return None
    pid, secret = _CANCEL_KEY.unpack(data)
    return pid, secret
