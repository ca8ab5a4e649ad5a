"""Config down: compile every tenant's state into one snapshot, version it, publish it.

``schedule_publish`` runs ``publish`` once after the current transaction commits (the signals
in ``signals.py`` call it for every change to tenants, databases, proxy users and policies).
``publish`` compiles a snapshot under the next version (stored in the database first, so the
change and its snapshot are never lost) and pushes it to Redis: ``SET`` of
``fleet.SNAPSHOT_KEY`` and ``PUBLISH`` of the version on ``fleet.VERSION_CHANNEL``, in one Lua
script that never replaces a newer snapshot. When Redis is down the change stays committed, the
publication stays pending (``ConfigState.published_version`` behind ``version``) and
``publish_pending`` retries it (Celery beat, and the next change).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterable
from functools import cache

import msgspec
import redis
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from controlplane.databases.models import Database
from controlplane.fleet.models import ConfigState, Heartbeat, Worker
from controlplane.proxyusers.models import ProxyUser
from proxyworker.config import fleet
from proxyworker.config.policy import Audit, DatabasePolicy
from proxyworker.config.schema import Admin, Listen, WorkerConfig

log = logging.getLogger(__name__)

_PUSH_SCRIPT = """
local current = redis.call('GET', KEYS[1])
if current then
  local ok, decoded = pcall(cjson.decode, current)
  if ok and type(decoded) == 'table' and tonumber(decoded['version']) then
    local held = tonumber(decoded['version'])
    if held >= tonumber(ARGV[2]) then
      return held
    end
  end
