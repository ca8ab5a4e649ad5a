"""The frames of ``/api/v1/stream``: one JSON object per WebSocket message, ``type`` naming it.

Each frame is a TypedDict; :func:`parse_client_frame` turns client text into one of the client
frames or raises :class:`FrameError` (answered with an ``error`` frame, the socket stays open).
Server frames are built by the small constructors at the bottom, so every frame the consumer
sends has the shape documented in docs/stream.md. Nothing here does I/O.
"""

from __future__ import annotations

import json
from typing import Any, Literal, NotRequired, TypedDict

StreamName = Literal["audit", "metrics"]
STREAMS: tuple[StreamName, ...] = ("audit", "metrics")
AUDIT_FILTERS = ("database", "user", "decision", "rule", "table")
DECISIONS = ("allow", "deny", "alert")
MAX_FRAME = 64 * 1024
MAX_SQL = 32 * 1024


class FrameError(ValueError):
    """A client frame that cannot be used; ``ref`` echoes its ``id`` when it had one."""

    def __init__(self, message: str, ref: str | None = None) -> None:
        super().__init__(message)
        self.ref = ref


# -- client -> server ------------------------------------------------------------------------


class AuditFilters(TypedDict, total=False):
    database: str
    user: str
    decision: str
    rule: str
    table: str
    """Substring of the normalized statement or the message, case-insensitive."""


class Subscribe(TypedDict):
    type: Literal["subscribe"]
    stream: StreamName
    filters: AuditFilters
    id: NotRequired[str]


class Unsubscribe(TypedDict):
    type: Literal["unsubscribe"]
    stream: StreamName
    id: NotRequired[str]


class QueryStart(TypedDict):
    type: Literal["query.start"]
    id: str
    database: str
    user: str
    """A proxy user of the caller's tenant; the query runs as this user through a worker."""
    password: str
    sql: str
    batch_size: int
    window: int
    """Batches sent ahead of the client's ``query.ack`` (backpressure)."""


class QueryAck(TypedDict):
    type: Literal["query.ack"]
    id: str
    batch: int
    """The last batch number the client has consumed."""


class QueryCancel(TypedDict):
    type: Literal["query.cancel"]
    id: str


ClientFrame = Subscribe | Unsubscribe | QueryStart | QueryAck | QueryCancel


def _text(data: dict[str, Any], key: str, ref: str | None, *, limit: int = 200) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value or len(value) > limit or "\x00" in value:
        raise FrameError(f"{key!r} must be a non-empty string of at most {limit} characters", ref)
    return value


def _int(data: dict[str, Any], key: str, default: int, low: int, high: int, ref: str | None) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise FrameError(f"{key!r} must be an integer from {low} to {high}", ref)
    return value


def _stream(data: dict[str, Any], ref: str | None) -> StreamName:
    stream = data.get("stream")
    if stream == "audit" or stream == "metrics":
        return stream
    raise FrameError(f"'stream' must be one of {', '.join(STREAMS)}", ref)


def _filters(raw: object, ref: str | None) -> AuditFilters:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise FrameError("'filters' must be an object", ref)
    unknown = sorted(set(raw) - set(AUDIT_FILTERS))
    if unknown:
        raise FrameError(f"unknown filter(s): {', '.join(unknown)}", ref)
    filters: AuditFilters = {}
    for key in AUDIT_FILTERS:
        if key in raw and raw[key] not in (None, ""):
            filters[key] = _text(raw, key, ref)  # type: ignore[literal-required]
    if "decision" in filters and filters["decision"] not in DECISIONS:
        raise FrameError(f"'decision' must be one of {', '.join(DECISIONS)}", ref)
    return filters


