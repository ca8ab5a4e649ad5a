"""Events a worker sends up: the audit event (one per decision). Part of the contract with the
control plane, which stores them; the JSON field names are the wire format."""

from __future__ import annotations

from typing import Literal

import msgspec


class AuditEvent(msgspec.Struct, kw_only=True, omit_defaults=True):
    id: str
    """Unique per event (worker id + sequence): the control plane ingests idempotently."""
    time: float
    """Unix time of the decision."""
    worker: str
    database: str
    user: str
    client: str
    application_name: str = ""
    decision: Literal["allow", "deny", "alert"]
    rule: str | None = None
    fingerprint: str = ""
    normalized: str = ""
    """Statement text with every constant replaced by $n: no data values."""
    message: str | None = None
    protocol: Literal["simple", "extended"] = "simple"
    duration_ms: float | None = None
    """From forwarding the request to its ReadyForQuery (None when refused before the server)."""
    command_tag: str | None = None
    rows: dict[str, int] | None = None
    """Rows changed per table ("schema.table": rows updated + deleted) as the guard measured
    them for limited tables, or as the command tag reports them ("" for the statement's
    target when no table is known). None when nothing was measured."""
