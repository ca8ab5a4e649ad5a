"""Audit ingest (one batch at a time), statistics and retention.

``ingest_batch`` decodes stream entries with the contract's structs, stores audit events and
heartbeats in ONE transaction and returns the entry ids that may be acknowledged: the caller
(``ingest.StreamIngestor``) sends XACK only after this returned, i.e. after the commit.
Inserting is idempotent (``bulk_create(ignore_conflicts=True)`` on the unique ``event_id``),
so an entry delivered twice — a crash between commit and XACK, a claim from a slow consumer —
is stored once. An entry that cannot be decoded is logged and acknowledged (retrying a poison
entry would block the stream forever); nothing is acknowledged when the database fails.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec
from django.db import transaction
from django.db.models import Avg, Count, Max, Q, QuerySet
from django.utils import timezone

from controlplane.audit.models import AuditEvent
from controlplane.databases.models import Database
from controlplane.fleet.services import record_heartbeats
from proxyworker.config import fleet
from proxyworker.config.events import AuditEvent as AuditEventStruct

log = logging.getLogger(__name__)

Entry = tuple[str, dict[bytes, bytes]]
"""A stream entry as redis-py returns it: (entry id, fields)."""

_MAX_ID = AuditEvent._meta.get_field("event_id").max_length or 200
_SHORT_FIELDS = (
    "worker",
    "database",
    "user",
    "client",
    "application_name",
    "rule",
    "fingerprint",
    "command_tag",
)


@dataclass
class IngestResult:
    audit_ids: list[str] = field(default_factory=list)
    """Entries of fleet.AUDIT_STREAM that are stored (or rejected): acknowledge these."""
    heartbeat_ids: list[str] = field(default_factory=list)
    stored: int = 0
    """Events inserted now (not counting duplicates)."""
    duplicates: int = 0
    rejected: int = 0


def _clean(text: str | None, limit: int | None = None) -> str | None:
    if text is None:
        return None
    text = text.replace("\x00", "\ufffd")  # PostgreSQL text cannot hold NUL
    return text[:limit] if limit else text


def _decode(stream: str, entry: Entry, type_: type[Any]) -> Any:
    _, fields = entry
    data = fields.get(fleet.STREAM_FIELD.encode())
    if data is None:
        raise ValueError(f"no {fleet.STREAM_FIELD!r} field")
    return msgspec.json.decode(data, type=type_)


def _rows(rows: dict[str, int] | None) -> dict[str, int] | None:
    if not rows:
        return None
    return {_clean(k, 200) or "": v for k, v in rows.items() if -(2**53) < v < 2**53}


def _event_row(event: AuditEventStruct, tenants: dict[str, int]) -> AuditEvent:
    values: dict[str, Any] = {name: _clean(getattr(event, name), 200) for name in _SHORT_FIELDS}
    return AuditEvent(
        event_id=event.id,
        time=dt.datetime.fromtimestamp(event.time, tz=dt.UTC),
        tenant_id=tenants.get(event.database),
        decision=event.decision,
        normalized=_clean(event.normalized) or "",
        message=_clean(event.message),
        protocol=event.protocol,
        duration_ms=event.duration_ms,
        rows=_rows(getattr(event, "rows", None)),
        **values,
    )


def ingest_batch(audit: Sequence[Entry] = (), heartbeats: Sequence[Entry] = ()) -> IngestResult:
    """Store one batch; see the module docstring. Raises on database errors (nothing to ack)."""
    result = IngestResult()
    events: list[AuditEventStruct] = []
    for entry in audit:
        try:
            event = _decode(fleet.AUDIT_STREAM, entry, AuditEventStruct)
            if not event.id or len(event.id) > _MAX_ID:
                raise ValueError(f"event id must have 1 to {_MAX_ID} characters")
            dt.datetime.fromtimestamp(event.time, tz=dt.UTC)  # in range
        except (
            msgspec.DecodeError,
            msgspec.ValidationError,
            ValueError,
            OverflowError,
            OSError,
        ) as exc:
            log.error("rejected audit entry %s: %s", entry[0], exc)
            result.rejected += 1
        else:
            events.append(event)
        result.audit_ids.append(entry[0])
    beats: list[tuple[str, fleet.Heartbeat]] = []
    for entry in heartbeats:
        try:
            beat = _decode(fleet.HEARTBEAT_STREAM, entry, fleet.Heartbeat)
            for ts in (beat.time, beat.started):
                dt.datetime.fromtimestamp(ts, tz=dt.UTC)  # in range
            if not beat.worker or len(beat.worker) > 200:
                raise ValueError("worker id must have 1 to 200 characters")
            for count in (beat.connections, beat.queries, beat.denied, beat.alerted):
                if not 0 <= count < 2**31:
                    raise ValueError(f"counter out of range: {count}")
            beats.append((entry[0], beat))
        except (
            msgspec.DecodeError,
            msgspec.ValidationError,
            ValueError,
            OverflowError,
            OSError,
        ) as exc:
            log.error("rejected heartbeat entry %s: %s", entry[0], exc)
            result.rejected += 1
        result.heartbeat_ids.append(entry[0])
    unique = {event.id: event for event in events}
    with transaction.atomic():
        if unique:
            names = {event.database for event in unique.values()}
            tenants = dict(Database.objects.filter(name__in=names).values_list("name", "tenant_id"))
            existing = set(
                AuditEvent.objects.filter(event_id__in=unique).values_list("event_id", flat=True)
            )
            AuditEvent.objects.bulk_create(
                [_event_row(event, tenants) for event in unique.values()],
                ignore_conflicts=True,
                batch_size=500,
            )
            result.stored = len(unique) - len(existing)
        result.duplicates = len(events) - result.stored
        record_heartbeats(beats)
    return result


# -- queries ---------------------------------------------------------------------------------


def honeytoken_q() -> Q:
    return Q(rule__startswith="honeytoken")


def statistics(events: QuerySet[AuditEvent], top: int = 10) -> dict[str, Any]:
    """Counts over ``events``: totals, blocks by rule, honeytoken hits, top fingerprints, and
    the same per database and per user."""

    def totals(qs: QuerySet[AuditEvent]) -> dict[str, Any]:
        return qs.aggregate(
            queries=Count("id"),
            allowed=Count("id", filter=Q(decision="allow")),
            denied=Count("id", filter=Q(decision="deny")),
            alerted=Count("id", filter=Q(decision="alert")),
            honeytoken_hits=Count("id", filter=honeytoken_q()),
        )

    blocks = (
        events.filter(decision="deny")
        .values("rule")
        .annotate(count=Count("id"))
        .order_by("-count", "rule")
    )
    fingerprints = (
        events.values("fingerprint")
        .annotate(
            count=Count("id"),
            denied=Count("id", filter=Q(decision="deny")),
            alerted=Count("id", filter=Q(decision="alert")),
            avg_duration_ms=Avg("duration_ms"),
            last_seen=Max("time"),
            normalized=Max("normalized"),
        )
        .order_by("-count", "fingerprint")[:top]
    )

    def grouped(key: str) -> list[dict[str, Any]]:
        return list(
            events.values(key)
            .annotate(
                queries=Count("id"),
                denied=Count("id", filter=Q(decision="deny")),
                alerted=Count("id", filter=Q(decision="alert")),
                honeytoken_hits=Count("id", filter=honeytoken_q()),
            )
            .order_by("-queries", key)[:100]
        )

    return {
        **totals(events),
        "blocks_by_rule": {row["rule"] or "": row["count"] for row in blocks},
        "top_fingerprints": list(fingerprints),
        "by_database": grouped("database"),
        "by_user": grouped("user"),
    }


def purge_expired_events(days: int, batch: int = 10_000) -> int:
    """Delete events older than ``days`` in batches (short transactions); returns the count."""
    cutoff = timezone.now() - dt.timedelta(days=days)
    deleted = 0
    while True:
        ids = list(AuditEvent.objects.filter(time__lt=cutoff).values_list("id", flat=True)[:batch])
        if not ids:
            break
        deleted += AuditEvent.objects.filter(id__in=ids).delete()[0]
    if deleted:
        log.info("deleted %d audit events older than %d days", deleted, days)
    return deleted
