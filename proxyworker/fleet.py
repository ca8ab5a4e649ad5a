"""A worker fed by the control plane: config down through Redis, heartbeats up.

The contract (key, channel and stream names, the snapshot envelope, the heartbeat) is
``proxyworker.config.fleet``; this module is the worker's side of it:

- :class:`SnapshotFile` keeps the last good snapshot on disk (``snapshot.json`` in the state
  directory, replaced atomically), so a worker can start while Redis is down.
- :func:`initial_snapshots` lists what to start with: Redis's and the disk's, newest first.
- :class:`ConfigFollower` subscribes to the version channel and swaps the worker to every newer
  valid snapshot (``Worker.apply``: new connections and the next transaction of open sessions
  use it; a transaction in flight finishes under the one it started with). It reconnects with
  backoff and re-reads the key after every (re)subscription, since a publication may have been
  missed; it never goes back to an older version. Until the first snapshot the worker refuses
  every client (``Worker.refusal``): fail closed.
- The follower's subscription also hears the fleet's cancel channel: a CancelRequest that
  another worker could not place (``Worker.cancel_heard``); :func:`cancel_elsewhere` is how
  this worker hands one on (``Worker.cancel_elsewhere``).
- :class:`HeartbeatSender` appends a :class:`~proxyworker.config.fleet.Heartbeat` to the
  heartbeat stream every second. Heartbeats are not spooled: only the newest one matters.

Audit events go up through ``proxyworker.audit.stream``. Nothing here touches client sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from dataclasses import dataclass

import msgspec
import redis.asyncio as aioredis
from prometheus_client import Gauge
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from proxyworker import logs, metrics
from proxyworker.audit.sink import AUDIT_EVENTS
from proxyworker.config import fleet
from proxyworker.config.schema import WorkerConfig
from proxyworker.server import Worker
from proxyworker.tasks import spawn

log = logging.getLogger(__name__)

NO_CONFIGURATION = "sqlproxy: no configuration yet (waiting for the control plane)"

CONFIG_VERSION = Gauge(
    "sqlproxy_config_version",
    "Version of the control plane's snapshot in force (0: none yet)",
    multiprocess_mode="livemin",
)
CONTROL_PLANE_UP = Gauge(
    "sqlproxy_control_plane_connected",
    "1 while subscribed to the control plane's Redis, else 0",
    multiprocess_mode="livemin",
)

_SILENCE_PING = 5.0
"""Seconds without a message after which the subscription is pinged..."""
_SILENCE_DEAD = 15.0
"""...and after which, still unanswered, it is taken for dead and reconnected."""
_MAX_BACKOFF = 1.0
_CANCEL_CHANNEL = fleet.CANCEL_CHANNEL.encode()


def connect(url: str) -> aioredis.Redis:
    """A client that fails fast: the callers have their own retry loops and fallbacks. One
    immediate retry on a connection error replaces a pooled connection that Redis closed
    (after a restart); a timeout is not retried."""
    retry = Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,))
    client: aioredis.Redis = aioredis.Redis.from_url(
        url, socket_timeout=5.0, socket_connect_timeout=2.0, retry=retry
    )
    return client


def redacted(url: str) -> str:
    """The URL without its password, for logs."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    return f"{scheme}{sep}{credentials.split(':', 1)[0]}:***@{host}"


async def cancel_elsewhere(client: aioredis.Redis, pid: int, secret: int) -> bool:
    """Hand a CancelRequest to every worker of the fleet; the one holding the key forwards
    it (``Worker.cancel_heard``). False when Redis could not take it: the cancel is lost, as
    one sent to a server that is down."""
    try:
        await client.publish(fleet.CANCEL_CHANNEL, fleet.encode_cancel(pid, secret))
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning("cannot hand a cancel to the fleet: %s", str(exc) or type(exc).__name__)
        return False
    return True


# --- the last good snapshot on disk -------------------------------------------------------


