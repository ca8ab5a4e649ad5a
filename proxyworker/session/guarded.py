"""The guard in the session: every Query and Parse goes through ``Gate`` before it is sent.

Allowed statements go out as the client's own bytes; a denial is replaced by a statement that
makes the server raise it in order; a statement to verify gets the limit check sent after it
and its answers withheld (``responses.py``) until the check has passed. Dry run, preview and the
worker's own ``sqlproxy.*`` settings rebuild the text (``guard/rewrite.py``). Also here: the
audit event of each decision, rate limits and the rows-changed budget.

The decision itself is the gate's; this module only carries it out, so the simple and the
extended protocol share one decision point. Fail closed: text that cannot be read as the
server reads it (standard_conforming_strings off, an encoding other than UTF-8) is denied.
"""

from __future__ import annotations

import logging
import random
import re
import time
from typing import Final, Literal

from mypy_extensions import i64

from proxyworker import clocks, metrics, scan
from proxyworker.config.events import AuditEvent
from proxyworker.guard.checks import raise_sql
from proxyworker.guard.gate import (
    NONSTANDARD_STRINGS,
    ROWS_EXHAUSTED,
    Gate,
    Verdict,
    deny_statement,
)
from proxyworker.guard.rewrite import (
    DECIDE,
    FINISH,
    PREVIEW_SAVEPOINT,
    QueryPlan,
    SettingRefused,
    Statement,
    plan_query,
    plan_statement,
)
from proxyworker.policy.decision import Allow, Deny
from proxyworker.protocol import messages as m
from proxyworker.protocol.framing import following
from proxyworker.protocol.tracker import Action, Request
from proxyworker.reuse import put
from proxyworker.session.pooling import Pooling
from proxyworker.session.state import STATUS_IDLE, AuditSlot, Kept
from proxyworker.upstream.connection import ServerConnection

log = logging.getLogger(__name__)

_UNSAMPLED: Final = "\x00unsampled"  # marks a kept event that is not emitted if allowed
_MEASURED: Final = re.compile(r"([^,]+)=(-?\d+)")
# Cheap test for the worker's own settings in a session without a policy.
_MENTIONS_PROXY: Final = re.compile(rb"(?i)sqlproxy")
contains_any: Final = scan.contains_any


def mentions_proxy(data: bytes) -> bool:
    """``_MENTIONS_PROXY`` for a whole chunk, on the plain path: most statements have no x at
    all, and one call searching for either case answers for them."""
    return contains_any(data, b"xX") and _MENTIONS_PROXY.search(data) is not None


_MAY_WRITE: Final = Statement(None, writes=True)
_READABLE_ENCODINGS: Final = frozenset({"UTF8", "UTF-8", "SQL_ASCII"})
# Counted per statement: batched (metrics.py), one child per path bound once.
_GUARD_PATHS: Final = {
    path: metrics.BatchedCounter(metrics.GUARD_PATHS.labels(path))
    for path in ("read", "static", "verified", "denied")
}
_READ_PATH: Final = _GUARD_PATHS["read"]
_STATIC_PATH: Final = _GUARD_PATHS["static"]


