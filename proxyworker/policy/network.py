"""IP rules: which client addresses may connect, optionally per user and database.

Rules without users/databases are applied when the connection is accepted, before any byte
is read; the others once the startup packet names the user and database. An address is
refused when an applicable rule denies it, or when applicable rules allow some networks and
none of them holds it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from proxyworker.config.policy import IpRule

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class CompiledRule:
    allow: tuple[Network, ...]
    deny: tuple[Network, ...]
    users: frozenset[str]
    databases: frozenset[str]

    def applies(self, user: str | None, database: str | None) -> bool:
        if user is None:  # before the startup packet: only unconditional rules
            return not self.users and not self.databases
        return (not self.users or user in self.users) and (
            not self.databases or database in self.databases
        )


def compile_rules(rules: Sequence[IpRule]) -> tuple[CompiledRule, ...]:
    return tuple(
        CompiledRule(
            tuple(ipaddress.ip_network(n, strict=False) for n in r.allow),
            tuple(ipaddress.ip_network(n, strict=False) for n in r.deny),
            frozenset(r.users),
            frozenset(r.databases),
        )
        for r in rules
    )


def refused(
    rules: Sequence[CompiledRule], address: str, user: str | None = None, db: str | None = None
) -> bool:
    if not rules:
        return False
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return True  # not an IP address we can judge (fail closed)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    applicable = [r for r in rules if r.applies(user, db)]
    if any(ip in net for r in applicable for net in r.deny):
        return True
    allows = [net for r in applicable for net in r.allow]
    return bool(allows) and not any(ip in net for net in allows)