class SnapshotFile:
    """``snapshot.json`` in the state directory: written after every successful swap (temp
    file, fsync, rename, fsync of the directory), only ever replaced by a newer version (or
    when it is not valid) — the processes of ``--workers N`` share it, under an advisory
    lock."""

    def __init__(self, state_dir: str) -> None:
        self.directory = state_dir
        self.path = os.path.join(state_dir, "snapshot.json")

    def load(self) -> tuple[fleet.ConfigSnapshot, bytes] | None:
        try:
            with open(self.path, "rb") as fh:
                raw = fh.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.error("cannot read the saved snapshot %s: %s", self.path, exc)
            return None
        try:
            return fleet.decode_snapshot(raw), raw
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            log.error("saved snapshot %s is invalid, ignored: %s", self.path, exc)
            return None

    def save(self, raw: bytes, version: int) -> bool:
        os.makedirs(self.directory, exist_ok=True)
        with open(os.path.join(self.directory, "snapshot.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                with open(self.path, "rb") as fh:
                    if fleet.decode_snapshot(fh.read()).version >= version:
                        return False
            except (OSError, msgspec.ValidationError, msgspec.DecodeError):
                pass  # none yet, or not one this worker could use: replace it
            tmp = f"{self.path}.{os.getpid()}.tmp"
            with open(tmp, "wb") as fh:
                fh.write(raw)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
            fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            return True


def _decode(raw: bytes, source: str, keeping: int | None = None) -> fleet.ConfigSnapshot | None:
    try:
        return fleet.decode_snapshot(raw)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        metrics.CONFIG_RELOADS.labels("failed").inc()
        log.error(
            "invalid snapshot from %s ignored (version in force: %s): %s", source, keeping, exc,
            extra={"error": str(exc)},
        )  # fmt: skip
        return None


async def _get_snapshot(client: aioredis.Redis) -> bytes | None:
    raw = await client.get(fleet.SNAPSHOT_KEY)
    return raw.encode() if isinstance(raw, str) else raw


Candidate = tuple[fleet.ConfigSnapshot, bytes, str]
"""A snapshot, its JSON, and where it came from: "redis" or "disk"."""


async def initial_snapshots(
    client: aioredis.Redis, store: SnapshotFile, timeout: float = 3.0
) -> list[Candidate]:
    """The snapshots to start with, newest first: Redis's and the one saved on disk, since
    Redis may be unreachable or (after losing its data) hold an older one."""
    found: list[Candidate] = []
    try:
        async with asyncio.timeout(timeout):
            raw = await _get_snapshot(client)
        if raw is None:
            log.info("no snapshot in Redis yet")
        elif (snapshot := _decode(raw, "redis")) is not None:
            found.append((snapshot, raw, "redis"))
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning("control plane unreachable at start: %s", exc or type(exc).__name__)
    saved = await asyncio.to_thread(store.load)
    if saved is not None:
        found.append((saved[0], saved[1], "disk"))
    return sorted(found, key=lambda c: c[0].version, reverse=True)


# --- following the control plane ----------------------------------------------------------


@dataclass(frozen=True)
class Pinned:
    """Addresses fixed for the process's life: the command line's, else the first config's."""

    listen: tuple[str, int]
    admin: tuple[str, int]


def pin(
    config: WorkerConfig,
    listen: tuple[str, int] | None,
    admin_port: int | None,
    admin_host: str | None = None,
) -> Pinned:
    return Pinned(
        listen or (config.listen.host, config.listen.port),
        (
            admin_host if admin_host is not None else config.admin.host,
            admin_port if admin_port is not None else config.admin.port,
        ),
    )


def effective(config: WorkerConfig, pinned: Pinned, warn: bool = True) -> WorkerConfig:
    """``config`` with the pinned listen and admin addresses (the listening socket is never
    re-bound on a swap; a snapshot that moves it needs a restart)."""
    replace = msgspec.structs.replace
    if warn and (config.listen.host, config.listen.port) != pinned.listen:
        log.warning(
            "listen address changes need a restart; keeping %s:%d", *pinned.listen,
            extra={"snapshot_listen": f"{config.listen.host}:{config.listen.port}"},
        )  # fmt: skip
    listen = replace(config.listen, host=pinned.listen[0], port=pinned.listen[1])
    admin = replace(config.admin, host=pinned.admin[0], port=pinned.admin[1])
    return replace(config, listen=listen, admin=admin)


class ConfigFollower:
    def __init__(
        self,
        worker: Worker,
        client: aioredis.Redis,
        store: SnapshotFile | None,
        pinned: Pinned,
        listen_overridden: bool,
    ) -> None:
        self.worker = worker
        self.version: int | None = None
        """The snapshot version in force (None: none yet, clients are refused)."""
        self._redis = client
        self._store = store
        self._pinned = pinned
        self._listen_overridden = listen_overridden
        self._persisting = asyncio.Lock()
        self._wakeup = asyncio.Event()
        self._rejected = b""  # said once, not again at every reconnect
        self._stopped = False

    def start_with(self, candidates: list[Candidate]) -> None:
        """Enforce the first snapshot found at start that applies, or refuse clients until
        one arrives."""
        self.worker.refusal = NO_CONFIGURATION
        CONFIG_VERSION.set(0)
        for snapshot, raw, source in candidates:
            if self.swap(snapshot, raw, source):
                return
        log.warning("no snapshot to enforce: refusing clients until one arrives")

    def poke(self) -> None:
        """Re-read the snapshot key now (SIGHUP)."""
        self._wakeup.set()

    def stop(self) -> None:
        """Make ``run`` return within a second, besides cancelling its task: a cancellation
        that arrives while the Redis client is connecting can be lost inside it (seen with
        SIGTERM right after start), and the loop would then go on following."""
        self._stopped = True

    async def run(self) -> None:
        delay = 0.1
        down_since: float | None = None
        while not self._stopped:
            pubsub = self._redis.pubsub()
            try:
                await pubsub.subscribe(fleet.VERSION_CHANNEL, fleet.CANCEL_CHANNEL)
                # Subscribed first, then read: nothing published in between is missed.
                await self.refresh()
                CONTROL_PLANE_UP.set(1)
                if down_since is not None:
                    log.info(
                        "control plane reachable again",
                        extra={"down_seconds": round(time.monotonic() - down_since, 3)},
                    )
                    down_since = None
                delay = 0.1
                await self._listen(pubsub)
            except (RedisError, OSError, TimeoutError) as exc:
                CONTROL_PLANE_UP.set(0)
                if down_since is None:
                    down_since = time.monotonic()
                    log.warning(
                        "control plane unreachable; enforcing version %s", self.version,
                        extra={"error": str(exc) or type(exc).__name__},
                    )  # fmt: skip
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            if not self._stopped:
                await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_BACKOFF)

    async def _listen(self, pubsub: aioredis.client.PubSub) -> None:
        heard = time.monotonic()
        pinged = False
        while not self._stopped:
            if self._wakeup.is_set():
                self._wakeup.clear()
                await self.refresh()
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            now = time.monotonic()
            if message is None:
                if now - heard > _SILENCE_DEAD:
                    raise TimeoutError("the subscription stopped answering")
                if now - heard > _SILENCE_PING and not pinged:
                    await pubsub.ping()
                    pinged = True
                continue
            heard, pinged = now, False
            if message["type"] != "message":
                continue  # a pong
            if message["channel"] == _CANCEL_CHANNEL:
                self._heard_cancel(message["data"])
                continue
            try:
                version = int(message["data"])
            except ValueError:
                log.warning("unexpected message on %s: %r", fleet.VERSION_CHANNEL, message["data"])
                version = None
            if version is None or self.version is None or version > self.version:
                await self.refresh()

    def _heard_cancel(self, data: bytes) -> None:
        key = fleet.decode_cancel(data)
        if key is None:
            log.warning("unexpected message on %s: %r", fleet.CANCEL_CHANNEL, data)
            return
        spawn(self.worker.cancel_heard(*key), name="cancel from the fleet")

    async def refresh(self) -> None:
        """Read the snapshot key; swap to it when it is newer than the one in force."""
        raw = await _get_snapshot(self._redis)
        if raw is None or raw == self._rejected:
            return
        snapshot = _decode(raw, "redis", self.version)
        if snapshot is None:
            self._rejected = raw
            return
        if self.version is not None and snapshot.version <= self.version:
            return
        if not self.swap(snapshot, raw):
            self._rejected = raw

    def swap(self, snapshot: fleet.ConfigSnapshot, raw: bytes, source: str = "redis") -> bool:
        """Enforce ``snapshot``; False (and the one in force kept) when it cannot apply."""
        worker = self.worker
        previous = worker.config
        try:
            config = effective(snapshot.config, self._pinned, warn=not self._listen_overridden)
            worker.apply(config)
        except Exception as exc:
            metrics.CONFIG_RELOADS.labels("failed").inc()
            log.error(
                "snapshot %d cannot be applied, keeping version %s: %s",
                snapshot.version, self.version, exc, extra={"error": str(exc)},
            )  # fmt: skip
            return False
        worker.refusal = None
        old, self.version = self.version, snapshot.version
        CONFIG_VERSION.set(snapshot.version)
        metrics.CONFIG_RELOADS.labels("ok").inc()
        log.info(
            "configuration swapped" if old is not None else "configuration loaded",
            extra={
                "version": snapshot.version,
                "previous": old,
                "source": source,
                "since_created_ms": round((time.time() - snapshot.created) * 1000, 1),
            },
        )
        if config.logging != previous.logging:
            logs.setup(config.logging.level, config.logging.format)
        if source != "disk":
            self._persist(raw, snapshot.version)
        return True

    def _persist(self, raw: bytes, version: int) -> None:
        if self._store is None:
            return
        store = self._store

        async def save() -> None:
            async with self._persisting:
                try:
                    if await asyncio.to_thread(store.save, raw, version):
                        log.debug("snapshot saved", extra={"version": version})
                except OSError as exc:
                    log.error("cannot save the snapshot to %s: %s", store.path, exc)

        spawn(save(), name=f"save snapshot {version}")


# --- heartbeats -----------------------------------------------------------------------------


def _total(samples: list[tuple[str, dict[str, str], float]], name: str, **match: str) -> float:
    return sum(
        value
        for sample_name, labels, value in samples
        if sample_name == name and all(labels.get(k) == v for k, v in match.items())
    )


def _samples(metric: object) -> list[tuple[str, dict[str, str], float]]:
    out: list[tuple[str, dict[str, str], float]] = []
    for family in metric.collect():  # type: ignore[attr-defined]
        out.extend((s.name, s.labels, s.value) for s in family.samples)
    return out


def _buckets() -> dict[float, float]:
    """Cumulative query latency counts of this process by upper bound, over all databases."""
    counts: dict[float, float] = {}
    for name, labels, value in _samples(metrics.QUERY_LATENCY):
        if name.endswith("_bucket"):
            bound = float(labels["le"])
            counts[bound] = counts.get(bound, 0.0) + value
    return counts


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Estimate a quantile from cumulative bucket counts, interpolating linearly inside the
    bucket it falls in (as Prometheus's histogram_quantile does). None when empty."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank and count > below:
            if bound == float("inf"):
                return lower
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


class HeartbeatSender:
    def __init__(
        self,
        worker: Worker,
        client: aioredis.Redis,
        follower: ConfigFollower,
        interval: float = 1.0,
    ) -> None:
        self.worker = worker
        self.started = time.time()
        self._redis = client
        self._follower = follower
        self._interval = interval
        self._previous = _buckets()

    def beat(self) -> fleet.Heartbeat:
        metrics.flush()  # the hot path's batched counts
        now = _buckets()
        interval = {b: now[b] - self._previous.get(b, 0.0) for b in now}
        self._previous = now
        p50, p99 = quantile(0.5, interval), quantile(0.99, interval)
        decisions = _samples(AUDIT_EVENTS)
        return fleet.Heartbeat(
            worker=self.worker.id,
            time=time.time(),
            config_version=self._follower.version,
            started=self.started,
            connections=len(self.worker.sessions),
            queries=int(_total(_samples(metrics.QUERIES), "sqlproxy_queries_total")),
            denied=int(_total(decisions, "sqlproxy_audit_events_total", decision="deny")),
            alerted=int(_total(decisions, "sqlproxy_audit_events_total", decision="alert")),
            latency_p50_ms=round(p50 * 1000, 3) if p50 is not None else None,
            latency_p99_ms=round(p99 * 1000, 3) if p99 is not None else None,
        )

    async def run(self) -> None:
        encoder = msgspec.json.Encoder()
        failing = False
        while True:
            await asyncio.sleep(self._interval)
            beat = self.beat()
            try:
                async with asyncio.timeout(self._interval * 2):
                    await self._redis.xadd(
                        fleet.HEARTBEAT_STREAM,
                        {fleet.STREAM_FIELD: encoder.encode(beat)},
                        maxlen=fleet.STREAM_MAXLEN,
                        approximate=True,
                    )
                failing = False
            except (RedisError, OSError, TimeoutError) as exc:
                if not failing:
                    log.warning("heartbeat not sent: %s", exc or type(exc).__name__)
                failing = True
