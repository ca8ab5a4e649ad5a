"""Server to client: every server message is matched to the request it answers
(``ResponseTracker``) and then forwarded, swallowed (the worker's own requests), withheld until
the guard's check decides, or rewritten (the guard's private SQLSTATEs, dry-run tags, notification
pids). A chunk in which nothing changed is written to the client as the same bytes object.

Also scans results for honeytoken values when values are configured: the message carrying one
never reaches the client.
"""

from __future__ import annotations

import logging
from typing import Final

from mypy_extensions import i64

from proxyworker import clocks, metrics, sockets
from proxyworker.guard.checks import CLIENT_SQLSTATE, ROWS_SQLSTATE, raise_sql
from proxyworker.guard.rewrite import DRY_RUN_SQLSTATE, QueryPlan, dry_notice
from proxyworker.policy.budget import rows_of_tag
from proxyworker.policy.decision import DENIED
from proxyworker.protocol import messages as m
from proxyworker.protocol.framing import CONTINUATION
from proxyworker.protocol.tracker import Action, Expectation, ProtocolDesync, Request
from proxyworker.session.guarded import Guarded
from proxyworker.session.state import STATUS_IDLE, carried_settings
from proxyworker.upstream.connection import ServerConnection

log = logging.getLogger(__name__)

_REFUSAL_SENT: Final = (
    b"\x00sent"  # the honeytoken refusal already went out; drop up to ReadyForQuery
)
_VALUE_STOP: Final = raise_sql("sqlproxy: result refused: it carries a honeytoken value")
# Messages whose content could carry a honeytoken value to the client.
_CARRIERS: Final = frozenset(
    {
        m.DATA_ROW,
        m.COPY_DATA,
        m.NOTICE_RESPONSE,
        m.ERROR_RESPONSE,
        m.NOTIFICATION_RESPONSE,
        m.ROW_DESCRIPTION,  # a value used as a column name
        m.PARAMETER_STATUS,  # a value set as application_name
    }
)


_ROWS_MARK: Final = b"C" + ROWS_SQLSTATE.encode() + b"\x00"
write: Final = sockets.write


def _client_error(view: memoryview, dry_tags: list[bytes]) -> tuple[memoryview, bool]:
    """An ErrorResponse as the client should see it: the guard's private SQLSTATEs become
    42501 / 53400 and the PL/pgSQL context of the guard's own DO block is dropped; the end of
    a dry run becomes its NOTICE."""
    if bytes(view).find(b"CSP") < 0:
        return view, False
    fields = m.parse_fields(view[5:])
    private = fields.get("C", "")
    if private == DRY_RUN_SQLSTATE:
        return memoryview(dry_notice(dry_tags)), False
    code = CLIENT_SQLSTATE.get(private)
    if code is None:
        return view, False
    severity = fields.get("S", "ERROR")
    rebuilt = m.error_response(
        code, fields.get("M", ""), severity=severity, detail=fields.get("D"), hint=fields.get("H")
    )
    return memoryview(rebuilt), True


def _shift_position(view: memoryview, plan: QueryPlan) -> memoryview:
    fields = m.parse_fields(view[5:])
    position = fields.get("P")
    if position is None or not position.isdigit():
        return view
    mapped = plan.position(int(position))
    if mapped is None:
        del fields["P"]  # it points into the guard's own text
    else:
        fields["P"] = str(mapped)
    body = b"".join(k.encode() + m.cstr(v) for k, v in fields.items()) + b"\x00"
    return memoryview(m.message(m.ERROR_RESPONSE, body))


def _clients_statement(expectation: Expectation | None, completes: int) -> bool:
    """Does a CommandComplete answering ``expectation`` end a statement of the client's, not
    one the guard added (the limit check, its baseline, a worker's own request)? For a rebuilt
    Query, ``completes`` is how many CommandCompletes of it came before this one."""
    if expectation is None:
        return True
    action = expectation.action
    if action is Action.SWALLOW or action is Action.CHECK:
        return False
    plan = expectation.tag
    return not (
        action is Action.CHECK_QUERY and isinstance(plan, QueryPlan) and completes in plan.drop
    )


def _is_denial(view: memoryview) -> bool:
    fields = m.parse_fields(view[5:])
    return fields.get("C") == DENIED and fields.get("M", "").startswith("sqlproxy: ")