def parse_client_frame(text: str | None) -> ClientFrame:
    if text is None:
        raise FrameError("frames are JSON text, not binary")
    if len(text) > MAX_FRAME:
        raise FrameError(f"frame larger than {MAX_FRAME} bytes")
    try:
        data = json.loads(text)
    except ValueError:
        raise FrameError("frame is not JSON") from None
    if not isinstance(data, dict):
        raise FrameError("frame must be a JSON object")
    ref = data.get("id") if isinstance(data.get("id"), str) else None
    kind = data.get("type")
    if kind == "subscribe":
        subscribe: Subscribe = {
            "type": "subscribe",
            "stream": _stream(data, ref),
            "filters": _filters(data.get("filters"), ref),
        }
        if ref is not None:
            subscribe["id"] = ref
        return subscribe
    if kind == "unsubscribe":
        unsubscribe: Unsubscribe = {"type": "unsubscribe", "stream": _stream(data, ref)}
        if ref is not None:
            unsubscribe["id"] = ref
        return unsubscribe
    if kind == "query.start":
        return {
            "type": "query.start",
            "id": _text(data, "id", ref, limit=100),
            "database": _text(data, "database", ref, limit=63),
            "user": _text(data, "user", ref, limit=63),
            "password": _text(data, "password", ref, limit=1000),
            "sql": _text(data, "sql", ref, limit=MAX_SQL),
            "batch_size": _int(data, "batch_size", 500, 1, 10_000, ref),
            "window": _int(data, "window", 4, 1, 64, ref),
        }
    if kind == "query.ack":
        return {
            "type": "query.ack",
            "id": _text(data, "id", ref, limit=100),
            "batch": _int(data, "batch", 0, 0, 2**53, ref),
        }
    if kind == "query.cancel":
        return {"type": "query.cancel", "id": _text(data, "id", ref, limit=100)}
    raise FrameError(
        "'type' must be subscribe, unsubscribe, query.start, query.ack or query.cancel", ref
    )


# -- server -> client ------------------------------------------------------------------------


class AuditEventPayload(TypedDict):
    event_id: str
    time: float
    worker: str
    database: str
    user: str
    client: str
    application_name: str
    decision: str
    rule: str | None
    fingerprint: str
    normalized: str
    message: str | None
    duration_ms: float | None
    command_tag: str | None


class AuditEventFrame(TypedDict):
    type: Literal["audit.event"]
    event: AuditEventPayload


class WorkerMetrics(TypedDict):
    worker: str
    alive: bool
    config_version: int | None
    current: bool
    """Enforces the newest published snapshot."""
    connections: int | None
    qps: float | None
    blocks_per_s: float | None
    p50_ms: float | None
    p99_ms: float | None


class FleetTotals(TypedDict):
    qps: float
    blocks_per_s: float
    alerts_per_s: float
    connections: int
    p50_ms: float | None
    p99_ms: float | None


class TenantRates(TypedDict):
    events_per_s: float
    blocks_per_s: float
    alerts_per_s: float
    blocked: int
    """Blocks seen since the subscription (counters for the dashboard)."""
    alerted: int


class MetricsSnapshotFrame(TypedDict):
    type: Literal["metrics.snapshot"]
    time: float
    published_version: int
    workers: list[WorkerMetrics]
    fleet: FleetTotals | None
    """Traffic of the whole fleet: superusers only (workers serve every tenant)."""
    tenant: TenantRates


class QueryColumnsFrame(TypedDict):
    type: Literal["query.columns"]
    id: str
    columns: list[dict[str, str]]


class QueryRowsFrame(TypedDict):
    type: Literal["query.rows"]
    id: str
    batch: int
    rows: list[list[Any]]


class QueryDoneFrame(TypedDict):
    type: Literal["query.done"]
    id: str
    status: Literal["ok", "cancelled", "error"]
    rows: int
    command_tag: str | None
    sqlstate: str | None
    message: str | None


class ErrorFrame(TypedDict):
    type: Literal["error"]
    code: str
    message: str
    ref: str | None


class AckFrame(TypedDict):
    type: Literal["subscribed", "unsubscribed"]
    stream: str
    ref: str | None


ServerFrame = (
    AuditEventFrame
    | MetricsSnapshotFrame
    | QueryColumnsFrame
    | QueryRowsFrame
    | QueryDoneFrame
    | ErrorFrame
    | AckFrame
)


def error(code: str, message: str, ref: str | None = None) -> ErrorFrame:
    return {"type": "error", "code": code, "message": message, "ref": ref}


def matches(event: AuditEventPayload, filters: AuditFilters) -> bool:
    """Whether a live event passes a subscription's filters (the API's semantics)."""
    for key in ("database", "user", "decision", "rule"):
        wanted = filters.get(key)
        if wanted is not None and event[key] != wanted:  # type: ignore[literal-required]
            return False
    table = filters.get("table")
    if table is not None:
        needle = table.lower()
        haystack = f"{event['normalized']}\n{event['message'] or ''}".lower()
        if needle not in haystack:
            return False
    return True
