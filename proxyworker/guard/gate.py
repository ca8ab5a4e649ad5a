"""The per-session decision point: statement text in, what to send the server out.

The session calls ``query`` for a simple Query and ``parse`` for an extended-protocol Parse;
both go through analysis and the one ``evaluate``. The gate turns the Decision into bytes:

- allow: ``None`` (the session forwards the client's own bytes untouched);
- deny: a statement that makes the server raise the refusal, so the error arrives in order
  behind earlier pipelined requests and aborts an open transaction exactly as a real error;
- verify: the client's statement followed by the limit check (see ``checks.py``); the session
  withholds the answers until the check has passed.

It also follows what the session changes that the policy depends on (search_path).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from proxyworker.analysis import (
    AnalysisError,
    StatementInfo,
    analyze,
    split_identifier_list,
)
from proxyworker.guard.catalog import Catalog, Relation
from proxyworker.guard.checks import (
    LimitedTable,
    baseline_sql,
    limit_check_sql,
    limited_tables,
    raise_sql,
)
from proxyworker.guard.static import provably_bounded
from proxyworker.policy.decision import Allow, Decision, Deny
from proxyworker.policy.engine import Policy, SessionFacts, deny_unparseable, evaluate

CATALOG_UNKNOWN = Deny(
    "catalog_unknown",
    "sqlproxy: statement refused: the guard cannot verify it right now",
    detail="The upstream catalog could not be read, so row limits cannot be checked.",
    hint="Retry shortly; the worker reloads the catalog in the background.",
)


NONSTANDARD_STRINGS = Deny(
    "standard_conforming_strings",
    "sqlproxy: statement refused: standard_conforming_strings is off",
    detail="With it off, backslashes change how string literals end, so the proxy could "
    "misread the statement.",
    hint="Keep standard_conforming_strings on (the server default).",
)


@dataclass(slots=True)
class Verdict:
    decision: Decision
    path: str = "read"
    """For metrics: read, static, verified or denied."""
    statements: tuple[StatementInfo, ...] = ()
    check_sql: str | None = None
    """For verify: the DO block to run right after the statement."""
    baseline_sql: str | None = None
    """For verify: the DO block to run before it (once per transaction, it keeps the first)."""


@dataclass(slots=True)
class Gate:
    policy: Policy
    user: str
    database: str
    catalog: Catalog | None = None
    sticky: dict[int, LimitedTable] = field(default_factory=dict)
    search_path: tuple[str, ...] = ("public",)
    _check_sql: str | None = None
    _baseline_sql: str = ""
    _names: dict[tuple[str, str], Relation] = field(default_factory=dict)
    _names_for: Catalog | None = None
    _check_for: Catalog | None = None

    @property
    def active(self) -> bool:
        p = self.policy
        return bool(p.signatures or p.honeytoken_tables or p.limits)

    def decide(self, sql: str) -> Verdict:
        try:
            statements = analyze(sql)
        except AnalysisError as exc:
            return Verdict(deny_unparseable(exc), "denied")
        facts = SessionFacts(self.user, self.database, self._resolved_path())
        safe = self.catalog.safe_functions if self.catalog is not None else None
        decision = evaluate(self.policy, facts, statements, safe)
        if isinstance(decision, Deny):
            return Verdict(decision, "denied", statements)
        self._follow_settings(statements)
        if decision.verify:
            if decision.count_before:
                return Verdict(
                    Deny(
                        "table_limit",
                        "sqlproxy: statement refused by table_limits",
                        detail=f"Emptying or dropping {', '.join(decision.count_before)} "
                        "counts as changing every row, which is over its limit.",
                        hint="Delete in batches within the limit, or ask for a higher limit.",
                    ),
                    "denied",
                    statements,
                )
            check = self._check()
            if check is None:
                return Verdict(CATALOG_UNKNOWN, "denied", statements)
            if self._provably_bounded(statements):
                return Verdict(Allow(alerts=decision.alerts), "static", statements)
            if not check:
                return Verdict(decision, "static", statements)
            return Verdict(decision, "verified", statements, check, self._baseline_sql)
        return Verdict(decision, "read", statements)

    def _provably_bounded(self, statements: tuple[StatementInfo, ...]) -> bool:
        catalog = self.catalog
        assert catalog is not None
        if self._names_for is not catalog:
            self._names = catalog.by_name()
            self._names_for = catalog
        return provably_bounded(
            statements, catalog, self._names, self.policy.limits, self.sticky, self._resolved_path()
        )

    def check_sql(self) -> str | None:
        return self._check() or None

    def baseline(self) -> str | None:
        return self._baseline_sql if self._check() else None

    def _check(self) -> str | None:
        """The limit check for the current catalog; "" when no table is limited."""
        if self.catalog is None:
            return None
        if self._check_for is not self.catalog:
            tables = limited_tables(self.catalog, self.policy.limits, self.sticky)
            self._check_sql = limit_check_sql(tables) if tables else ""
            self._baseline_sql = baseline_sql(tables) if tables else ""
            self._check_for = self.catalog
        return self._check_sql

    def _resolved_path(self) -> tuple[str, ...]:
        return tuple(self.user if s == "$user" else s for s in self.search_path)

    def _follow_settings(self, statements: tuple[StatementInfo, ...]) -> None:
        for info in statements:
            for change in info.settings:
                if change.name == "search_path" and change.value is not None:
                    try:
                        self.search_path = split_identifier_list(change.value)
                    except ValueError:
                        continue
                elif change.name in ("search_path", None) and change.reset:
                    self.search_path = ("$user", "public")


def deny_statement(decision: Deny) -> str:
    return raise_sql(decision.message, decision.detail, decision.hint)


def verify_allowed(decision: Decision) -> bool:
    return isinstance(decision, Allow) and decision.verify