class Guarded(Pooling):
    """The guard's decisions carried out for the simple and the extended protocol."""

    def _text_refusal(self) -> Deny | None:
        """Why statement text cannot be analysed in this session's settings, if it cannot."""
        settings = self.settings
        if settings.get("standard_conforming_strings", "on") != "on":
            return NONSTANDARD_STRINGS
        encoding = settings.get("client_encoding", "UTF8")
        if encoding not in _READABLE_ENCODINGS and encoding.upper() not in _READABLE_ENCODINGS:
            return Deny(
                "encoding",
                f"sqlproxy: statement refused: client_encoding {encoding.upper()} is not supported",
                hint="Connect with client_encoding UTF8.",
            )
        return None

    def _verdict(
        self,
        gate: Gate,
        server: ServerConnection,
        raw: bytes,
        protocol: Literal["simple", "extended"],
    ) -> Verdict:
        assert self.pool is not None
        policy = self.policy
        if policy.uses_catalog:
            gate.catalog = self.pool.catalog.snapshot()
        if not self._readable:
            # Looked at again only after a ParameterStatus (or a new set of settings).
            refusal = self._text_refusal()
            if refusal is not None:
                verdict = Verdict(refusal, "denied")
                if gate is self.gate:
                    self._record(verdict, protocol)
                return verdict
            self._readable = True
        budget = policy.rows_budget
        left = 0.0
        if budget is not None:
            left = budget.left(self.user)
            gate.allowance = int(left) + sum(self._txn_rows.values())
        verdict = gate.decide_bytes(raw, autocommit=server.status == STATUS_IDLE)
        if (
            budget is not None
            and left < 1
            and not isinstance(verdict.decision, Deny)
            and any(gate.writes(verdict.statements))
        ):
            verdict = Verdict(ROWS_EXHAUSTED, "denied", verdict.statements)
        if gate is self.gate:
            _GUARD_PATHS[verdict.path].inc()
            decision = verdict.decision
            if (
                type(decision) is not Allow
                or decision.alerts
                or self._sample_allowed
                or (decision.verify and not self._unrefusable(verdict, protocol))
            ):
                self._record(verdict, protocol)  # (else nothing to audit: _record's early exit)
        return verdict

    def _unrefusable(self, verdict: Verdict, protocol: Literal["simple", "extended"]) -> bool:
        """A Query proven bounded (the static path) gets no check of its own, and nothing
        else in its request can fail with the guard's error: no server-side refusal can
        turn it into a denial, so the event kept for that case (``_record``) is not needed.
        (In the extended protocol a later statement's check at the same Sync can.)"""
        return (
            protocol == "simple" and verdict.static and not self._tokens and not self.modes.active
        )

    def _record(self, verdict: Verdict, protocol: Literal["simple", "extended"]) -> None:
        """Queue the audit event of a decision; it is emitted when its request completes."""
        decision = verdict.decision
        sample = self._sample_allowed
        if type(decision) is Allow and not decision.verify and not decision.alerts and not sample:
            return  # the common case: nothing to audit
        if isinstance(decision, Deny):
            kind: Literal["allow", "deny", "alert"] = "deny"
            rule: str | None = decision.rule
            message: str | None = decision.message
            log.info("denied", extra={"rule": rule, "user": self.user, "client": self.peer})
        elif decision.alerts:
            kind, rule, message = "alert", decision.alerts[0], None
        else:
            # A verified statement is kept in case the server-side check refuses it; it is
            # emitted as allowed only when sampled (see _audited).
            sampled = bool(sample) and random.random() < sample
            if not sampled and not decision.verify:
                return
            kind, message = "allow", None
            rule = None if sampled else _UNSAMPLED
        # An unsampled event is emitted only as a refusal, which names no rows: no target.
        gate = self.gate
        target = (
            gate.target(verdict.statements) if gate is not None and rule != _UNSAMPLED else None
        )
        # The event itself is made when it is emitted (_audited): most kept ones never are.
        self._unit_events.append(
            Kept(kind, rule, message, protocol, time.time(), target, verdict.statements)
        )

    def _audit_slot(self) -> AuditSlot:
        """What the request being sent leaves to do when it is answered (``_audit_pending``):
        None when it made no decision to audit and no row budget applies. Otherwise its
        events, and whether its command tags and rows are needed: not when a budget is off and
        every event is an unsampled one, emitted only as a refusal (which names no rows and no
        tag); its answer is then looked at only if the guard refused something in it."""
        events = self._unit_events
        if self.policy.rows_budget is not None:
            counted = True
        elif not events:
            return None
        else:
            counted = any(kept.rule != _UNSAMPLED for kept in events)
        slot = (tuple(events), counted)
        events.clear()
        return slot

    def _measured(self, view: memoryview) -> None:
        """The limit check's NOTICE: rows changed per limited table in this transaction."""
        detail = m.parse_fields(view[5:]).get("D", "")
        for name, count in _MEASURED.findall(detail):
            total = int(count)
            delta = total - self._txn_rows.get(name, 0)
            self._txn_rows[name] = total
            if delta:
                self._request_rows[name] = self._request_rows.get(name, 0) + delta

    def _settle_rows(self) -> dict[str, int] | None:
        """A request is answered: take its rows out of the user's budget (what the check
        measured, or what the command tags say when that is more) and return them per table
        for the audit event."""
        rows, tagged = self._request_rows, self._tag_rows
        self._tag_rows = 0
        if not rows and not tagged:
            return None
        self._request_rows = {}
        if self._guard_refusal is not None:
            return None  # refused by the check: rolled back, nothing changed
        measured = sum(rows.values())
        budget = self.policy.rows_budget
        if budget is not None:
            budget.spend(self.user, max(measured, tagged))
        if tagged > measured:
            rows[""] = tagged - measured  # by command tags, in tables not measured
        return {k: v for k, v in rows.items() if v}

    def _audited(
        self, events: tuple[Kept, ...], elapsed: float, rows: dict[str, int] | None = None
    ) -> None:
        tag = self._last_tag.decode(errors="replace") or None
        refusal, self._last_tag, self._guard_refusal = self._guard_refusal, b"", None
        for kept in events:
            kind, rule = kept.decision, kept.rule
            message = kept.message
            if refusal is not None and kind == "allow":
                # The server-side limit check refused what evaluate() let run.
                rule = "table_limit" if "table_limits" in refusal else "rate_limit"
                kind, message = "deny", refusal
            elif rule == _UNSAMPLED:
                continue
            event = AuditEvent(
                id=self.worker.event_id(),
                time=kept.time,
                worker=self.worker.id,
                database=self.database,
                user=self.user,
                client=self.peer,
                application_name=self.application_name,
                decision=kind,
                rule=rule,
                message=message,
                protocol=kept.protocol,
                duration_ms=round(elapsed * 1000, 3),
            )
            if kept.statements:
                event.fingerprint = kept.statements[0].fingerprint
                event.normalized = "; ".join(s.normalized for s in kept.statements)
            target = kept.target or ""
            if rows and kind != "deny":
                event.rows = {target if k == "" and target else k: v for k, v in rows.items()}
            event.command_tag = tag if kind != "deny" else None
            self.worker.audit.emit(event)

    def _follow_config(self, server: ServerConnection) -> bool:
        """Between transactions, take up the policy a reloaded configuration gives this
        database (a transaction in flight finishes under the one it started with). False when
        the session had to be closed instead."""
        if self._started or self._unsynced or server.status != STATUS_IDLE:
            return True
        self._generation = self.worker.generation
        self._sample_allowed = self.worker.config.audit.sample_allowed
        policy = self.worker.policies.get(self.database)
        if policy is None or policy is self.policy:
            return True  # a removed database: open sessions keep what they started with
        self.policy, self._tokens = policy, policy.honeytoken_values
        if self.gate is not None:
            self.gate.policy = policy
            return True
        gate = Gate(policy, self.user, self.database, sticky=self.pool.limited if self.pool else {})
        if not gate.active:
            return True
        if self._forwarded:
            # Nothing followed this session's settings (search_path) while it had no policy,
            # so names could not be resolved as the server resolves them: fail closed.
            self.fatal(
                "57P01",
                f'sqlproxy: terminating connection: the policy of database "{self.database}" '
                "changed; reconnect",
            )
            return False
        self.gate = gate
        return True

    def _gate_query(
        self, gate: Gate, server: ServerConnection, view: memoryview
    ) -> tuple[bytes | None, QueryPlan | None]:
        """A simple Query: allow as is, deny in order, or rebuild it around what the guard
        adds (limit checks, dry run, preview, the worker's own settings: ``rewrite.py``)."""
        raw = bytes(view[5:-1])
        verdict = self._verdict(gate, server, raw, "simple")
        decision = verdict.decision
        if isinstance(decision, Deny):
            return m.query(deny_statement(decision)), None
        statements = verdict.statements
        checks = gate.checks() if verdict.check_sql is not None else None
        decide = bool(self._tokens) and self._decides(server)
        if checks is None and not decide and not self.modes.active and not verdict.switches:
            return None, None
        sql = raw.decode()
        statements = gate.statements(verdict, sql)
        try:
            plan = plan_query(
                sql,
                statements,
                server.status,
                checks,
                self.modes,
                gate.writes(statements),
                decide,
            )
        except SettingRefused as exc:
            return m.query(raise_sql(f"sqlproxy: {exc}", sqlstate=exc.sqlstate)), None
        if plan is None:
            return None, None
        return m.query(plan.sql), plan

    def _gate_extended(
        self, gate: Gate, server: ServerConnection, kind: int, view: memoryview
    ) -> tuple[bytes, bool, memoryview]:
        """Parse: decide; a denial replaces it by a statement that fails in its place
        (returned with True); under dry run or preview, or for the worker's own settings, the
        Parse may carry other text (the view returned). Bind of a statement that needs the
        check arms it for the next Sync or Flush and gets the baseline sent before it; Bind of
        one whose executions are audited records its decision again, unless its Parse is in
        the same request (that Parse's event is this execution's)."""
        body = view[5:]
        if kind == m.BIND:
            # (``_forward`` calls this for a Bind only when something is armed: ``_bind_armed``.)
            portal, name, _ = m.split_bind(body)
            prefix = b""
            audited = self._audited_statements.get(name)
            if audited is not None and name not in self._parsed_now:
                self._record(audited, "extended")  # a decision made again, for this execution
            if name in self._checked_statements:
                self._check_pending = True
                baseline = gate.baseline()
                if baseline:
                    prefix = self._inject(baseline, Action.SWALLOW)
            if self._portal_tags:
                self._portal_tags.pop(portal, None)
            if (
                name in self._writing
                and not self._decide_pending
                and not self.modes.active
                and self._decides(server)
            ):
                # A write that may return a honeytoken value: in a block of the worker's.
                self._decide_pending = True
                prefix += self._inject("BEGIN", Action.SWALLOW)
            rewritten = self._rewritten.get(name) if self._rewritten else None
            if rewritten is None and self.modes.active and name not in self._dry_parsed:
                # Prepared before the switch was turned on: it may write, roll it back.
                rewritten = _MAY_WRITE
            if rewritten is not None:
                prefix += self._bind_rewritten(rewritten, portal, server)
            return prefix, False, view
        parsed, raw = self._parse_of(bytes(view))
        verdict = self._verdict(gate, server, raw, "extended")
        decision = verdict.decision
        if type(decision) is Allow and (decision.verify or decision.alerts or self._sample_allowed):
            self._audited_statements[parsed.name] = verdict
            self._parsed_now.add(parsed.name)
        elif self._audited_statements:
            self._audited_statements.pop(parsed.name, None)
        if isinstance(decision, Deny):
            self._checked_statements.discard(parsed.name)
            self._rewritten.pop(parsed.name, None)
            # Its error answers the client's Parse; the server then skips to the Sync.
            return self._inject(deny_statement(decision), Action.FORWARD), True, view
        if verdict.check_sql is not None:
            self._checked_statements.add(parsed.name)
        else:
            self._checked_statements.discard(parsed.name)
        statements = verdict.statements
        if self._tokens and not self.policy.honeytoken_alert:
            if any(gate.writes(statements)):
                self._writing.add(parsed.name)
            else:
                self._writing.discard(parsed.name)
        if not self.modes.active and not verdict.switches:
            if self._rewritten:
                self._rewritten.pop(parsed.name, None)
            if self._dry_parsed:
                self._dry_parsed.discard(parsed.name)
            return b"", False, view
        if self.modes.active:
            self._dry_parsed.add(parsed.name)
        statements = gate.statements(verdict, parsed.sql)
        try:
            rewritten = plan_statement(
                statements, server.status, self.modes, gate.writes(statements)
            )
        except SettingRefused as exc:
            self._rewritten.pop(parsed.name, None)
            refusal = raise_sql(f"sqlproxy: {exc}", sqlstate=exc.sqlstate)
            return self._inject(refusal, Action.FORWARD), True, view
        if rewritten is None:
            self._rewritten.pop(parsed.name, None)
            return b"", False, view
        self._rewritten[parsed.name] = rewritten
        if rewritten.sql is not None:
            view = memoryview(m.parse(parsed.name, rewritten.sql, parsed.param_types))
        return b"", False, view

    def _parse_of(self, message: bytes) -> tuple[m.ParseMessage, bytes]:
        """A Parse message read, with its text's UTF-8 bytes. The last one is kept: drivers'
        unnamed statements and pgbench -M extended send the same Parse again and again, and
        what it reads as depends on its bytes alone."""
        if message != self._parse_message:
            statement = m.parse_parse(message[5:])
            self._parse_message, self._parse_read = message, (statement, statement.sql.encode())
        return self._parse_read

    def _remembered_plain(self, gate: Gate, data: bytes, walk: i64) -> bool:
        """A guarded session's plain chunk (whole messages: ``Framer.frames``): every
        statement in it (Query, Parse; the last one among the first ``walk`` messages) has a
        remembered verdict that lets it through as it is — allowed, nothing to check or
        alert, none of the worker's settings — so deciding it again (``_verdict``) would
        record no event and change nothing. Then what deciding does besides is done here;
        otherwise False, with nothing done."""
        assert self.pool is not None
        policy = self.policy
        if policy.uses_catalog:
            gate.catalog = self.pool.catalog.snapshot()
        if not self._readable:
            return False
        if not gate.remembered_usable():
            return False
        if walk == 1:
            if data[0] == m.QUERY:  # (a lone Query: the simple protocol's request)
                verdict = gate.find_query(data)
                if verdict is None or not verdict.plain_query:
                    return False
                (_STATIC_PATH if verdict.static else _READ_PATH).inc()
                return True
            if data.startswith(self._parse_message):  # (the last Parse again, then Bind...)
                statement, raw = self._parse_read
                verdict = gate.find(raw)
                if verdict is None or not verdict.plain_parse:
                    return False
                (_STATIC_PATH if verdict.static else _READ_PATH).inc()
                self._forget_parsed(statement.name)
                return True
        names = self._plain_names  # (a scratch list: reuse.put)
        statics = reads = parses = 0
        end: i64 = 0
        _index: i64 = 0  # (declared: compiled, the loop's count then stays unboxed)
        for _index in range(walk):
            start = end
            end = following(data, start)
            kind = data[start]
            if kind != m.QUERY and kind != m.PARSE:
                continue
            if kind == m.QUERY:  # (its text where it lies, not copied)
                verdict = gate.find_in(data, start + 5, end - 1)
            else:
                if start == 0 and data.startswith(self._parse_message):
                    statement, raw = self._parse_read  # (the last Parse again, not copied)
                else:
                    try:
                        statement, raw = self._parse_of(data[start:end])
                    except m.MalformedMessage:
                        return False  # (the message-by-message path answers it)
                put(names, parses, statement.name)
                parses += 1
                verdict = gate.find(raw)
            if verdict is None or not (
                verdict.plain_query if kind == m.QUERY else verdict.plain_parse
            ):
                return False
            # (Remembered verdicts are read or static ones: gate._reusable.)
            if verdict.static:
                statics += 1
            else:
                reads += 1
        if statics:
            _STATIC_PATH.inc(statics)
        if reads:
            _READ_PATH.inc(reads)
        for i in range(parses):
            self._forget_parsed(names[i])
        return True

    def _forget_parsed(self, name: str) -> None:
        """As ``_gate_extended`` does for a Parse of ``name`` it lets through as it is: what
        was kept for the statement of that name before is forgotten. (Sizes tested with len:
        compiled, a set's truth is a call.)"""
        if len(self._checked_statements):
            self._checked_statements.discard(name)
        if self._audited_statements:
            self._audited_statements.pop(name, None)
        if self._rewritten:
            self._rewritten.pop(name, None)
        if len(self._dry_parsed):
            self._dry_parsed.discard(name)

    def _bind_armed(self) -> bool:
        """Could a Bind need anything of the guard: a statement needing the check or whose
        executions are audited, writes under honeytoken values, rewritten statements, portal
        tags, dry run or preview? When not, ``_gate_extended`` would return the Bind unchanged
        with nothing to do. (Sets tested with len: compiled, a set's truth is a call.)"""
        return (
            len(self._checked_statements) != 0
            or bool(self._audited_statements)
            or len(self._writing) != 0
            or bool(self._rewritten)
            or bool(self._portal_tags)
            or self.modes.active
        )

    def _bind_rewritten(self, rewritten: Statement, portal: str, server: ServerConnection) -> bytes:
        """Bind of a rewritten statement: remember the tag its Execute shows; a write under dry
        run is rolled back with the batch's implicit transaction (outside a block) or at the
        block's COMMIT; a preview inside a block runs under a savepoint."""
        if rewritten.tag is not None:
            self._portal_tags[portal] = rewritten.tag
        if not rewritten.writes:
            return b""
        if server.status == STATUS_IDLE:
            self._dry_end_pending = True
            return b""
        self.modes.dry_transaction = True
        if rewritten.preview and server.status == b"T":
            self._preview_open = True
            return self._inject(f"SAVEPOINT {PREVIEW_SAVEPOINT}", Action.SWALLOW)
        return b""

    def _decides(self, server: ServerConnection) -> bool:
        """Must a write outside a transaction block run in one the worker opens, so it can
        still be rolled back when an answer carries a honeytoken value?"""
        return (
            bool(self._tokens)
            and not self.policy.honeytoken_alert
            and (server.status == STATUS_IDLE)
        )

    def _end_block(self, conn: ServerConnection, commit: bool) -> None:
        """End the transaction block the worker opened (QueryPlan.decide), then let the
        client's waiting messages through."""
        self._started.append(clocks.perf_counter())
        self.tracker.expect(Request.QUERY, Action.CHECK_QUERY, FINISH)
        assert conn.transport is not None
        conn.transport.write(m.query("COMMIT" if commit else "ROLLBACK"))
        self._deciding = False
        if self._backlog and self.server is conn:
            backlog, self._backlog = self._backlog, []
            self._forward(backlog, None)

    def _bare(self, view: memoryview) -> Gate | None:
        """A session without a policy still answers the worker's own settings and runs dry:
        a gate with nothing to enforce, only when needed."""
        if not self.modes.active and _MENTIONS_PROXY.search(view) is None:
            return None
        if self._bare_gate is None:
            self._bare_gate = Gate(self.policy, self.user, self.database)
        return self._bare_gate

    def _expect_sync(self) -> None:
        if self._decide_pending:
            self._decide_pending = False
            self._deciding = True
            self.tracker.expect(Request.SYNC, Action.CHECK_QUERY, DECIDE)
        else:
            self.tracker.expect(Request.SYNC)

    def _pending_check(self, server: ServerConnection) -> bytes | None:
        """Before a Sync or Flush: the limit check, if a statement needing it ran."""
        if not self._check_pending or self.gate is None:
            return None
        self._check_pending = False
        check = self.gate.check_sql(autocommit=server.status == STATUS_IDLE)
        if not check:
            return None
        return self._inject(check, Action.CHECK)

    def _within_rate(self) -> bool:
        rate = self.policy.rate
        assert rate is not None
        now = clocks.monotonic()
        ok = (
            rate.take(f"u:{self.user}", now)
            and rate.take(f"c:{self.address}", now)
            and rate.take(f"d:{self.database}", now)
        )
        if not ok:
            metrics.ERRORS.labels("rate_limited").inc()
        return ok