end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('PUBLISH', KEYS[2], ARGV[2])
return 0
"""


@cache
def _pool(url: str) -> redis.ConnectionPool:
    # A connection left over from before a Redis restart fails once; retry it on a fresh one.
    return redis.ConnectionPool.from_url(
        url,
        socket_connect_timeout=1.0,
        socket_timeout=2.0,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 2),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )


def redis_client() -> redis.Redis:
    """A client for ``settings.REDIS_URL`` with short timeouts: a save never hangs on Redis."""
    return redis.Redis(connection_pool=_pool(settings.REDIS_URL))


# -- compile ---------------------------------------------------------------------------------


def compile_config() -> WorkerConfig:
    """Every tenant's databases (each with its own policy) and users as one worker config.

    A database whose stored policy does not validate is left out (its clients are refused:
    fail closed) and logged; it does not stop the rest of the fleet from getting changes.
    """
    fleet_settings = settings.SQLPROXY_FLEET
    databases = []
    for db in Database.objects.select_related("policy").order_by("name"):
        try:
            policy = db.policy.to_contract() if hasattr(db, "policy") else DatabasePolicy()
        except ValidationError as exc:
            log.error("database %s left out of the snapshot: invalid policy: %s", db.name, exc)
            continue
        databases.append(msgspec.structs.replace(db.to_config(), policy=policy))
    users = []
    for user in ProxyUser.objects.select_related("tenant").prefetch_related(
        "databases", "tenant__databases"
    ):
        entry = user.to_config()
        if entry is not None:
            users.append(entry)
    config = WorkerConfig(
        listen=Listen(host=fleet_settings["listen_host"], port=fleet_settings["listen_port"]),
        admin=Admin(host=fleet_settings["admin_host"], port=fleet_settings["admin_port"]),
        audit=Audit(sample_allowed=fleet_settings["audit_sample_allowed"]),
        users=users,
        databases=databases,
    )
    # Round trip through the schema: the worker will decode exactly this.
    return msgspec.convert(msgspec.to_builtins(config), WorkerConfig)


def _state_for_update() -> ConfigState:
    state, _ = ConfigState.objects.select_for_update().get_or_create(pk=1)
    return state


def compile_snapshot(*, at_least: int = 0) -> fleet.ConfigSnapshot:
    """Compile, and store under the next version unless nothing changed since the last one."""
    with transaction.atomic():
        state = _state_for_update()
        config = compile_config()
        if state.snapshot and state.version >= at_least:
            previous = fleet.decode_snapshot(bytes(state.snapshot))
            if msgspec.json.encode(previous.config) == msgspec.json.encode(config):
                return previous
        state.version = max(state.version, at_least) + 1
        snapshot = fleet.ConfigSnapshot(version=state.version, created=time.time(), config=config)
        state.snapshot = fleet.encode_snapshot(snapshot)
        state.compiled = timezone.now()
        state.save()
    log.info("compiled config snapshot version %d", snapshot.version)
    return snapshot


# -- publish ---------------------------------------------------------------------------------


def _push(snapshot_json: bytes, version: int) -> int:
    """Store and announce; returns the version Redis holds afterwards."""
    held = int(
        redis_client().eval(  # type: ignore[no-untyped-call]
            _PUSH_SCRIPT, 2, fleet.SNAPSHOT_KEY, fleet.VERSION_CHANNEL, snapshot_json, version
        )
    )
    return held or version


def publish_pending() -> int | None:
    """Push the newest stored snapshot if Redis does not have it; returns the version Redis
    holds, or None when Redis could not be reached (the publication stays pending)."""
    state = ConfigState.objects.filter(pk=1).first()
    if state is None or not state.snapshot:
        return None
    try:
        held = _push(bytes(state.snapshot), state.version)
    except redis.RedisError as exc:
        message = f"Redis unreachable, snapshot version {state.version} not published: {exc}"
        log.warning("%s (will retry)", message)
        ConfigState.objects.filter(pk=1).update(last_error=message)
        return None
    if held > state.version:
        # Redis holds a newer version than this database knows (e.g. the database was restored
        # from a backup): continue numbering above it, or workers would ignore every change.
        log.warning("Redis holds snapshot version %d > ours %d: renumbering", held, state.version)
        compile_snapshot(at_least=held)
        return publish_pending()
    ConfigState.objects.filter(pk=1, published_version__lt=state.version).update(
        published_version=state.version, published=timezone.now(), last_error=""
    )
    if held == state.version:
        log.info("published config snapshot version %d", state.version)
    return held


def publish() -> int | None:
    """Compile the current state and push it (see the module docstring)."""
    compile_snapshot()
    return publish_pending()


def _publish_after_commit() -> None:
    try:
        publish()
    except Exception:
        # The change is committed; the beat task retries. Never fail the request over this.
        log.exception("publishing the config snapshot failed (will retry)")


def schedule_publish() -> None:
    """Publish once after the current transaction commits (at once outside a transaction)."""
    connection = transaction.get_connection()
    if connection.in_atomic_block and any(
        func is _publish_after_commit for _, func, _ in connection.run_on_commit
    ):
        return
    transaction.on_commit(_publish_after_commit)


def current_state() -> ConfigState:
    return ConfigState.objects.filter(pk=1).first() or ConfigState(pk=1)


# -- heartbeats ------------------------------------------------------------------------------


def _at(ts: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC)


def record_heartbeats(entries: Iterable[tuple[str, fleet.Heartbeat]]) -> int:
    """Store heartbeats (idempotent by stream entry id) and update each worker's row to its
    newest one; keeps the last ``SQLPROXY_HEARTBEAT_HISTORY`` per worker. Call in a transaction.
    """
    entries = list(entries)
    newest: dict[str, tuple[str, fleet.Heartbeat]] = {}
    for stream_id, beat in entries:
        if beat.worker not in newest or beat.time >= newest[beat.worker][1].time:
            newest[beat.worker] = (stream_id, beat)
    if not newest:
        return 0
    workers: dict[str, Worker] = {}
    for name, (_, beat) in newest.items():
        worker = Worker.objects.select_for_update().filter(worker_id=name).first()
        stats = {
            "started": _at(beat.started),
            "config_version": beat.config_version,
            "connections": beat.connections,
            "queries": beat.queries,
            "denied": beat.denied,
            "alerted": beat.alerted,
            "latency_p50_ms": beat.latency_p50_ms,
            "latency_p99_ms": beat.latency_p99_ms,
        }
        if worker is None:
            worker = Worker.objects.create(worker_id=name, last_heartbeat=_at(beat.time), **stats)
        elif _at(beat.time) >= worker.last_heartbeat:
            for key, value in stats.items():
                setattr(worker, key, value)
            worker.last_heartbeat = _at(beat.time)
            worker.save()
        workers[name] = worker
    rows = [
        Heartbeat(
            stream_id=stream_id,
            worker=workers[beat.worker],
            time=_at(beat.time),
            config_version=beat.config_version,
            connections=beat.connections,
            queries=beat.queries,
            denied=beat.denied,
            alerted=beat.alerted,
            latency_p50_ms=beat.latency_p50_ms,
            latency_p99_ms=beat.latency_p99_ms,
        )
        for stream_id, beat in entries
        if beat.worker in workers
    ]
    Heartbeat.objects.bulk_create(rows, ignore_conflicts=True)
    keep = settings.SQLPROXY_HEARTBEAT_HISTORY
    for worker in workers.values():
        kept = Heartbeat.objects.filter(worker=worker).order_by("-time")
        cutoff = list(kept.values_list("time", flat=True)[keep - 1 : keep])
        if cutoff:
            Heartbeat.objects.filter(worker=worker, time__lt=cutoff[0]).delete()
    return len(rows)
