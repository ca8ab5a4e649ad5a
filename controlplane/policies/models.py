"""The policy of one database and its history.

Fields mirror ``proxyworker.config.policy.DatabasePolicy`` section by section; ``clean()``
validates each section through the worker's own structs and reports an error on the field
that holds the bad value. ``table_limits`` is a list of ``[pattern, limit]`` pairs because
the first matching pattern wins and PostgreSQL's jsonb does not keep object key order.
Every change is a ``PolicyVersion`` (author, time, the policy as TOML); changes go through
``services.update_policy`` so that none is left unrecorded.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models

from controlplane.databases.models import Database
from proxyworker.config.policy import (
    DatabasePolicy,
    Honeytokens,
    IpRule,
    RateLimits,
    Signatures,
)

_FIELD_MESSAGE = re.compile(r"^`(\w+)`: (.*)$", re.S)
_AT_PATH = re.compile(r"^(.*?) - at `\$([^`]*)`$", re.S)
_FIRST_KEY = re.compile(r"^\.?(\w+)")


def _validate(value: object, type_: type, fields: dict[str, str], default: str) -> Any:
    """``msgspec.convert`` with the error put on the model field that holds the bad key."""
    try:
        return msgspec.convert(value, type_)
    except msgspec.ValidationError as exc:
        message, field = str(exc), default
        located = _AT_PATH.match(message)
        if located:
            message = located.group(1)
            key = _FIRST_KEY.match(located.group(2))
            if key:
                field = fields.get(key.group(1), default)
        named = _FIELD_MESSAGE.match(message)
        if named:
            field = fields.get(named.group(1), field)
            message = named.group(2)
        raise ValidationError({field: message}) from None


def _contains_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_contains_nul(k) or _contains_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_contains_nul(v) for v in value)
    return False


class Policy(models.Model):
    class Action(models.TextChoices):
        BLOCK = "block"
        ALERT = "alert"

    database = models.OneToOneField(Database, on_delete=models.CASCADE, related_name="policy")
    table_limits = models.JSONField(
        default=list,
        blank=True,
        help_text='Ordered [pattern, limit] pairs, e.g. [["users", 100], ["re:^audit_", 0]].',
    )
    honeytoken_tables = models.JSONField(default=list, blank=True)
    honeytoken_values = models.JSONField(default=list, blank=True)
    honeytoken_action = models.CharField(max_length=5, choices=Action.choices, default=Action.BLOCK)
    signatures_enabled = models.BooleanField(default=True)
    signatures_disable = models.JSONField(
        default=list, blank=True, help_text="Ids of default signatures to switch off."
    )
    signatures_deny = models.JSONField(
        default=list,
        blank=True,
        help_text='Custom signatures: [{"id": ..., "functions": [...], "commands": [...]}].',
    )
    ip_rules = models.JSONField(
        default=list,
        blank=True,
        help_text='[{"allow": [...], "deny": [...], "users": [...], "databases": [...]}]',
    )
    rate_queries_per_second = models.FloatField(null=True, blank=True)
    rate_burst = models.FloatField(null=True, blank=True)
    rate_rows_changed_per_minute = models.PositiveIntegerField(
        null=True, blank=True, help_text="Rows a user may change per minute, across transactions."
    )
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "policies"
        ordering = ["database__name"]

    def __str__(self) -> str:
        return f"policy of {self.database.name}"

    # -- the contract ------------------------------------------------------------------------

    def to_contract(self) -> DatabasePolicy:
        """This policy as the worker's struct; raises ValidationError (per field) when invalid."""
        errors: dict[str, list[str]] = {}
        sections: dict[str, Any] = {}

        def check(name: str, thunk: Any) -> None:
            try:
                sections[name] = thunk()
            except ValidationError as exc:
                for field, messages in exc.message_dict.items():
                    errors.setdefault(field, []).extend(messages)

        for field in (
            "table_limits",
            "honeytoken_tables",
            "honeytoken_values",
            "signatures_disable",
            "signatures_deny",
            "ip_rules",
        ):
            if _contains_nul(getattr(self, field)):
                errors.setdefault(field, []).append("Null characters are not allowed.")
        if errors:
            raise ValidationError(errors)
        check("table_limits", self._table_limits)
        check(
            "honeytokens",
            lambda: _validate(
                {
                    "tables": self.honeytoken_tables,
                    "values": self.honeytoken_values,
                    "action": self.honeytoken_action,
                },
                Honeytokens,
                {
                    "tables": "honeytoken_tables",
                    "values": "honeytoken_values",
                    "action": "honeytoken_action",
                },
                "honeytoken_tables",
            ),
        )
        check(
            "signatures",
            lambda: _validate(
                {
                    "enabled": self.signatures_enabled,
                    "disable": self.signatures_disable,
                    "deny": self.signatures_deny,
                },
                Signatures,
                {
                    "enabled": "signatures_enabled",
                    "disable": "signatures_disable",
                    "deny": "signatures_deny",
                },
                "signatures_deny",
            ),
        )
        check("ip_rules", lambda: _validate(self.ip_rules, list[IpRule], {}, "ip_rules"))
        check(
            "rate_limits",
            lambda: _validate(
                {
                    k: v
                    for k, v in (
                        ("queries_per_second", self.rate_queries_per_second),
                        ("burst", self.rate_burst),
                        ("rows_changed_per_minute", self.rate_rows_changed_per_minute),
                    )
                    if v is not None
                },
                RateLimits,
                {
                    "queries_per_second": "rate_queries_per_second",
                    "burst": "rate_burst",
                    "rows_changed_per_minute": "rate_rows_changed_per_minute",
                },
                "rate_queries_per_second",
            ),
        )
        if errors:
            raise ValidationError(errors)
        return DatabasePolicy(**sections)

    def _table_limits(self) -> dict[str, int]:
        pairs = self.table_limits
        shape = 'a list of [pattern, limit] pairs, e.g. [["users", 100]]'
        if not isinstance(pairs, list):
            raise ValidationError({"table_limits": f"Expected {shape}."})
        limits: dict[str, int] = {}
        for pair in pairs:
            if not (
                isinstance(pair, list)
                and len(pair) == 2
                and isinstance(pair[0], str)
                and isinstance(pair[1], int)
                and not isinstance(pair[1], bool)
            ):
                raise ValidationError({"table_limits": f"Expected {shape}, got {pair!r}."})
            if pair[0] in limits:
                raise ValidationError({"table_limits": f"Pattern {pair[0]!r} is given twice."})
            limits[pair[0]] = pair[1]
        _validate({"table_limits": limits}, DatabasePolicy, {}, "table_limits")
        return limits

    def apply_contract(self, policy: DatabasePolicy) -> None:
        """Set every field from the worker's struct (an import, a revert, the API)."""
        self.table_limits = [[k, v] for k, v in policy.table_limits.items()]
        self.honeytoken_tables = list(policy.honeytokens.tables)
        self.honeytoken_values = list(policy.honeytokens.values)
        self.honeytoken_action = policy.honeytokens.action
        self.signatures_enabled = policy.signatures.enabled
        self.signatures_disable = list(policy.signatures.disable)
        self.signatures_deny = msgspec.to_builtins(policy.signatures.deny)
        self.ip_rules = msgspec.to_builtins(policy.ip_rules)
        self.rate_queries_per_second = policy.rate_limits.queries_per_second
        self.rate_burst = policy.rate_limits.burst
        self.rate_rows_changed_per_minute = policy.rate_limits.rows_changed_per_minute

    def clean(self) -> None:
        super().clean()
        self.to_contract()


class PolicyVersion(models.Model):
    """One saved state of a policy: who changed it, when, and the whole policy as TOML."""

    policy = models.ForeignKey(Policy, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    created = models.DateTimeField(auto_now_add=True)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    author_name = models.CharField(
        max_length=200, blank=True, help_text="Who, kept when the user is deleted."
    )
    note = models.CharField(max_length=300, blank=True)
    document = models.TextField(blank=True, help_text="The policy as TOML (docs/policy.md).")

    class Meta:
        ordering = ["policy", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["policy", "number"], name="unique_policy_version")
        ]

    def __str__(self) -> str:
        return f"{self.policy.database.name} v{self.number}"
