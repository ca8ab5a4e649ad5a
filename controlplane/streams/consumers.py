"""The WebSocket consumer behind ``/api/v1/stream``: one per socket.

Authentication happens at the handshake (``principal``); a refusal is an ``error`` frame
(code ``unauthenticated``/``forbidden`` and the reason) followed by close code 4401 or 4403 —
daphne does not carry close reasons, so the reason travels in the frame. Each frame type has
one handler. Every event from a group is re-checked against the socket's principal (refreshed
from the database every few seconds) before it is sent: a revoked token or membership stops
the flow, and a socket is closed (4401/4403) when its principal loses access altogether.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.db import close_old_connections

from controlplane.databases.models import Database
from controlplane.proxyusers.models import ProxyUser
from controlplane.streams import frames, principal
from controlplane.streams.background import spawn
from controlplane.streams.fanout import FLEET_GROUP, UNOWNED_GROUP, audit_group
from controlplane.streams.metrics import Beat, FleetMetrics, published_version, seed
from controlplane.streams.query import QueryRun

log = logging.getLogger(__name__)

METRICS_INTERVAL = 1.0
MAX_QUERIES = 2
"""Queries running at once per socket."""


def _dumps(frame: frames.ServerFrame) -> str:
    import json

    return json.dumps(frame, separators=(",", ":"), default=str)


@database_sync_to_async
def _authenticate(scope: dict[str, Any]) -> principal.Principal:
    close_old_connections()
    return principal.authenticate(scope)


@database_sync_to_async
def _refresh(who: principal.Principal) -> principal.Principal | None:
    return who.refresh()


@database_sync_to_async
def _seed(metrics: FleetMetrics) -> None:
    seed(metrics)


@database_sync_to_async
def _published_version() -> int:
    return published_version()


@database_sync_to_async
def _query_allowed(who: principal.Principal, database: str, user: str) -> str | None:
    """None when ``user`` and ``database`` are the caller's tenant's, else why not."""
    db = Database.objects.filter(name=database).values_list("tenant_id", flat=True).first()
    if db is None or not who.sees(db):
        return f"no database {database!r} in your tenant"
    owner = ProxyUser.objects.filter(name=user).values_list("tenant_id", flat=True).first()
    if owner != db:
        return f"no proxy user {user!r} in the tenant of {database!r}"
    return None


class StreamConsumer(AsyncWebsocketConsumer):
    who: principal.Principal | None = None

    async def connect(self) -> None:
        self.filters: frames.AuditFilters | None = None
        self.metrics: FleetMetrics | None = None
        self.tenant_counts = {"events": 0, "deny": 0, "alert": 0}
        self.tenant_totals = {"deny": 0, "alert": 0}
        self.groups_joined: set[str] = set()
        self.queries: dict[str, QueryRun] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        subprotocol = principal.offered_subprotocol(self.scope)
        try:
            self.who = await _authenticate(self.scope)
        except principal.Refused as refused:
            await self.accept(subprotocol)  # a close code needs an open socket
            await self._refuse(refused.code, refused.reason)
            return
        await self.accept(subprotocol)

    async def _refuse(self, code: int, reason: str) -> None:
        kind = "unauthenticated" if code == principal.CLOSE_UNAUTHENTICATED else "forbidden"
        await self.send_frame(frames.error(kind, reason))
        await self.close(code=code, reason=reason)

    async def disconnect(self, code: int) -> None:
        for run in list(self.queries.values()):
            await run.cancel()
        for task in list(getattr(self, "tasks", ())):
            task.cancel()
        for group in list(getattr(self, "groups_joined", ())):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def send_frame(self, frame: frames.ServerFrame) -> None:
        await self.send(text_data=_dumps(frame))

    async def _current(self) -> principal.Principal | None:
        """The principal, re-checked (at most every few seconds); closes a socket that lost
        access."""
        if self.who is None:
            return None
        fresh = await _refresh(self.who)
        if fresh is None:
            self.who = None
            await self._refuse(principal.CLOSE_FORBIDDEN, "access revoked")
            await self.disconnect(principal.CLOSE_FORBIDDEN)
            return None
        self.who = fresh
        return fresh

    # -- client frames ---------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if self.who is None:
            return
        try:
            frame = frames.parse_client_frame(text_data)
        except frames.FrameError as exc:
            await self.send_frame(frames.error("bad_frame", str(exc), exc.ref))
            return
        if await self._current() is None:
            return
        if frame["type"] == "subscribe":
            await self.on_subscribe(frame)
        elif frame["type"] == "unsubscribe":
            await self.on_unsubscribe(frame)
        elif frame["type"] == "query.start":
            await self.on_query_start(frame)
        elif frame["type"] == "query.ack":
            run = self.queries.get(frame["id"])
            if run is not None:
                await run.ack(frame["batch"])
        elif frame["type"] == "query.cancel":
            run = self.queries.get(frame["id"])
            if run is None:
                await self.send_frame(frames.error("no_query", "no such query", frame["id"]))
            else:
                await run.cancel()

    async def _join(self, group: str) -> None:
        if group not in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
            self.groups_joined.add(group)

    async def _join_audit_groups(self) -> None:
        assert self.who is not None
        for tenant_id in sorted(self.who.tenant_ids):
            await self._join(audit_group(tenant_id))
        if self.who.all_tenants:
            await self._join(UNOWNED_GROUP)

    async def on_subscribe(self, frame: frames.Subscribe) -> None:
        ref = frame.get("id")
        if frame["stream"] == "audit":
            self.filters = frame["filters"]
            await self._join_audit_groups()
        else:
            if self.metrics is None:
                self.metrics = FleetMetrics()
                await _seed(self.metrics)
                await self._join(FLEET_GROUP)
                await self._join_audit_groups()  # the tenant's own block/alert rates
                self.tasks.add(spawn(self._metrics_loop(), name="metrics snapshots"))
        await self.send_frame({"type": "subscribed", "stream": frame["stream"], "ref": ref})

    async def on_unsubscribe(self, frame: frames.Unsubscribe) -> None:
        if frame["stream"] == "audit":
            self.filters = None
        else:
            self.metrics = None  # the loop ends at its next tick
        await self.send_frame({"type": "unsubscribed", "stream": frame["stream"], "ref": None})

    async def on_query_start(self, frame: frames.QueryStart) -> None:
        assert self.who is not None
        ref = frame["id"]
        if ref in self.queries:
            await self.send_frame(frames.error("duplicate_query", "a query with this id runs", ref))
            return
        if len(self.queries) >= MAX_QUERIES:
            await self.send_frame(
                frames.error("too_many_queries", f"at most {MAX_QUERIES} at once", ref)
            )
            return
        why_not = await _query_allowed(self.who, frame["database"], frame["user"])
        if why_not is not None:
            await self.send_frame(frames.error("forbidden", why_not, ref))
            return
        run = QueryRun(
            frame, self.send_frame, application_name=f"sqlproxy-stream:{self.who.username}"
        )
        self.queries[ref] = run

        async def go() -> None:
            try:
                await run.run()
            except Exception:
                log.exception("query %s failed", ref)
                await self.send_frame(frames.error("internal", "the query failed", ref))
            finally:
                self.queries.pop(ref, None)

        self.tasks.add(spawn(go(), name=f"query {ref}"))

    # -- group messages (from the ingest's fan-out) ----------------------------------------

    async def audit_events(self, message: dict[str, Any]) -> None:
        who = await self._current()
        if who is None:
            return
        if not who.sees(message["tenant"]):
            return
        for event in message["events"]:
            decision = event["decision"]
            if self.metrics is not None:
                self.tenant_counts["events"] += 1
                if decision in ("deny", "alert"):
                    self.tenant_counts[decision] += 1
                    self.tenant_totals[decision] += 1
            if self.filters is not None and frames.matches(event, self.filters):
                await self.send_frame({"type": "audit.event", "event": event})

    async def fleet_heartbeats(self, message: dict[str, Any]) -> None:
        if self.metrics is None:
            return
        for data in message["beats"]:
            self.metrics.feed(str(data["worker"]), Beat.from_payload(data))

    # -- metrics ---------------------------------------------------------------------------

    async def _metrics_loop(self) -> None:
        last = time.monotonic()
        while self.metrics is not None:
            await asyncio.sleep(METRICS_INTERVAL)
            metrics = self.metrics
            who = await self._current()
            if metrics is None or who is None:
                return
            metrics.published_version = await _published_version()
            now, elapsed = time.monotonic(), max(time.monotonic() - last, 1e-3)
            last = now
            counts, self.tenant_counts = self.tenant_counts, {"events": 0, "deny": 0, "alert": 0}
            frame: frames.MetricsSnapshotFrame = {
                "type": "metrics.snapshot",
                "time": time.time(),
                "published_version": metrics.published_version,
                "workers": metrics.workers(traffic=who.fleet_traffic),
                "fleet": metrics.totals() if who.fleet_traffic else None,
                "tenant": {
                    "events_per_s": round(counts["events"] / elapsed, 3),
                    "blocks_per_s": round(counts["deny"] / elapsed, 3),
                    "alerts_per_s": round(counts["alert"] / elapsed, 3),
                    "blocked": self.tenant_totals["deny"],
                    "alerted": self.tenant_totals["alert"],
                },
            }
            await self.send_frame(frame)
