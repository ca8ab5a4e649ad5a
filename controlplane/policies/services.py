"""Policy changes and the per-database policy TOML.

``update_policy`` is the one way a policy changes (admin, API, imports, reverts): it saves and
records a ``PolicyVersion`` in the same transaction. The TOML is the policy sections of the
worker's file (``[table_limits]``, ``[honeytokens]``, ``[signatures]``, ``[[ip_rules]]``,
``[rate_limits]``), read through ``proxyworker.config.loader`` so that errors carry line and
key, and written with defaults left out.
"""

from __future__ import annotations

import difflib
import tomllib
from typing import Any

import msgspec
import tomli_w
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import transaction

from controlplane.policies.models import Policy, PolicyVersion
from proxyworker.config.loader import ConfigError, loads
from proxyworker.config.policy import DatabasePolicy

POLICY_SECTIONS = ("table_limits", "honeytokens", "signatures", "ip_rules", "rate_limits")


# -- TOML ------------------------------------------------------------------------------------


def _prune(value: Any, default: Any) -> Any:
    """Leave out what equals the default (and None, which TOML cannot hold)."""
    if isinstance(value, dict) and isinstance(default, dict):
        out = {}
        for key, item in value.items():
            if item is None or (key in default and item == default[key]):
                continue
            out[key] = _prune(item, default.get(key))
        return out
    if isinstance(value, list):
        return [_prune_struct(item) for item in value]
    return value


def _prune_struct(item: Any) -> Any:
    if isinstance(item, dict):  # list items (ip rules, custom signatures): drop empty keys
        return {k: v for k, v in item.items() if v not in (None, [], "")}
    return item


def policy_sections(policy: DatabasePolicy) -> dict[str, Any]:
    """The policy as TOML-ready sections, defaults left out."""
    data = msgspec.to_builtins(policy)
    default = msgspec.to_builtins(DatabasePolicy())
    out: dict[str, Any] = {}
    for section in POLICY_SECTIONS:
        pruned = _prune(data[section], default[section])
        if pruned not in ({}, []):
            out[section] = pruned
    return out


def policy_to_toml(policy: DatabasePolicy) -> str:
    return tomli_w.dumps(policy_sections(policy))


def policy_from_toml(text: str, path: str = "policy.toml") -> DatabasePolicy:
    """Read a policy TOML; raises ``ConfigError`` (path, line, key, message)."""
    config = loads(text, path)  # syntax and schema errors, located
    raw = tomllib.loads(text)
    for key in raw:
        if key not in POLICY_SECTIONS:
            line = next(
                (
                    n
                    for n, src in enumerate(text.splitlines(), start=1)
                    if src.strip().lstrip("[").startswith(key)
                ),
                None,
            )
            raise ConfigError(
                path,
                line,
                key,
                f"not a policy section (expected one of {', '.join(POLICY_SECTIONS)})",
            )
    return config.default_policy()


def toml_diff(before: str, after: str, label: str = "policy.toml") -> str:
    return "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True),
            after.splitlines(keepends=True),
            fromfile=f"a/{label}",
            tofile=f"b/{label}",
        )
    )


# -- changes ---------------------------------------------------------------------------------


def _author_name(author: AbstractBaseUser | AnonymousUser | None, via: str) -> str:
    name = author.get_username() if author is not None and author.is_authenticated else ""
    return " ".join(part for part in (name, f"({via})" if via else "") if part)


def update_policy(
    policy: Policy,
    new: DatabasePolicy | None = None,
    *,
    author: AbstractBaseUser | AnonymousUser | None = None,
    via: str = "",
    note: str = "",
) -> PolicyVersion | None:
    """Save ``policy`` (set from ``new`` when given) and record a version if it changed.

    Returns the new version, or None when the policy is unchanged (nothing is recorded).
    """
    if new is not None:
        policy.apply_contract(new)
    document = policy_to_toml(policy.to_contract())
    with transaction.atomic():
        policy.save()
        latest = policy.versions.order_by("-number").first()
        if latest is not None and latest.document == document:
            return None
        return PolicyVersion.objects.create(
            policy=policy,
            number=(latest.number + 1) if latest else 1,
            author=author if author is not None and author.is_authenticated else None,
            author_name=_author_name(author, via),
            note=note[:300],
            document=document,
        )


def revert_policy(
    policy: Policy,
    number: int,
    *,
    author: AbstractBaseUser | AnonymousUser | None = None,
    via: str = "",
) -> PolicyVersion | None:
    """Restore version ``number``; recorded as a new version (history is never rewritten)."""
    version = policy.versions.get(number=number)
    return update_policy(
        policy,
        policy_from_toml(version.document, f"version {number}"),
        author=author,
        via=via,
        note=f"revert to version {number}",
    )


def ensure_policy(database: Any) -> Policy:
    """The database's policy, created (default, recorded as version 1) if it has none."""
    policy, created = Policy.objects.get_or_create(database=database)
    if created:
        update_policy(policy, note="created with the database")
    return policy
