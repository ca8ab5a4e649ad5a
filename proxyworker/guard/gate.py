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

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from proxyworker import clocks
from proxyworker.analysis import (
    AnalysisError,
    RelationRef,
    StatementInfo,
    StatementKind,
    analyze,
    split_identifier_list,
)
from proxyworker.analysis.shapes import ShapeCache, fixed_runs, literal_invariant
from proxyworker.guard.catalog import COPY_PROGRAM, COPY_SERVER_FILE, Catalog, Relation
from proxyworker.guard.checks import (
    GUARD_SQLSTATE,
    RATE_SQLSTATE,
    LimitedTable,
    baseline_sql,
    limit_check_sql,
    limited_tables,
    raise_sql,
)
from proxyworker.guard.rewrite import Checks
from proxyworker.guard.static import provably_bounded, resolve
from proxyworker.policy.decision import Allow, Decision, Deny
from proxyworker.policy.engine import (
    Policy,
    SessionFacts,
    deny_unparseable,
    evaluate,
    may_change_rows,
)

CATALOG_UNKNOWN: Final = Deny(
    "catalog_unknown",
    "sqlproxy: statement refused: the guard cannot verify it right now",
    detail="The upstream catalog could not be read, so row limits cannot be checked.",
    hint="Retry shortly; the worker reloads the catalog in the background.",
)


NONSTANDARD_STRINGS: Final = Deny(
    "standard_conforming_strings",
    "sqlproxy: statement refused: standard_conforming_strings is off",
    detail="With it off, backslashes change how string literals end, so the proxy could "
    "misread the statement.",
    hint="Keep standard_conforming_strings on (the server default).",
)


_INERT: Final = (StatementKind.TRANSACTION, StatementKind.SET, StatementKind.CLOSE)

NOT_UTF8: Final = Deny("encoding", "sqlproxy: statement refused: text is not valid UTF-8")

MAX_VERDICTS: Final = 1024
"""Remembered verdicts per session (texts and shapes); all are dropped when it is full."""

_CHANGES_GATE: Final = (StatementKind.DDL, StatementKind.UTILITY)


def _reusable(verdict: Verdict) -> bool:
    decision = verdict.decision
    if verdict.path not in ("read", "static") or not isinstance(decision, Allow):
        return False
    if decision.alerts or decision.count_before:
        return False
    return all(i.kind not in _CHANGES_GATE and not i.settings for i in verdict.statements)


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
    own_text: bool = True
    """False when the verdict was made for another text of the same shape (``decide_bytes``):
    ``statements`` then carry that text, so whoever rebuilds a query from statement texts
    must analyse this one (``Gate.statements``)."""
    switches: bool = field(init=False, default=False)
    """Could a statement be SET/RESET/SHOW of the worker's own ``sqlproxy.*`` switches?
    Computed once per verdict, so a remembered one answers without looking again."""
    plain_query: bool = field(init=False, default=False)
    """Does it let a Query through as it is, with nothing to do: allowed, nothing to check
    or alert, none of the worker's switches, a write only when proven bounded (static)?
    (``Guarded._remembered_plain``; computed once, as ``switches``.)"""
    plain_parse: bool = field(init=False, default=False)
    """The same for a Parse, whose writes are always checked."""
    static: bool = field(init=False, default=False)
    """``path == "static"``, computed once (compiled, comparing strings is a call)."""

    def __post_init__(self) -> None:
        self.static = self.path == "static"
        self.switches = any(
            i.kind is StatementKind.SET or i.command == "SHOW" for i in self.statements
        )
        decision = self.decision
        if isinstance(decision, Allow) and not decision.alerts:
            plain = not self.switches and self.check_sql is None
            self.plain_parse = plain and not decision.verify
            self.plain_query = plain and (not decision.verify or self.static)


