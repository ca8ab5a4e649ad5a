"""From the ingest to the live streams: after a batch is committed, its audit events and
heartbeats go to Channels groups, and ``events_ingested`` tells other apps (alerts, reports).

``after_ingest`` is the one call the ingest loop makes (``controlplane.audit.ingest``), after
``ingest_batch`` returned — i.e. after the commit — so a socket never shows an event the
database does not have. Events are read back from the database (tenant resolved, text cleaned
exactly as stored). Fan-out is best effort: a channel-layer failure is logged and never stops
the ingest (the history in the database is the record). Delivery to sockets is at least once
(a redelivered stream entry is sent again); the dashboard drops repeats by ``event_id``.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import msgspec
from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.dispatch import Signal

from controlplane.audit.models import AuditEvent
from controlplane.streams.frames import AuditEventPayload
from proxyworker.config import fleet
from proxyworker.config.events import AuditEvent as AuditEventStruct

log = logging.getLogger(__name__)

Entry = tuple[str, dict[bytes, bytes]]

FLEET_GROUP = "sqlproxy.fleet"
UNOWNED_GROUP = "sqlproxy.audit.unowned"

events_ingested = Signal()
"""Sent after a committed batch: ``events`` (stored ``AuditEvent`` rows) and ``structs``
(the decoded contract events by id, e.g. for the rows they changed)."""


def audit_group(tenant_id: int | None) -> str:
    return UNOWNED_GROUP if tenant_id is None else f"sqlproxy.audit.t{tenant_id}"


def payload(event: AuditEvent) -> AuditEventPayload:
    return {
        "event_id": event.event_id,
        "time": event.time.timestamp(),
        "worker": event.worker,
        "database": event.database,
        "user": event.user,
        "client": event.client,
        "application_name": event.application_name,
        "decision": event.decision,
        "rule": event.rule,
        "fingerprint": event.fingerprint,
        "normalized": event.normalized,
        "message": event.message,
        "duration_ms": event.duration_ms,
        "command_tag": event.command_tag,
    }


def heartbeat_payload(beat: fleet.Heartbeat) -> dict[str, Any]:
    return msgspec.to_builtins(beat)  # type: ignore[no-any-return]


def _decode_all(entries: Sequence[Entry], type_: type[Any]) -> list[Any]:
    out = []
    for _, fields in entries:
        data = fields.get(fleet.STREAM_FIELD.encode())
        if data is None:
            continue
        try:
            out.append(msgspec.json.decode(data, type=type_))
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue  # the ingest rejected and logged it
    return out


def after_ingest(audit: Sequence[Entry] = (), heartbeats: Sequence[Entry] = ()) -> None:
    """Fan a committed batch out; never raises (see the module docstring)."""
    try:
        _after_ingest(audit, heartbeats)
    except Exception:
        log.exception("live fan-out of an ingested batch failed (the batch is stored)")


def _after_ingest(audit: Sequence[Entry], heartbeats: Sequence[Entry]) -> None:
    structs = {e.id: e for e in _decode_all(audit, AuditEventStruct)}
    events = list(AuditEvent.objects.filter(event_id__in=list(structs)).order_by("time", "id"))
    beats = _decode_all(heartbeats, fleet.Heartbeat)
    layer = get_channel_layer()
    if layer is not None:
        by_tenant: dict[int | None, list[AuditEventPayload]] = defaultdict(list)
        for event in events:
            by_tenant[event.tenant_id].append(payload(event))
        send = async_to_sync(_send_all)
        send(layer, by_tenant, [heartbeat_payload(b) for b in beats])
    if events:
        events_ingested.send(sender=AuditEvent, events=events, structs=structs)


async def _send_all(
    layer: Any, by_tenant: dict[int | None, list[AuditEventPayload]], beats: list[dict[str, Any]]
) -> None:
    for tenant, payloads in by_tenant.items():
        # "tenant" stays on the server: each consumer re-checks it against its principal.
        message = {"type": "audit.events", "tenant": tenant, "events": payloads}
        await layer.group_send(audit_group(tenant), message)
    if beats:
        await layer.group_send(FLEET_GROUP, {"type": "fleet.heartbeats", "beats": beats})