class Responses(Guarded):
    """The relay from the server to the client."""

    def server_data(self, conn: ServerConnection, data: bytes) -> None:
        if not self._tokens and self._held is None and not self._poisoned and not self.modes.active:
            frames = conn.framer.frames(data)
            if frames is not None and self._relayed_as_is(conn, data, frames):
                return
        try:
            msgs = conn.framer.feed(data)
        except m.MalformedMessage as malformed:  # (a name of its own: docs/compiled.md)
            conn.abort()
            self.fatal("08P01", f"sqlproxy: server sent a malformed message: {malformed}")
            return
        route = self.tracker.route
        out: list[bytes | memoryview] = []
        changed = not conn.framer.aligned
        tokens = self._tokens
        # A value can only hide in this chunk, or in a message that began in an earlier one.
        scan = bool(tokens) and (self._carry or any(t in data for t in tokens))
        self._carry = conn.framer.pending > 0
        dest: list[bytes | memoryview] | None = out  # where a CONTINUATION piece goes
        for kind, view in msgs:
            if kind == CONTINUATION:
                if dest is not None:
                    dest.append(view)
                continue
            try:
                expectation, ends = route(kind)
            except ProtocolDesync as exc:
                conn.abort()
                self.fatal("08P01", f"sqlproxy: {exc}")
                return
            if kind == m.ERROR_RESPONSE:
                view, guard_error = _client_error(view, self._dry_tags)
                if guard_error:
                    changed = True
                    self._guard_refusal = m.parse_fields(view[5:]).get("M")
                elif view[0] != m.ERROR_RESPONSE:
                    changed = True  # a dry run's end, now its NOTICE
                elif m.parse_fields(view[5:]).get("V") == "FATAL":
                    self._server_fatal = True  # it closes next; its reason is the one to keep
            elif kind == m.NOTIFICATION_RESPONSE:
                # Clients know the pids the worker handed out, not the backends'.
                pid = self.worker.client_pid(m.read_i32(view, 5), conn, self.whole)
                if pid is not None:
                    view = memoryview(m.message(kind, m.i32(pid) + bytes(view[9:])))
                    changed = True
            elif kind == m.PARAMETER_STATUS:
                name, value = m.parse_parameter_status(view[5:])
                conn.params[name] = self.settings[name] = value
                conn.carried = 0
                self._carried = carried_settings(self.settings)
                self._readable = False
            elif kind == m.NOTICE_RESPONSE and bytes(view).find(_ROWS_MARK) > 0:
                self._measured(view)  # the check's report of rows changed: not the client's
                changed = True
                continue
            elif kind == m.COMMAND_COMPLETE:
                if self._audit_pending.front_wants_tags() and _clients_statement(
                    expectation, self._completes
                ):
                    self._last_tag = bytes(view[5:-1])
                    self._tag_rows += rows_of_tag(self._last_tag)
                if expectation is not None and expectation.request is Request.EXECUTE:
                    if expectation.tag is not None:
                        view = self._renamed(expectation.tag)
                        changed = True
                    elif self.modes.active and expectation.action is not Action.SWALLOW:
                        self._dry_tags.append(bytes(view[5:-1]))
            if scan and kind in _CARRIERS and any(t in bytes(view) for t in tokens):
                self._honeytoken_value_seen()
            if self._poisoned:
                changed = True
                dest = None
                if kind == m.READY_FOR_QUERY:
                    if self._poisoned is not _REFUSAL_SENT:
                        out.append(self._poisoned)
                    self._poisoned = b""
                    self._held, self._held_bytes, self._completes = None, 0, 0
                    self._note_end(conn, kind, view, expectation, ends)
                    if (
                        expectation is not None
                        and isinstance(expectation.tag, QueryPlan)
                        and expectation.tag.decide
                    ):
                        self._end_block(conn, commit=False)
                    else:
                        out.append(view)
                    continue
                if self._poisoned is not _REFUSAL_SENT and not self.tracker.units_in_flight():
                    # No Sync sent yet (asyncpg prepares with Describe and Flush): refuse now
                    # and make the server skip what follows up to the client's Sync.
                    out.append(self._poisoned)
                    self._poisoned = _REFUSAL_SENT
                    assert conn.transport is not None
                    conn.transport.write(self._inject(_VALUE_STOP, Action.SWALLOW))
                self._note_end(conn, kind, view, expectation, ends)
                continue
            action = Action.FORWARD if expectation is None else expectation.action
            self._note_end(conn, kind, view, expectation, ends)
            if action is Action.FORWARD and self._held is None:
                dest = out
                out.append(view)
                continue
            changed = True
            if action is Action.CHECK_QUERY:
                assert expectation is not None and isinstance(expectation.tag, QueryPlan)
                dest = self._planned(expectation.tag, kind, view, out, conn)
            else:
                dest = self._withhold(action, kind, view, ends, out)
            if self._held_bytes > self.worker.config.guard.max_held_bytes:
                conn.abort()
                self.fatal("54000", "sqlproxy: result too large to withhold until verified")
                return
        transport = self.transport
        assert transport is not None
        if not changed:
            write(transport, data)
        elif out:
            transport.writelines(out)
        metrics.BYTES_TO_CLIENTS.inc(len(data))
        if not self._started:
            self._request_cycle_done(conn)

    def _relayed_as_is(self, conn: ServerConnection, data: bytes, frames: bytes) -> bool:
        """The common chunk, at the cost of reading its lengths: whole messages that
        are only answers (no error, notice, notification, parameter or COPY message:
        ``frames`` of ``ANSWERS``) to requests forwarded as is, and no command tag wanted by
        the audit. It goes to the client as it came, with the same bookkeeping as in
        ``server_data``. False, with nothing done, for any other chunk."""
        if self._audit_pending.tags:  # (a request in flight wants its command tags)
            i: i64 = 0
            n: i64 = len(frames)
            while i < n:
                if frames[i] == m.COMMAND_COMPLETE:
                    return False
                i += 2
        tracker = self.tracker
        noted = tracker.route_forwarded(frames)
        if noted < 0:
            return False
        self._carry = False
        ended = tracker.ended
        statuses = tracker.statuses
        for i in range(noted):
            expectation = ended[i]
            # (What _note_end does; no error here, so a Parse ended with ParseComplete.)
            status = statuses[i]
            if status is not None:
                self._ready(conn, status, expectation)
            elif expectation.request is Request.PARSE:
                self._parsed(conn, expectation.tag, True)
        transport = self.transport
        assert transport is not None
        write(transport, data)
        metrics.BYTES_TO_CLIENTS.inc(len(data))
        if not self._started:
            self._request_cycle_done(conn)
        return True

    def _note_end(
        self,
        conn: ServerConnection,
        kind: int,
        view: memoryview,
        expectation: Expectation | None,
        ends: bool,
    ) -> None:
        """Bookkeeping when a message ends the answer to a request."""
        if expectation is None or not ends:
            return
        if kind == m.READY_FOR_QUERY:
            self._ready(conn, bytes(view[5:6]), expectation)
        elif kind == m.ERROR_RESPONSE and expectation.request is not Request.QUERY:
            self._skipped(self.tracker.skip_unit())
        if expectation.request is Request.PARSE and expectation.tag is not None:
            self._parsed(conn, expectation.tag, kind == m.PARSE_COMPLETE)

    def _ready(self, conn: ServerConnection, status: bytes, expectation: Expectation) -> None:
        """A ReadyForQuery (transaction ``status``) ends the answer to a Query or Sync."""
        conn.status = status
        if expectation.action is Action.SWALLOW:
            return  # the worker's own Query (session settings), not a client request
        assert self._labels is not None
        elapsed = clocks.perf_counter() - self._started.popleft()
        self._labels.latency.observe(elapsed)
        if len(self._audit_pending):
            slot = self._audit_pending.popleft()
            if slot is not None and (slot[1] or self._guard_refusal is not None):
                self._audited(slot[0], elapsed, self._settle_rows())
            else:
                # Nothing this answer could make emitted (Guarded._audit_slot): only
                # forget what it reported.
                self._guard_refusal = None
                if self._request_rows:
                    self._request_rows = {}
        if status == STATUS_IDLE:
            self._txn_rows.clear()
            if not self._started:
                self.modes.dry_transaction = False  # nothing sent since is in a block
                self._dry_tags.clear()
        if self.tracker.dropped:
            self._skipped(self.tracker.dropped)
            self.tracker.dropped = []

    def _honeytoken_value_seen(self) -> None:
        """A result carries a honeytoken value: nothing more of this request reaches the
        client; it gets a refusal in its place (action "block")."""
        metrics.ERRORS.labels("honeytoken_value").inc()
        log.warning("honeytoken value in a result", extra={"user": self.user, "client": self.peer})
        if self.policy.honeytoken_alert:
            return
        self._poisoned = m.error_response(
            DENIED,
            "sqlproxy: result refused: it carries a honeytoken value",
            detail="A protected value was about to leave the database.",
            hint="No application should read this data.",
        )

    def _withhold(
        self, action: Action, kind: int, view: memoryview, ends: bool, out: list[bytes | memoryview]
    ) -> list[bytes | memoryview] | None:
        """Route one answer that is not simply forwarded; returns where its continuation goes."""
        held = self._held
        if action is Action.SWALLOW:
            if kind == m.ERROR_RESPONSE:
                # A request the worker injected failed (a replayed Parse whose table is gone):
                # the server now skips to the Sync, so the client must get this error.
                if held:
                    out.extend(held)
                    self._held, self._held_bytes = None, 0
                out.append(view)
            return None
        if action is Action.CHECK:
            # The extended-protocol check: success releases what was held, failure drops it.
            if kind == m.ERROR_RESPONSE:
                out.append(view)
            elif held is not None:
                out.extend(held)
            if ends:
                self._held, self._held_bytes = None, 0
            return None
        if held is None:
            held = self._held = []
        if action is Action.HOLD and kind == m.ERROR_RESPONSE and ends:
            # The client's own statement failed: the check will not run; release everything.
            out.extend(held)
            out.append(view)
            self._held, self._held_bytes = None, 0
            return out
        if action is Action.FORWARD and kind == m.READY_FOR_QUERY:
            out.extend(held)
            out.append(view)
            self._held, self._held_bytes = None, 0
            return out
        held.append(view)
        self._held_bytes += len(view)
        return held  # type: ignore[return-value]

    def _planned(
        self,
        plan: QueryPlan,
        kind: int,
        view: memoryview,
        out: list[bytes | memoryview],
        conn: ServerConnection,
    ) -> list[bytes | memoryview] | None:
        """One answer to a rebuilt Query (``rewrite.py``): the guard's own CommandCompletes
        dropped, tags renamed, error positions mapped back to the client's text; everything
        withheld until ReadyForQuery when a limit check decides (a refusal by the check: only
        its error goes out). Returns where a continuation of this message goes."""
        if kind == m.READY_FOR_QUERY:
            held = self._held
            if held is not None:
                denial = next((v for v in held if v[0] == m.ERROR_RESPONSE and _is_denial(v)), None)
                out.extend([denial] if denial is not None else held)
            self._held, self._held_bytes, self._completes = None, 0, 0
            if plan.decide:
                self._end_block(conn, commit=view[5] == ord("T"))
            else:
                out.append(view)
            return out
        pieces: list[memoryview] = [view]
        if kind == m.COMMAND_COMPLETE:
            index = self._completes
            self._completes += 1
            renamed = plan.rename.get(index)
            if index in plan.drop:
                pieces = []
            elif renamed is not None:
                pieces = [memoryview(m.message(m.COMMAND_COMPLETE, renamed + b"\x00"))]
            elif plan.collect:
                self._dry_tags.append(bytes(view[5:-1]))
            if index in plan.notice_after:
                pieces.append(memoryview(dry_notice(self._dry_tags)))
        elif kind == m.ERROR_RESPONSE and view[0] == m.ERROR_RESPONSE:
            pieces = [_shift_position(view, plan)]
        held = self._held
        if kind == m.COPY_IN_RESPONSE:
            # The client must see this to start sending: release what came before it.
            if held is not None:
                out.extend(held)
                self._held, self._held_bytes = [], 0
            out.extend(pieces)
            return None
        if not plan.hold:
            out.extend(pieces)
            return out if pieces else None
        if held is None:
            held = self._held = []
        held.extend(pieces)
        self._held_bytes += sum(len(p) for p in pieces)
        return held if pieces else None  # type: ignore[return-value]  # (as _withhold)

    def _renamed(self, tag: object) -> memoryview:
        """The CommandComplete of a rewritten extended-protocol statement, as the client's."""
        assert isinstance(tag, tuple)
        shown, with_notice = tag
        out = m.message(m.COMMAND_COMPLETE, shown + b"\x00")
        if with_notice:
            out += dry_notice(self._dry_tags)
        return memoryview(out)
