"""The closed set of decisions the policy engine returns. Protocol code acts on these and
never looks inside rules."""

from __future__ import annotations

from dataclasses import dataclass

DENIED = "42501"  # insufficient_privilege: every policy refusal


@dataclass(frozen=True, slots=True)
class Allow:
    verify: bool = False
    """Run under the guard: the server's counters decide before anything is released."""
    count_before: tuple[str, ...] = ()
    """Limited tables the statement empties or drops: their rows count as changed."""
    alerts: tuple[str, ...] = ()
    """Rules that matched with action "alert": allowed, but audited and alerted."""


@dataclass(frozen=True, slots=True)
class Deny:
    rule: str
    """Which rule refused, e.g. "signature:server-file-access", "honeytoken_table"."""
    message: str
    detail: str | None = None
    hint: str | None = None
    sqlstate: str = DENIED


Decision = Allow | Deny

ALLOW = Allow()
VERIFY = Allow(verify=True)
