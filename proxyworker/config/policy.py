"""Schema of the policy sections of the worker configuration.

Same file as the rest of the worker config (and, later, the control plane's format):
``[table_limits]``, ``[honeytokens]``, ``[signatures]``, ``[[ip_rules]]``, ``[rate_limits]``,
``[audit]`` and ``[guard]``. Validation only: compiled matchers live in ``proxyworker.policy``.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

import msgspec


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


def check_table_pattern(pattern: str) -> None:
    """Raise ValueError for a pattern that cannot be compiled (``re:`` prefix = regex)."""
    if pattern.startswith("re:"):
        try:
            re.compile(pattern[3:])
        except re.error as exc:
            raise ValueError(f"invalid regular expression {pattern[3:]!r}: {exc}") from None
    elif not pattern:
        raise ValueError("empty table pattern")


class Honeytokens(_Section):
    tables: list[str] = msgspec.field(default_factory=list)
    """Any read, write or DDL touching these (patterns as in table_limits)."""
    values: list[str] = msgspec.field(default_factory=list)
    """Poison values: a result row or COPY data carrying one never reaches the client."""
    action: Literal["block", "alert"] = "block"

    def __post_init__(self) -> None:
        for pattern in self.tables:
            try:
                check_table_pattern(pattern)
            except ValueError as exc:
                raise ValueError(f"`tables`: {exc}") from None
        if any(len(v) < 4 for v in self.values):
            raise ValueError("`values`: a honeytoken value needs at least 4 characters")


class CustomSignature(_Section):
    id: str
    functions: list[str] = msgspec.field(default_factory=list)
    """Function names (``name`` or ``schema.name``, ``*`` globs) whose call is denied."""
    commands: list[str] = msgspec.field(default_factory=list)
    """Command tags (``VACUUM``, ``CREATE EXTENSION``...) that are denied."""
    message: str = ""

    def __post_init__(self) -> None:
        if not self.functions and not self.commands:
            raise ValueError("`functions`: a signature needs functions or commands to match")


class Signatures(_Section):
    enabled: bool = True
    """The default set of dangerous functions and commands (docs/policy.md)."""
    disable: list[str] = msgspec.field(default_factory=list)
    """Ids of default signatures to switch off."""
    deny: list[CustomSignature] = msgspec.field(default_factory=list)


class IpRule(_Section):
    allow: list[str] = msgspec.field(default_factory=list)
    deny: list[str] = msgspec.field(default_factory=list)
    users: list[str] = msgspec.field(default_factory=list)
    """Limit the rule to these users (empty: every user)."""
    databases: list[str] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        for key in ("allow", "deny"):
            for net in getattr(self, key):
                try:
                    ipaddress.ip_network(net, strict=False)
                except ValueError as exc:
                    raise ValueError(f"`{key}`: {exc}") from None
        if not self.allow and not self.deny:
            raise ValueError("`allow`: an ip rule needs allow or deny networks")


class RateLimits(_Section):
    queries_per_second: float | None = None
    """Per user; also applied per client address and per database."""
    burst: float | None = None
    """Bucket size; defaults to one second's worth."""
    rows_changed_per_minute: int | None = None
    """A blast-radius budget per user across transactions."""

    def __post_init__(self) -> None:
        for key in ("queries_per_second", "burst", "rows_changed_per_minute"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise ValueError(f"`{key}`: must be positive")


class DatabasePolicy(_Section):
    """The policy sections that may be given per database (``[databases.policy]``); a
    database without its own uses the file's top-level sections. The control plane keeps one
    per database and compiles it here."""

    table_limits: dict[str, int] = msgspec.field(default_factory=dict)
    honeytokens: Honeytokens = msgspec.field(default_factory=Honeytokens)
    signatures: Signatures = msgspec.field(default_factory=Signatures)
    ip_rules: list[IpRule] = msgspec.field(default_factory=list)
    rate_limits: RateLimits = msgspec.field(default_factory=RateLimits)

    def __post_init__(self) -> None:
        for pattern, limit in self.table_limits.items():
            try:
                check_table_pattern(pattern)
            except ValueError as exc:
                raise ValueError(f"`table_limits`: {exc}") from None
            if limit < 0:
                raise ValueError(f"`table_limits`: limit for {pattern!r} must be 0 or more")


class Audit(_Section):
    path: str | None = None
    """JSON lines file for standalone mode; "-" for stdout; none: log only."""
    sample_allowed: float = 0.0
    """Fraction of allowed statements audited (blocked and alerted ones always are)."""
    queue_size: int = 10000

    def __post_init__(self) -> None:
        if not 0.0 <= self.sample_allowed <= 1.0:
            raise ValueError("`sample_allowed`: must be between 0 and 1")


class Guard(_Section):
    dry_run: bool = False
    """Nothing is committed: every write runs and is rolled back (also --dry-run)."""
    catalog_refresh: float = 60.0
    """Seconds between catalog cache refreshes (DDL through the worker refreshes at once)."""
    max_held_bytes: int = 16 * 1024 * 1024
    """Results withheld until a verdict; a statement returning more is denied."""