@dataclass(slots=True)
class Gate:
    policy: Policy
    user: str
    database: str
    catalog: Catalog | None = None
    sticky: dict[int, LimitedTable] = field(default_factory=dict)
    search_path: tuple[str, ...] = ("public",)
    _checks: tuple[str, str] = ("", "")
    _ddl_at: float = 0.0
    ddl_pending: bool = False
    """DDL went through in the current transaction: no static path until the catalog has
    been reloaded after it ended (another connection sees the DDL only once committed)."""
    _baseline_sql: str = ""
    _names: dict[tuple[str, str], Relation] = field(default_factory=dict)
    _names_for: Catalog | None = None
    _check_for: Catalog | None = None
    _tables: list[LimitedTable] = field(default_factory=list)
    allowance: int | None = None
    """Rows the user's rows_changed_per_minute budget allows the transaction (the session
    sets it before each decision; None: no budget)."""
    _path_for: tuple[str, ...] = ()
    _path: tuple[str, ...] = ()
    _verdicts: ShapeCache[Verdict] = field(default_factory=lambda: ShapeCache(MAX_VERDICTS))
    """Remembered verdicts: for the text decided, and for other texts of its shape."""
    # Its lookups, bound once (compiled, a method of a C type called by name is looked up on
    # every call); each answers only when ``remembered_usable()`` is true. ``find(raw)``: the
    # remembered verdict for a text; ``find_in(data, start, end)``: for the text
    # ``data[start:end]`` where it lies inside a message; ``find_query(data)``: for the text of
    # the Query message ``data`` starts with. (The text of another verdict's shape differs
    # only in ASCII digits: valid UTF-8 too.)
    find: Callable[[bytes], Verdict | None] = field(init=False)
    find_in: Callable[[bytes, int, int], Verdict | None] = field(init=False)
    find_query: Callable[[bytes], Verdict | None] = field(init=False)
    # What they were decided under (``_expire_verdicts``); the count of tables held limited
    # stands for ``sticky``, which only grows. (Fields of the gate: compared on every lookup.)
    _made_policy: Policy | None = None
    _made_catalog: Catalog | None = None
    _made_path: tuple[str, ...] = ()
    _made_sticky: int = -1

    def __post_init__(self) -> None:
        verdicts = self._verdicts
        self.find, self.find_in, self.find_query = (
            verdicts.find,
            verdicts.find_in,
            verdicts.find_query,
        )

    @property
    def active(self) -> bool:
        p = self.policy
        return bool(p.signatures or p.honeytoken_tables or p.limits or p.rows_budget)

    def decide_bytes(self, raw: bytes, autocommit: bool = False) -> Verdict:
        """``decide`` for the text as the client sent it (UTF-8), remembering verdicts.

        A verdict is remembered only when deciding the text again could not come out
        differently or change the gate: allowed without verification or proven bounded,
        no alerts, no settings, no DDL. It is found again by the same text and — when the
        analysis holds for every text of its shape (``shapes.literal_invariant``) — by a
        text that differs only in the digits of its literals (``shapes.ShapeCache``).
        Remembered verdicts are dropped whenever what they were decided under changes: the
        policy, the catalog, the search_path, the tables held limited; and none are used
        while DDL has made the catalog stale.
        """
        found = self.remembered(raw)
        if found is not None:
            return found
        catalog = self.catalog
        usable = not self.ddl_pending and (catalog is None or catalog.loaded_at > self._ddl_at)
        try:
            sql = raw.decode()
        except UnicodeDecodeError:
            return Verdict(NOT_UTF8, "denied")
        verdict = self.decide(sql, autocommit)
        if usable and _reusable(verdict):
            self._expire_verdicts()  # deciding may have added tables held limited
            if literal_invariant(verdict.statements):
                elsewhere = dataclasses.replace(verdict, own_text=False)
                self._verdicts.put(raw, verdict, fixed_runs(raw), elsewhere)
            else:
                self._verdicts.put(raw, verdict, None)
        return verdict

    def remembered(self, raw: bytes) -> Verdict | None:
        """The remembered verdict for this text (see ``decide_bytes``), if there is one and
        it may be used now; nothing is decided."""
        return self.find(raw) if self.remembered_usable() else None

    def remembered_usable(self) -> bool:
        """May remembered verdicts be used now (``find`` and the other lookups)? Not while
        DDL has made the catalog stale; they are dropped first if what they were decided
        under changed."""
        catalog = self.catalog
        if self.ddl_pending or (catalog is not None and catalog.loaded_at <= self._ddl_at):
            return False
        if not (
            self._made_path is self.search_path
            and self._made_catalog is catalog
            and self._made_policy is self.policy
            and self._made_sticky == len(self.sticky)
        ):
            self._expire_verdicts()
        return True

    def _expire_verdicts(self) -> None:
        """Drop the remembered verdicts if what they were decided under changed (an equal
        search_path set again is no change), and note what they are decided under now."""
        if not (
            self._made_policy is self.policy
            and self._made_catalog is self.catalog
            and self._made_path == self.search_path
            and self._made_sticky == len(self.sticky)
        ):
            self._verdicts.clear()
        self._made_policy, self._made_catalog = self.policy, self.catalog
        self._made_path, self._made_sticky = self.search_path, len(self.sticky)

    def statements(self, verdict: Verdict, sql: str) -> tuple[StatementInfo, ...]:
        """The verdict's statements with their own text (see ``Verdict.own_text``)."""
        return verdict.statements if verdict.own_text else analyze(sql)

    def forget(self) -> None:
        """Drop the remembered verdicts."""
        self._verdicts.clear()

    def decide(self, sql: str, autocommit: bool = False) -> Verdict:
        """``autocommit``: the server is outside a transaction block, so the statement's
        own implicit transaction commits right after it."""
        try:
            statements = analyze(sql)
        except AnalysisError as exc:
            return Verdict(deny_unparseable(exc), "denied")
        verify = False
        count_before: list[str] = []
        alerts: list[str] = []
        for info in statements:
            # Each statement under the search_path the ones before it set.
            facts = SessionFacts(self.user, self.database, self._resolved_path())
            seen = self._behind_calls(info)
            decision = evaluate(self.policy, facts, (seen,), self._safe_functions())
            if isinstance(decision, Deny):
                return Verdict(decision, "denied", statements)
            verify = verify or decision.verify or self._reads_code(info)
            count_before += decision.count_before
            alerts += decision.alerts
            self._follow_settings((info,))
        if any(i.kind in (StatementKind.DDL, StatementKind.UTILITY) for i in statements):
            self.ddl_pending = True  # the catalog is stale until it is reloaded after commit
        allow = Allow(verify=verify, count_before=tuple(count_before), alerts=tuple(alerts))
        if not verify or not self.policy.limits:
            return Verdict(allow, "read", statements)
        if count_before:
            return Verdict(
                Deny(
                    "table_limit",
                    "sqlproxy: statement refused by table_limits",
                    detail=f"Emptying or dropping {', '.join(count_before)} "
                    "counts as changing every row, which is over its limit.",
                    hint="Delete in batches within the limit, or ask for a higher limit.",
                ),
                "denied",
                statements,
            )
        check = self._check(autocommit)
        if check is None:
            return Verdict(CATALOG_UNKNOWN, "denied", statements)
        if not check or self._provably_bounded(statements):
            return Verdict(allow, "static", statements)
        return Verdict(allow, "verified", statements, check, self._baseline_sql)

    def _behind_calls(self, info: StatementInfo) -> StatementInfo:
        """The statement with what its user functions and views hide added: the functions
        they call (and COPY PROGRAM / server files in their bodies), so a signature sees
        pg_read_file behind a view or a wrapper function; and, with honeytoken tables, the
        relations behind views, materialized views and inheritance parents."""
        catalog = self.catalog
        if catalog is None:
            return info
        if self.policy.honeytoken_tables and catalog.behind:
            info = self._behind_relations(info, catalog)
        calls = catalog.calls
        if not calls:
            return info
        names = (
            set(info.functions)
            | {str(ref) for ref in info.reads}
            | {ref.name for ref in info.reads}
        )
        hidden = frozenset().union(*(calls.get(n, frozenset()) for n in names))
        if hidden <= info.functions:
            return info
        return dataclasses.replace(
            info,
            functions=info.functions | hidden,
            copy_program=info.copy_program or COPY_PROGRAM in hidden,
            copy_server_file=info.copy_server_file or COPY_SERVER_FILE in hidden,
        )

    def _behind_relations(self, info: StatementInfo, catalog: Catalog) -> StatementInfo:
        names = self._names_of(catalog)
        path = self._resolved_path()
        hidden: set[RelationRef] = set()
        for ref in info.reads | info.writes | info.ddl_targets:
            found = resolve(ref, names, path)
            if found is not None:
                for schema, name in catalog.behind.get((found.schema, found.name), ()):
                    hidden.add(RelationRef(schema, name))
        if not hidden or hidden <= info.reads:
            return info
        return dataclasses.replace(info, reads=info.reads | hidden)

    def transaction_ended(self) -> bool:
        """After a transaction with DDL: returns True once, when the catalog must reload."""
        if not self.ddl_pending:
            return False
        self.ddl_pending = False
        self._ddl_at = clocks.monotonic()
        return True

    def _safe_functions(self) -> frozenset[str] | None:
        """Built-ins that cannot write, or None when a name may not mean the built-in: the
        catalog is unknown, or the search_path puts pg_catalog after a schema of the user's
        (where a function of the same name would win)."""
        if self.catalog is None:
            return None
        path = self.search_path
        if "pg_catalog" in path and path.index("pg_catalog") != 0:
            return None
        return self.catalog.safe_functions

    def _reads_code(self, info: StatementInfo) -> bool:
        """Can evaluating it run code the analysis cannot name: a view (or a relation the
        catalog does not know), a user-defined operator, a cast to a domain?"""
        if not self.policy.limits or self.catalog is None:
            return False
        catalog = self.catalog
        if not info.operators.isdisjoint(catalog.user_operators) or not info.cast_types.isdisjoint(
            catalog.domains
        ):
            return True  # a user-defined operator or a domain CHECK calls functions
        names = self._names_of(catalog)
        path = self._resolved_path()
        for ref in info.reads:
            if ref.schema in ("pg_catalog", "information_schema") or (
                ref.schema is None and ref.name.startswith("pg_")
            ):
                continue  # system catalogs and views call only built-ins
            found = resolve(ref, names, path)
            if found is None or found.kind not in ("r", "p", "m"):
                return True
        return False

    def _names_of(self, catalog: Catalog) -> dict[tuple[str, str], Relation]:
        if self._names_for is not catalog:
            self._names = catalog.by_name()
            self._names_for = catalog
        return self._names

    def _provably_bounded(self, statements: tuple[StatementInfo, ...]) -> bool:
        catalog = self.catalog
        assert catalog is not None
        if self.ddl_pending or catalog.loaded_at <= self._ddl_at:
            return False  # DDL went through since: triggers, rules, defaults may be new
        return provably_bounded(
            statements,
            catalog,
            self._names_of(catalog),
            self.policy.limits,
            self.sticky,
            self._resolved_path(),
        )

    def check_sql(self, autocommit: bool = False) -> str | None:
        return self._check(autocommit) or None

    def baseline(self) -> str | None:
        return self._baseline_sql if self._check() else None

    def checks(self) -> Checks | None:
        """The baseline and both checks, for a query string the session rebuilds."""
        plain, immediate = self._check(False), self._check(True)
        if not plain or not immediate:
            return None
        return Checks(self._baseline_sql, plain, immediate)

    def target(self, statements: tuple[StatementInfo, ...]) -> str | None:
        """``schema.table`` of the one table a lone INSERT/UPDATE/DELETE writes, if known."""
        if len(statements) != 1 or len(statements[0].writes) != 1 or self.catalog is None:
            return None
        (ref,) = statements[0].writes
        found = resolve(ref, self._names_of(self.catalog), self._resolved_path())
        return f"{found.schema}.{found.name}" if found is not None else None

    def writes(self, statements: tuple[StatementInfo, ...]) -> tuple[bool, ...]:
        """Per statement: could it change rows (what a dry run must roll back)?"""
        safe = self._safe_functions()
        return tuple(info.kind not in _INERT and may_change_rows(info, safe) for info in statements)

    def _check(self, autocommit: bool = False) -> str | None:
        """The limit check for the current catalog; "" when no table is limited."""
        if self.catalog is None:
            return None
        if self._check_for is not self.catalog:
            tables = limited_tables(self.catalog, self.policy.limits, self.sticky)
            self._checks = (
                (limit_check_sql(tables), limit_check_sql(tables, immediate=True))
                if tables
                else ("", "")
            )
            self._baseline_sql = baseline_sql(tables) if tables else ""
            self._check_for = self.catalog
            self._tables = tables
        if self.allowance is not None and self._tables:
            return limit_check_sql(self._tables, immediate=autocommit, allowance=self.allowance)
        return self._checks[autocommit]

    def _resolved_path(self) -> tuple[str, ...]:
        path = self.search_path
        if path is not self._path_for:
            self._path_for = path
            self._path = tuple(self.user if s == "$user" else s for s in path)
        return self._path

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
    sqlstate = RATE_SQLSTATE if decision.sqlstate == "53400" else GUARD_SQLSTATE
    return raise_sql(decision.message, decision.detail, decision.hint, sqlstate)


ROWS_EXHAUSTED: Final = Deny(
    "rate_limit",
    "sqlproxy: statement refused by rate_limits",
    detail="rows_changed_per_minute: this user's budget of changed rows is used up.",
    hint="Wait for the budget to refill, or change fewer rows at a time.",
    sqlstate="53400",
)
