"""``evaluate(policy, facts, statements) -> Decision``: the one policy decision, shared by the
simple and the extended protocol.

Pure: no I/O, no clock, no session state beyond the facts passed in. What it cannot decide
statically it hands to the guard (``Allow(verify=True)``), and what it cannot decide at all it
denies (fail closed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from proxyworker.analysis import AnalysisError, RelationRef, StatementInfo, StatementKind
from proxyworker.config.policy import DatabasePolicy
from proxyworker.policy.budget import RowBudget
from proxyworker.policy.decision import ALLOW, VERIFY, Allow, Decision, Deny
from proxyworker.policy.network import CompiledRule, compile_rules
from proxyworker.policy.signatures import Signature, active_signatures, first_match
from proxyworker.policy.tables import TableLimits, TableSet
from proxyworker.ratelimit import TokenBuckets

# Statements that cannot change rows or call code: nothing to verify.
_INERT = frozenset({StatementKind.TRANSACTION, StatementKind.SET, StatementKind.CLOSE})


@dataclass(frozen=True, slots=True)
class SessionFacts:
    user: str
    database: str
    search_path: tuple[str, ...] = ("public",)
    """Schemas an unqualified name may resolve to, as the session last set them."""


@dataclass(frozen=True, slots=True)
class Policy:
    limits: TableLimits
    honeytoken_tables: TableSet
    honeytoken_values: tuple[bytes, ...]
    honeytoken_alert: bool
    signatures: tuple[Signature, ...]
    ip_rules: tuple[CompiledRule, ...]
    rate: TokenBuckets | None
    uses_catalog: bool
    """Are tables limited or honeytoken tables named: decisions need the catalog. (Stored,
    not asked of both sets: it is read for every guarded chunk.)"""
    rows_budget: RowBudget | None = None

    @classmethod
    def compile(cls, config: DatabasePolicy) -> Policy:
        tokens = config.honeytokens
        return cls(
            limits=TableLimits(config.table_limits),
            honeytoken_tables=TableSet(tokens.tables),
            # Byte for byte, and as bytea prints it in text format (hex).
            honeytoken_values=tuple(
                form
                for v in tokens.values
                for form in (v.encode(), b"\\x" + v.encode().hex().encode())
            ),
            honeytoken_alert=tokens.action == "alert",
            signatures=active_signatures(
                config.signatures.enabled,
                config.signatures.disable,
                config.signatures.deny,
                limits=bool(config.table_limits),
            ),
            ip_rules=compile_rules(config.ip_rules),
            rows_budget=(
                RowBudget(config.rate_limits.rows_changed_per_minute)
                if config.rate_limits.rows_changed_per_minute
                else None
            ),
            rate=(
                TokenBuckets(config.rate_limits.queries_per_second, config.rate_limits.burst)
                if config.rate_limits.queries_per_second
                else None
            ),
            uses_catalog=bool(config.table_limits) or bool(tokens.tables),
        )


def deny_unparseable(error: AnalysisError) -> Deny:
    return Deny(
        "parse_error",
        "sqlproxy: statement refused: it cannot be analysed",
        detail=str(error),
        hint="The proxy denies what it cannot understand. Check the statement's syntax.",
    )


def _touched(info: StatementInfo) -> frozenset[RelationRef]:
    return info.reads | info.writes | info.ddl_targets


def evaluate(
    policy: Policy,
    facts: SessionFacts,
    statements: Sequence[StatementInfo],
    safe_functions: frozenset[str] | None = None,
) -> Decision:
    """``safe_functions``: built-ins the catalog says cannot write (None: unknown)."""
    alerts: list[str] = []
    verify = False
    count_before: list[str] = []
    path = facts.search_path
    for info in statements:
        signature = first_match(policy.signatures, info) if policy.signatures else None
        if signature is not None:
            return Deny(
                f"signature:{signature.id}",
                f"sqlproxy: statement refused by signature {signature.id}",
                detail=signature.message or signature.doc,
                hint="Ask an administrator if this is needed; the signature can be "
                "disabled in [signatures].",
            )
        if policy.honeytoken_tables:
            for ref in _touched(info):
                if policy.honeytoken_tables.matches(ref.schema, ref.name, path):
                    if policy.honeytoken_alert:
                        alerts.append("honeytoken_table")
                        break
                    return Deny(
                        "honeytoken_table",
                        "sqlproxy: statement refused: it touches a protected table",
                        detail=f"Relation {ref} is a honeytoken.",
                        hint="No application should use this table.",
                    )
        if policy.limits and info.kind not in _INERT:
            for ref in info.truncates | info.drops:
                limit = policy.limits.limit(ref.schema, ref.name, path)
                if limit is not None:
                    count_before.append(str(ref))
            verify = verify or may_change_rows(info, safe_functions)
    if not verify and not count_before and not alerts:
        return ALLOW
    if not count_before and not alerts:
        return VERIFY
    return Allow(verify=True, count_before=tuple(count_before), alerts=tuple(alerts))


def may_change_rows(info: StatementInfo, safe_functions: frozenset[str] | None) -> bool:
    """Could running this change rows anywhere? Anything but a read of relations calling only
    built-ins that cannot write could: writes (triggers, rules and foreign keys fan out),
    functions (which may write), DO, CALL, EXECUTE of a prepared statement, dynamic SQL."""
    for statement in info.statements():
        if statement.kind not in _READS or statement.writes or statement.dynamic_sql:
            return True
    if not info.functions:
        return False
    if safe_functions is None:
        return True
    return not all(f.removeprefix("pg_catalog.") in safe_functions for f in info.functions)


# FETCH and MOVE are not here: they run the cursor's query, and its functions, only then.
_READS = frozenset({StatementKind.SELECT, StatementKind.CLOSE})

__all__ = ["ALLOW", "Decision", "Deny", "Policy", "SessionFacts", "evaluate", "may_change_rows"]
