"""One client connection: startup, authentication, then the relay to a server connection.

The session is the single owner of I/O for its client and, while linked, for the server
connection's output: it decides what is written where. The states are explicit (``Phase``);
the handshake is a coroutine reading framed packets, the relay runs in ``data_received``
callbacks with no task switch per message.

Request tracking (both pool modes): every Query and Sync forwarded counts as one request that
ends at the server's ReadyForQuery. In transaction mode the server connection goes back to the
pool when no request is in flight, no extended-protocol message awaits its Sync, and the server
reports 'I' (idle, outside a transaction block).

Prepared statements in transaction mode: a client's named statement gets a server-side name
unique to the client (``_sqlp<session>_<n>``). Bind/Describe/Close are renamed on the way. If
the client lands on a server connection that never saw the statement, its Parse is replayed
just before first use and the resulting ParseComplete is swallowed. ParseComplete messages
arrive in the order the Parses were sent, so a queue matches each one to its Parse.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import re
import secrets
import time
from collections import deque
from typing import TYPE_CHECKING, Literal, cast

from proxyworker import metrics
from proxyworker.analysis import StatementInfo, StatementKind
from proxyworker.analysis.names import quote_identifier
from proxyworker.config.events import AuditEvent
from proxyworker.guard.checks import (
    CLIENT_SQLSTATE,
    RATE_SQLSTATE,
    ROWS_SQLSTATE,
    literal,
    raise_sql,
)
from proxyworker.guard.gate import (
    NONSTANDARD_STRINGS,
    ROWS_EXHAUSTED,
    Gate,
    Verdict,
    deny_statement,
)
from proxyworker.guard.rewrite import (
    DECIDE,
    DRY_RUN_END,
    DRY_RUN_SQLSTATE,
    FINISH,
    PREVIEW_SAVEPOINT,
    Modes,
    QueryPlan,
    SettingRefused,
    Statement,
    dry_notice,
    forced_dry_run,
    plan_query,
    plan_statement,
)
from proxyworker.policy.budget import rows_of_tag
from proxyworker.policy.decision import DENIED, Deny
from proxyworker.policy.network import refused
from proxyworker.prepared import PreparedStatements, Renamed
from proxyworker.protocol import messages as m
from proxyworker.protocol.framing import CONTINUATION, Framer
from proxyworker.protocol.scram import MECHANISM, ScramError, ScramServer, make_verifier
from proxyworker.protocol.startup import (
    CancelRequest,
    GSSEncRequest,
    SSLRequest,
    StartupMessage,
    packet_length,
    parse_startup,
)
from proxyworker.protocol.tracker import (
    Action,
    Expectation,
    ProtocolDesync,
    Request,
    ResponseTracker,
)
from proxyworker.tasks import spawn
from proxyworker.upstream.connection import ServerConnection, UpstreamError

if TYPE_CHECKING:
    from proxyworker.server import Worker
    from proxyworker.upstream.pool import Pool

log = logging.getLogger(__name__)

# Startup parameters that describe the connection rather than the session; not forwarded.
_NOT_FORWARDED = frozenset({"user", "database", "replication"})
_AUTH_MAX_MESSAGE = 16384
_STATUS_IDLE = b"I"
_FUNCTION_CALL_REFUSAL = raise_sql(
    "sqlproxy: the FunctionCall protocol message is not allowed",
    detail="FunctionCall carries no SQL text the proxy could check.",
    hint="Call the function with SELECT, or set listen.allow_function_call.",
)
_UNSAMPLED = "\x00unsampled"  # marks a kept event that is not emitted if allowed
_COPY_IN = frozenset({m.COPY_DATA, m.COPY_DONE, m.COPY_FAIL, CONTINUATION})
_REFUSAL_SENT = b"\x00sent"  # the honeytoken refusal already went out; drop up to ReadyForQuery
_VALUE_STOP = raise_sql("sqlproxy: result refused: it carries a honeytoken value")
_RATE_REFUSAL = raise_sql(
    "sqlproxy: statement refused by rate_limits",
    detail="Too many statements per second for this user, client address or database.",
    hint="Slow down and retry.",
    sqlstate=RATE_SQLSTATE,
)
# Messages whose content could carry a honeytoken value to the client.
_CARRIERS = frozenset(
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
# Extended-protocol messages that are answered, and the request each one is.
_EXTENDED = {
    m.PARSE: Request.PARSE,
    m.BIND: Request.BIND,
    m.DESCRIBE: Request.DESCRIBE_STATEMENT,  # or DESCRIBE_PORTAL, by its first byte
    m.EXECUTE: Request.EXECUTE,
    m.CLOSE: Request.CLOSE,
}


_INJECTED = m.cstr("_sqlproxy")
_INJECTED_TAIL = (
    m.message(m.BIND, _INJECTED + _INJECTED + b"\x00\x00\x00\x00\x00\x00")
    + m.message(m.CLOSE, b"S" + _INJECTED)
    + m.message(m.EXECUTE, _INJECTED + b"\x00\x00\x00\x00")
    + m.message(m.CLOSE, b"P" + _INJECTED)
)


# Session settings the server reports (ParameterStatus) that a client may change. In transaction
# mode a client's values are set again on whichever server connection serves it next.
_CARRIED_SETTINGS = frozenset(
    {
        "application_name",
        "client_encoding",
        "DateStyle",
        "default_transaction_read_only",
        "IntervalStyle",
        "standard_conforming_strings",
        "TimeZone",
    }
)


def _injection(sql: str) -> bytes:
    """Parse, Bind, Close statement, Execute, Close portal — all under the worker's name."""
    return m.parse("_sqlproxy", sql) + _INJECTED_TAIL


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


_ROWS_MARK = b"C" + ROWS_SQLSTATE.encode() + b"\x00"
_MEASURED = re.compile(r"([^,]+)=(-?\d+)")
# Cheap test for the worker's own settings in a session without a policy.
_MENTIONS_PROXY = re.compile(rb"(?i)sqlproxy")


_MAY_WRITE = Statement(None, writes=True)


def _switches(statements: tuple[StatementInfo, ...]) -> bool:
    """Could one of these be SET/RESET/SHOW of the worker's own sqlproxy.* switches?"""
    return any(i.kind is StatementKind.SET or i.command == "SHOW" for i in statements)


def _is_denial(view: memoryview) -> bool:
    fields = m.parse_fields(view[5:])
    return fields.get("C") == DENIED and fields.get("M", "").startswith("sqlproxy: ")


class Phase(enum.Enum):
    STARTUP = "startup"
    AUTHENTICATING = "authenticating"
    READY = "ready"
    CLOSED = "closed"


class ClientError(Exception):
    """End the handshake with a FATAL ErrorResponse."""

    def __init__(self, sqlstate: str, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate, self.message, self.detail = sqlstate, message, detail


class ClientSession(asyncio.Protocol):
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.phase = Phase.STARTUP
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.address = ""
        self.user = ""
        self.database = ""
        self.application_name = ""
        self.params: dict[str, str] = {}
        self.pool_key: tuple[tuple[str, str], ...] = ()
        self.key: tuple[int, int] = (0, 0)
        self.pool: Pool | None = None
        self.server: ServerConnection | None = None
        self.transaction_pooling = False
        self._labels: metrics.DatabaseLabels | None = None
        # handshake input
        self._raw = b""
        self._wakeup: asyncio.Future[None] | None = None
        # relay state
        self.framer = Framer(worker.config.listen.max_message_size, frozenset({m.COPY_DATA}))
        self._started: deque[float] = deque()  # one per request in flight
        self._unsynced = False
        self._backlog: list[tuple[int, memoryview]] = []
        self._acquiring = False
        self._client_paused = False
        self._server_paused = False
        self.tracker = ResponseTracker()
        self.gate: Gate | None = None
        self._held: list[memoryview] | None = None  # answers withheld until a check decides
        self._held_bytes = 0
        self._checked_statements: set[str] = set()  # extended: statements needing the check
        self._check_pending = False
        # Dry run and preview (rewrite.py): the switches, the tags rolled back so far, the
        # CommandComplete count of the planned Query being answered, per extended-protocol
        # statement what it was rewritten to and per portal the tag its Execute reports.
        self.modes = Modes(forced=forced_dry_run(worker.config.guard.dry_run))
        self._dry_tags: list[bytes] = []
        self._completes = 0
        self._rewritten: dict[str, Statement] = {}
        self._portal_tags: dict[str, tuple[bytes, bool]] = {}
        self._dry_end_pending = False
        self._preview_open = False  # a preview's savepoint awaits its Execute
        self._bare_gate: Gate | None = None
        self._dry_parsed: set[str] = set()  # statements parsed while a switch was on
        # Honeytoken values with writes outside a transaction block: the worker opens one and
        # decides COMMIT or ROLLBACK once it has seen the answers (rewrite.QueryPlan.decide).
        self._writing: set[str] = set()  # extended: statements that may write
        self._decide_pending = False  # extended: BEGIN sent in this batch, decide at its Sync
        self._deciding = False  # client messages wait until COMMIT/ROLLBACK has been sent
        # Rows changed: per limited table as the check measured them in the open transaction
        # (cumulative), what the request being answered changed (measured; by command tags).
        self._txn_rows: dict[str, int] = {}
        self._request_rows: dict[str, int] = {}
        self._tag_rows = 0
        self.policy = worker.policy
        self._generation = worker.generation
        self._forwarded = False  # any request sent yet
        self.settings: dict[str, str] = {}
        """Session settings as this client last saw them reported (ParameterStatus)."""
        self._startup_path: tuple[str, ...] = ()
        self._carry_settings = False  # transaction mode: a server was just linked
        self._tokens = worker.policy.honeytoken_values
        self._unit_events: list[AuditEvent] = []  # decisions of the request being sent
        self._audit_pending: deque[tuple[AuditEvent, ...]] = deque()  # per request in flight
        self._last_tag = b""
        self._guard_refusal: str | None = None  # a refusal raised by the server-side check
        self._server_fatal = False
        self._carry = False  # the server framer held part of a message after the last chunk
        self._poisoned = b""  # the refusal to send at ReadyForQuery, once a value was seen
        self._statements: PreparedStatements | None = None  # transaction mode only

    # --- asyncio.Protocol: client side -----------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or "local")
        metrics.CLIENT_CONNECTIONS.inc()
        metrics.CLIENTS_ACCEPTED.inc()
        self.worker.sessions.add(self)
        if len(self.worker.sessions) > self.worker.config.listen.max_client_conn:
            metrics.CLIENTS_REFUSED.labels("53300").inc()
            self.fatal("53300", "sqlproxy: too many clients already (listen.max_client_conn)")
            return
        self.address = peer[0] if isinstance(peer, tuple) else ""
        if refused(self.worker.policy.ip_rules, self.address):
            metrics.CLIENTS_REFUSED.labels("ip_rules").inc()
            self.fatal("28000", f"sqlproxy: connection from {self.address} refused by ip_rules")
            return
        spawn(self._handshake(), name=f"handshake {self.peer}")

    def data_received(self, data: bytes) -> None:
        if self.phase is Phase.READY:
            self._client_data(data)
        else:
            self._raw += data
            if self._wakeup is not None and not self._wakeup.done():
                self._wakeup.set_result(None)

    def eof_received(self) -> bool | None:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.phase is Phase.CLOSED:
            return
        self.phase = Phase.CLOSED
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_exception(ConnectionResetError("client disconnected"))
        self._finish()

    def pause_writing(self) -> None:
        # The client reads slower than the server answers: stop reading the server.
        self._client_paused = True
        if self.server is not None and self.server.transport is not None:
            self.server.transport.pause_reading()

    def resume_writing(self) -> None:
        self._client_paused = False
        if self.server is not None and self.server.transport is not None:
            self.server.transport.resume_reading()

    # --- RelayTarget: server side ----------------------------------------------------------

    def server_pause_writing(self) -> None:
        self._server_paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def server_resume_writing(self) -> None:
        self._server_paused = False
        if self.transport is not None and not self._acquiring:
            self.transport.resume_reading()

    def server_lost(self, conn: ServerConnection, exc: Exception | None) -> None:
        if conn is not self.server:
            return
        self.server = None
        metrics.ERRORS.labels("server_lost").inc()
        if self._server_fatal:
            self._close_transport()  # the client already has the server's own reason
            return
        reason = f": {exc}" if exc else ""
        self.fatal("08006", f"sqlproxy: server connection was lost{reason}")

    def server_data(self, conn: ServerConnection, data: bytes) -> None:
        try:
            msgs = conn.framer.feed(data)
        except m.MalformedMessage as exc:
            conn.abort()
            self.fatal("08P01", f"sqlproxy: server sent a malformed message: {exc}")
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
                pid = self.worker.client_pid(m.read_i32(view, 5), conn, self)
                if pid is not None:
                    view = memoryview(m.message(kind, m.i32(pid) + bytes(view[9:])))
                    changed = True
            elif kind == m.PARAMETER_STATUS:
                name, value = m.parse_parameter_status(view[5:])
                conn.params[name] = self.settings[name] = value
            elif kind == m.NOTICE_RESPONSE and bytes(view).find(_ROWS_MARK) > 0:
                self._measured(view)  # the check's report of rows changed: not the client's
                changed = True
                continue
            elif kind == m.COMMAND_COMPLETE:
                if self._audit_pending:
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
            transport.write(data)
        elif out:
            transport.writelines(out)
        metrics.BYTES_TO_CLIENTS.inc(len(data))
        if not self._started:
            self._request_cycle_done(conn)

    def _within_rate(self) -> bool:
        rate = self.policy.rate
        assert rate is not None
        now = time.monotonic()
        ok = (
            rate.take(f"u:{self.user}", now)
            and rate.take(f"c:{self.address}", now)
            and rate.take(f"d:{self.database}", now)
        )
        if not ok:
            metrics.ERRORS.labels("rate_limited").inc()
        return ok

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
            conn.status = bytes(view[5:6])
            if expectation.action is Action.SWALLOW:
                return  # the worker's own Query (session settings), not a client request
            assert self._labels is not None
            elapsed = time.perf_counter() - self._started.popleft()
            self._labels.latency.observe(elapsed)
            if self._audit_pending:
                self._audited(self._audit_pending.popleft(), elapsed, self._settle_rows())
            if conn.status == _STATUS_IDLE:
                self._txn_rows.clear()
                if not self._started:
                    self.modes.dry_transaction = False  # nothing sent since is in a block
                    self._dry_tags.clear()
            if self.tracker.dropped:
                self._skipped(self.tracker.dropped)
                self.tracker.dropped = []
        elif kind == m.ERROR_RESPONSE and expectation.request is not Request.QUERY:
            self._skipped(self.tracker.skip_unit())
        if expectation.request is Request.PARSE and expectation.tag is not None:
            self._parsed(conn, expectation.tag, kind == m.PARSE_COMPLETE)

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

    def _parsed(self, conn: ServerConnection, server_name: object, ok: bool) -> None:
        """Transaction mode: the answer to a renamed Parse arrived."""
        assert isinstance(server_name, str) and self._statements is not None
        self._statements.pending.discard(server_name)
        if ok:
            conn.prepared[server_name] = None

    def _skipped(self, skipped: list[Expectation]) -> None:
        for expectation in skipped:
            if expectation.request is Request.PARSE and expectation.tag is not None:
                assert self._statements is not None
                self._statements.pending.discard(str(expectation.tag))

    # --- handshake -------------------------------------------------------------------------

    async def _wait_input(self) -> None:
        self._wakeup = asyncio.get_running_loop().create_future()
        try:
            await self._wakeup
        finally:
            self._wakeup = None

    async def _read_packet(self) -> bytes:
        while (length := packet_length(self._raw)) is None or len(self._raw) < length:
            await self._wait_input()
        packet, self._raw = self._raw[:length], self._raw[length:]
        return packet

    async def _read_message(self, expected: int) -> bytes:
        while len(self._raw) < 5:
            await self._wait_input()
        kind, length = m.header(self._raw)
        if kind != expected:
            raise ClientError("08P01", f"expected message {chr(expected)!r}, got {chr(kind)!r}")
        if length < 4 or length > _AUTH_MAX_MESSAGE:
            raise ClientError("08P01", f"invalid message length {length}")
        while len(self._raw) < length + 1:
            await self._wait_input()
        body, self._raw = self._raw[5 : length + 1], self._raw[length + 1 :]
        return body

    async def _handshake(self) -> None:
        try:
            startup = await self._startup()
            if startup is not None:
                await self._attach(startup)
        except ClientError as exc:
            metrics.CLIENTS_REFUSED.labels(exc.sqlstate).inc()
            self.fatal(exc.sqlstate, exc.message, exc.detail)
        except m.MalformedMessage as exc:
            metrics.CLIENTS_REFUSED.labels("08P01").inc()
            self.fatal("08P01", f"sqlproxy: {exc}")
        except ConnectionResetError:
            pass

    async def _startup(self) -> StartupMessage | None:
        tls_done = False
        while True:
            packet = parse_startup(await self._read_packet())
            if isinstance(packet, StartupMessage):
                return packet
            if isinstance(packet, CancelRequest):
                await self.worker.cancel(packet.pid, packet.secret)
                self._close_transport()
                return None
            if isinstance(packet, GSSEncRequest):
                self._write(b"N")
            elif isinstance(packet, SSLRequest):
                ctx = self.worker.tls
                if ctx is None or tls_done:
                    self._write(b"N")
                    continue
                if self._raw:
                    raise ClientError("08P01", "received unencrypted data after SSL request")
                self._write(b"S")
                assert self.transport is not None
                new = await asyncio.get_running_loop().start_tls(
                    self.transport, self, ctx, server_side=True
                )
                self.transport = cast(asyncio.Transport, new)
                tls_done = True

    async def _attach(self, startup: StartupMessage) -> None:
        if self.worker.refusal is not None:
            raise ClientError("57P03", self.worker.refusal)
        params = startup.params
        self.user = params["user"]
        self.database = params.get("database") or self.user
        self.application_name = params.get("application_name", "")
        if params.get("replication", "false").lower() not in ("false", "off", "no", "0"):
            raise ClientError("08P01", "sqlproxy: replication connections are not supported")
        protocol_options = sorted(k for k in params if k.startswith("_pq_."))
        if startup.minor > 0 or protocol_options:
            self._write(m.negotiate_protocol_version(0, protocol_options))
        self.params = {
            k: v for k, v in params.items() if k not in _NOT_FORWARDED and not k.startswith("_pq_.")
        }
        self.pool_key = tuple(sorted(self.params.items()))
        self.phase = Phase.AUTHENTICATING
        self.policy = self.worker.policies.get(self.database, self.worker.policy)
        self._tokens = self.policy.honeytoken_values
        if refused(self.policy.ip_rules, self.address, self.user, self.database):
            raise ClientError(
                "28000",
                f'sqlproxy: connection from {self.address} for user "{self.user}" to database '
                f'"{self.database}" refused by ip_rules',
            )
        await self._scram()
        allowed = self.worker.user_databases.get(self.user)
        if allowed is not None and self.database not in allowed:
            raise ClientError(
                "28000",
                f'sqlproxy: user "{self.user}" may not connect to database "{self.database}"',
            )
        pool = self.worker.pools.get(self.database)
        if pool is None:
            raise ClientError("3D000", f'sqlproxy: database "{self.database}" does not exist')
        self.pool = pool
        self.transaction_pooling = pool.db.pool_mode == "transaction"
        policy = self.policy
        gate = Gate(policy, self.user, self.database, sticky=pool.limited)
        if gate.active:
            self.gate = gate
            if policy.limits or policy.honeytoken_tables:
                gate.catalog = await pool.catalog.get()
        self._labels = metrics.database_labels(self.database)
        try:
            server = await pool.acquire(self.params)
        except UpstreamError as exc:
            raise ClientError(
                exc.sqlstate, f'sqlproxy: database "{self.database}": {exc.message}', exc.detail
            ) from None
        if self.phase is Phase.CLOSED:
            pool.release(server)
            return
        out = [m.auth_ok()]
        # Transaction mode: what the server said at startup; until the client's first request
        # sets them back, a pooled connection may still carry another client's settings.
        reported = server.startup_params if self.transaction_pooling else server.params
        out += [m.parameter_status(k, v) for k, v in reported.items()]
        self.settings = dict(reported)
        if self.gate is not None:
            self._startup_path = self.gate.search_path
        self.key = self.worker.register(self)
        if self.transaction_pooling:
            self._statements = PreparedStatements(self.key[0])
        out.append(m.backend_key_data(*self.key))
        out.append(m.ready_for_query(server.status))
        if self.transaction_pooling:
            pool.release(server)
        else:
            self._link(server)
        self._write(b"".join(out))
        self.phase = Phase.READY
        if self._raw:
            data, self._raw = self._raw, b""
            self._client_data(data)

    async def _scram(self) -> None:
        user = self.worker.users.get(self.user)
        # An unknown user still gets a full exchange, so user names cannot be probed.
        verifier = user if user is not None else make_verifier(secrets.token_hex(16))
        self._write(m.auth_request(m.AUTH_SASL, m.cstr(MECHANISM) + b"\x00"))
        body = await self._read_message(m.PASSWORD)
        mechanism, pos = m.read_cstr(body, 0)
        if mechanism != MECHANISM:
            raise ClientError("28000", f"sqlproxy: unsupported SASL mechanism {mechanism!r}")
        length = m.read_i32(body, pos)
        scram = ScramServer(verifier)
        failed = ClientError("28P01", f'password authentication failed for user "{self.user}"')
        try:
            server_first = scram.first(bytes(body[pos + 4 : pos + 4 + length]))
            self._write(m.auth_request(m.AUTH_SASL_CONTINUE, server_first))
            server_final = scram.final(await self._read_message(m.PASSWORD))
        except ScramError as exc:
            failed.detail = str(exc)
            raise failed from None
        if user is None:
            raise failed
        self._write(m.auth_request(m.AUTH_SASL_FINAL, server_final))

    # --- relay: client -> server -----------------------------------------------------------

    def _client_data(self, data: bytes) -> None:
        metrics.BYTES_FROM_CLIENTS.inc(len(data))
        try:
            msgs = self.framer.feed(data)
        except m.MalformedMessage as exc:
            self.fatal("08P01", f"sqlproxy: {exc}")
            return
        if self._deciding and not self._acquiring and not self._backlog:
            # COPY data of the statement being decided goes on; the rest waits for it.
            n = 0
            while n < len(msgs) and msgs[n][0] in _COPY_IN:
                n += 1
            if n:
                self._forward(msgs[:n], None)
            msgs = msgs[n:]
            if not msgs:
                return
        if self._acquiring or self._backlog or self._deciding:
            self._backlog.extend(msgs)
            return
        if self.server is None:
            if msgs and msgs[0][0] == m.TERMINATE:
                self._close_transport()
                return
            assert self.pool is not None
            idle = self.pool.acquire_idle(self.pool_key)
            if idle is None:
                self._backlog.extend(msgs)
                self._acquire_server()
                return
            self._link(idle)
        self._forward(msgs, data if self.framer.aligned else None)

    def _forward(self, msgs: list[tuple[int, memoryview]], whole: bytes | None) -> None:
        """Send client messages to the linked server; ``whole`` is the chunk they came in,
        when it was made of exactly these messages and can be written as is."""
        server = self.server
        assert server is not None and self._labels is not None
        if self._generation != self.worker.generation and not self._follow_config(server):
            return
        self._forwarded = True
        if self._carry_settings:
            self._carry_settings = False
            self._apply_settings(server)
        expect = self.tracker.expect
        statements = self._statements
        out: list[bytes | memoryview] | None = None
        for i, (kind, view) in enumerate(msgs):
            replacement: bytes | memoryview | None = None
            if kind == m.QUERY or kind == m.SYNC or kind == m.FUNCTION_CALL:
                # Each of these is answered with exactly one ReadyForQuery.
                self._started.append(time.perf_counter())
                self._labels.queries.inc()
                self._unsynced = False
                over = self.policy.rate is not None and not self._within_rate()
                if over and kind != m.SYNC:
                    expect(Request.QUERY)
                    replacement = m.query(_RATE_REFUSAL)
                elif over:
                    # The batch ran up to here: failing before its Sync rolls it back.
                    self._check_pending = self._dry_end_pending = False
                    replacement = self._inject(_RATE_REFUSAL, Action.FORWARD) + bytes(view)
                    self._expect_sync()
                elif kind == m.QUERY:
                    plan = None
                    gate = self.gate or self._bare(view)
                    if gate is not None:
                        replacement, plan = self._gate_query(gate, server, view)
                    if plan is None:
                        expect(Request.QUERY)
                    else:
                        expect(Request.QUERY, Action.CHECK_QUERY, plan)
                        self._deciding = plan.decide
                    if statements is not None:
                        self._note_statement_reset(view, server)
                elif kind == m.SYNC:
                    before = self._pending_check(server) or b""
                    if self._dry_end_pending:
                        # Roll back the batch's implicit transaction: a dry run's writes.
                        self._dry_end_pending = False
                        before += self._inject(DRY_RUN_END, Action.FORWARD)
                    if before:
                        replacement = before + bytes(view)
                    self._expect_sync()
                else:
                    expect(Request.QUERY)
                    if not self.worker.config.listen.allow_function_call:
                        replacement = self._deny_function_call()
                if self.gate is not None:
                    # The decisions made for this request, audited when it completes.
                    self._audit_pending.append(tuple(self._unit_events))
                    self._unit_events.clear()
                if self._deciding:
                    # What the client sent after it waits until the worker's COMMIT/ROLLBACK,
                    # but for its COPY data (asyncpg sends it without waiting for the answer).
                    rest = msgs[i + 1 :]
                    n = 0
                    while n < len(rest) and rest[n][0] in _COPY_IN:
                        n += 1
                    self._backlog.extend(rest[n:])
                    if out is None:
                        out = [v for _, v in msgs[:i]]
                    out.append(replacement if replacement is not None else view)
                    out.extend(v for _, v in rest[:n])
                    self._flush_out(server, msgs, out, None)
                    return
            elif kind in _EXTENDED:
                self._unsynced = True
                prefix = b""
                gate = self.gate
                if gate is None and (kind == m.PARSE or kind == m.BIND):
                    gate = self._bare(view)
                original = view
                if gate is not None and kind in (m.PARSE, m.BIND):
                    prefix, denied, view = self._gate_extended(gate, server, kind, view)
                    if denied:
                        if out is None:
                            out = [v for _, v in msgs[:i]]
                        out.append(prefix)
                        whole = None
                        continue
                renamed = None
                if statements is not None:
                    renamed = self._rename(kind, view, server, statements)
                    if renamed.message is not None:
                        replacement = renamed.replay + renamed.message
                request = _EXTENDED[kind]
                if request is Request.DESCRIBE_STATEMENT and view[5] == ord("P"):
                    request = Request.DESCRIBE_PORTAL
                tag: object = (
                    renamed.server_name if renamed is not None and kind == m.PARSE else None
                )
                if kind == m.EXECUTE and self._portal_tags:
                    tag = self._portal_tags.get(m.read_cstr(view, 5)[0])
                hold = self._check_pending and kind != m.PARSE
                expect(request, Action.HOLD if hold else Action.FORWARD, tag or None)
                if view is not original and replacement is None:
                    replacement = view
                if prefix:
                    replacement = prefix + bytes(replacement if replacement is not None else view)
                if kind == m.EXECUTE and self._preview_open:
                    # A preview inside a transaction block: undo it, keep the block.
                    self._preview_open = False
                    undo = self._inject(
                        f"ROLLBACK TO SAVEPOINT {PREVIEW_SAVEPOINT}", Action.SWALLOW
                    ) + self._inject(f"RELEASE SAVEPOINT {PREVIEW_SAVEPOINT}", Action.SWALLOW)
                    replacement = bytes(replacement if replacement is not None else view) + undo
            elif kind == m.FLUSH:
                self._unsynced = True
                check = self._pending_check(server)
                if check is not None:
                    replacement = check + bytes(view)
            elif kind == m.TERMINATE:
                self._flush_out(server, msgs[:i], out, None)
                self._close_transport()
                return
            if replacement is not None:
                if out is None:
                    out = [v for _, v in msgs[:i]]
                out.append(replacement)
                whole = None
            elif out is not None:
                out.append(view)
        self._flush_out(server, msgs, out, whole)

    # --- the guard ------------------------------------------------------------------------

    def _sql_of(self, server: ServerConnection, raw: bytes | memoryview) -> str | Deny:
        if self.settings.get("standard_conforming_strings", "on") != "on":
            return NONSTANDARD_STRINGS
        encoding = self.settings.get("client_encoding", "UTF8").upper()
        if encoding not in ("UTF8", "UTF-8", "SQL_ASCII"):
            return Deny(
                "encoding",
                f"sqlproxy: statement refused: client_encoding {encoding} is not supported",
                hint="Connect with client_encoding UTF8.",
            )
        try:
            return bytes(raw).decode()
        except UnicodeDecodeError:
            return Deny("encoding", "sqlproxy: statement refused: text is not valid UTF-8")

    def _verdict(
        self,
        gate: Gate,
        server: ServerConnection,
        raw: bytes | memoryview,
        protocol: Literal["simple", "extended"],
    ) -> Verdict:
        assert self.pool is not None
        if self.policy.limits or self.policy.honeytoken_tables:
            gate.catalog = self.pool.catalog.snapshot()
        sql = self._sql_of(server, raw)
        if isinstance(sql, Deny):
            if gate is self.gate:
                self._record(Verdict(sql, "denied"), protocol)
            return Verdict(sql, "denied")
        budget = self.policy.rows_budget
        left = 0.0
        if budget is not None:
            left = budget.left(self.user)
            gate.allowance = int(left) + sum(self._txn_rows.values())
        verdict = gate.decide(sql, autocommit=server.status == _STATUS_IDLE)
        if (
            budget is not None
            and left < 1
            and not isinstance(verdict.decision, Deny)
            and any(gate.writes(verdict.statements))
        ):
            verdict = Verdict(ROWS_EXHAUSTED, "denied", verdict.statements)
        if gate is self.gate:
            metrics.GUARD_PATHS.labels(verdict.path).inc()
            self._record(verdict, protocol)
        return verdict

    def _record(self, verdict: Verdict, protocol: Literal["simple", "extended"]) -> None:
        """Queue the audit event of a decision; it is emitted when its request completes."""
        decision = verdict.decision
        audit = self.worker.config.audit
        sampled = False
        if isinstance(decision, Deny):
            kind: Literal["allow", "deny", "alert"] = "deny"
            rule: str | None = decision.rule
            message: str | None = decision.message
            log.info("denied", extra={"rule": rule, "user": self.user, "client": self.peer})
        elif decision.alerts:
            kind, rule, message = "alert", decision.alerts[0], None
        elif (sampled := random.random() < audit.sample_allowed) or decision.verify:
            # A verified statement is kept in case the server-side check refuses it; it is
            # emitted as allowed only when sampled (see _audited).
            kind, message = "allow", None
            rule = None if sampled else _UNSAMPLED
        else:
            return
        first = verdict.statements[0] if verdict.statements else None
        target = self.gate.target(verdict.statements) if self.gate is not None else None
        self._unit_events.append(
            AuditEvent(
                id=self.worker.event_id(),
                time=time.time(),
                worker=self.worker.id,
                database=self.database,
                user=self.user,
                client=self.peer,
                application_name=self.application_name,
                decision=kind,
                rule=rule,
                fingerprint=first.fingerprint if first else "",
                normalized="; ".join(s.normalized for s in verdict.statements),
                message=message,
                protocol=protocol,
                rows={target: 0} if target else None,  # named for rows the tags report
            )
        )

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
        self, events: tuple[AuditEvent, ...], elapsed: float, rows: dict[str, int] | None = None
    ) -> None:
        tag = self._last_tag.decode(errors="replace") or None
        refusal, self._last_tag, self._guard_refusal = self._guard_refusal, b"", None
        for event in events:
            if refusal is not None and event.decision == "allow":
                # The server-side limit check refused what evaluate() let run.
                rule = "table_limit" if "table_limits" in refusal else "rate_limit"
                event.decision, event.rule, event.message = "deny", rule, refusal
            elif event.rule == _UNSAMPLED:
                continue
            event.duration_ms = round(elapsed * 1000, 3)
            target = next(iter(event.rows), "") if event.rows else ""
            event.rows = None
            if rows and event.decision != "deny":
                event.rows = {target if k == "" and target else k: v for k, v in rows.items()}
            event.command_tag = tag if event.decision != "deny" else None
            self.worker.audit.emit(event)

    def _follow_config(self, server: ServerConnection) -> bool:
        """Between transactions, take up the policy a reloaded configuration gives this
        database (a transaction in flight finishes under the one it started with). False when
        the session had to be closed instead."""
        if self._started or self._unsynced or server.status != _STATUS_IDLE:
            return True
        self._generation = self.worker.generation
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
        verdict = self._verdict(gate, server, view[5:-1], "simple")
        decision = verdict.decision
        if isinstance(decision, Deny):
            return m.query(deny_statement(decision)), None
        statements = verdict.statements
        checks = gate.checks() if verdict.check_sql is not None else None
        decide = self._decides(server)
        if checks is None and not self.modes.active and not _switches(statements) and not decide:
            return None, None
        sql = bytes(view[5:-1]).decode()
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
        check arms it for the next Sync or Flush and gets the baseline sent before it."""
        body = view[5:]
        if kind == m.BIND:
            portal, name, _ = m.split_bind(body)
            prefix = b""
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
        parsed = m.parse_parse(body)
        verdict = self._verdict(gate, server, parsed.sql.encode(), "extended")
        decision = verdict.decision
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
        if not self.modes.active and not _switches(statements):
            if self._rewritten:
                self._rewritten.pop(parsed.name, None)
            if self._dry_parsed:
                self._dry_parsed.discard(parsed.name)
            return b"", False, view
        if self.modes.active:
            self._dry_parsed.add(parsed.name)
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

    def _bind_rewritten(self, rewritten: Statement, portal: str, server: ServerConnection) -> bytes:
        """Bind of a rewritten statement: remember the tag its Execute shows; a write under dry
        run is rolled back with the batch's implicit transaction (outside a block) or at the
        block's COMMIT; a preview inside a block runs under a savepoint."""
        if rewritten.tag is not None:
            self._portal_tags[portal] = rewritten.tag
        if not rewritten.writes:
            return b""
        if server.status == _STATUS_IDLE:
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
            and (server.status == _STATUS_IDLE)
        )

    def _end_block(self, conn: ServerConnection, commit: bool) -> None:
        """End the transaction block the worker opened (QueryPlan.decide), then let the
        client's waiting messages through."""
        self._started.append(time.perf_counter())
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
        check = self.gate.check_sql(autocommit=server.status == _STATUS_IDLE)
        if not check:
            return None
        return self._inject(check, Action.CHECK)

    def _inject(self, sql: str, action: Action) -> bytes:
        """Run ``sql`` in the extended protocol under a statement and portal name of the
        worker's own (the client's unnamed ones stay as they are); only its Execute's answer
        gets ``action``, the rest is swallowed."""
        expect = self.tracker.expect
        for request in (Request.PARSE, Request.BIND, Request.CLOSE):
            expect(request, Action.SWALLOW)
        expect(Request.EXECUTE, action)
        expect(Request.CLOSE, Action.SWALLOW)
        return _injection(sql)

    def _rename(
        self, kind: int, view: memoryview, server: ServerConnection, statements: PreparedStatements
    ) -> Renamed:
        body = view[5:]
        if kind == m.PARSE:
            return statements.parse(body)
        if kind == m.BIND:
            renamed = statements.bind(body, server.prepared)
        elif kind == m.DESCRIBE or kind == m.CLOSE:
            renamed = statements.describe_or_close(kind, body, server.prepared)
        else:
            return Renamed(None)
        if renamed.replay:
            # Answered before the message itself: swallowed, the client never sent it.
            self.tracker.expect(Request.PARSE, Action.SWALLOW, renamed.server_name)
        return renamed

    def _flush_out(
        self,
        server: ServerConnection,
        msgs: list[tuple[int, memoryview]],
        out: list[bytes | memoryview] | None,
        whole: bytes | None,
    ) -> None:
        transport = server.transport
        assert transport is not None
        if whole is not None:
            transport.write(whole)
        elif out is not None:
            transport.writelines(out)
        elif msgs:
            transport.writelines([v for _, v in msgs])

    def _deny_function_call(self) -> bytes:
        """Replace a FunctionCall with a statement that fails the same way on the server, so
        the error arrives in order and aborts the transaction as a real error would."""
        metrics.ERRORS.labels("function_call_denied").inc()
        return m.query(_FUNCTION_CALL_REFUSAL)

    # --- transaction pooling: server connections come and go ------------------------------

    def _acquire_server(self) -> None:
        assert self.pool is not None and self.transport is not None
        self._acquiring = True
        self.transport.pause_reading()
        spawn(self._acquire(self.pool), name=f"acquire {self.peer}")

    async def _acquire(self, pool: Pool) -> None:
        try:
            server = await pool.acquire(self.params)
        except UpstreamError as exc:
            self._acquiring = False
            self.fatal(exc.sqlstate, f'sqlproxy: database "{self.database}": {exc.message}')
            return
        finally:
            self._acquiring = False
        if self.phase is Phase.CLOSED:
            pool.release(server)
            return
        self._link(server)
        backlog, self._backlog = self._backlog, []
        self._forward(backlog, None)
        if self.transport is not None and not self._server_paused:
            self.transport.resume_reading()

    def _link(self, server: ServerConnection) -> None:
        self.server = server
        if not self.transaction_pooling:
            self.worker.by_backend[server.pid] = self
        else:
            self._carry_settings = True
        if self._tokens:
            server.framer.whole_messages_only()
        server.link(self)
        if self._client_paused and server.transport is not None:
            server.transport.pause_reading()

    def _request_cycle_done(self, server: ServerConnection) -> None:
        """Called when no request is in flight: drain, or give back the server."""
        gate = self.gate
        if gate is not None and server.status == _STATUS_IDLE and gate.transaction_ended():
            assert self.pool is not None
            self.pool.catalog.invalidate()
        if self.worker.draining and server.status == _STATUS_IDLE and not self._unsynced:
            self.fatal("57P01", "sqlproxy: terminating connection because the worker is stopping")
            return
        if (
            self.transaction_pooling
            and not self._unsynced
            and server.status == _STATUS_IDLE
            and self.server is server
        ):
            self._release_server(server)

    def _apply_settings(self, server: ServerConnection) -> None:
        """Transaction mode: make the server's session settings the ones this client set
        (another client may have changed them on this connection, or this client changed
        them on another). Sent ahead of the client's request as a Query of its own, so it is
        in force exactly as a SET the client had sent earlier; its answers are swallowed."""
        sets = [
            f"SET {name} TO {literal(value)}"
            for name, value in self.settings.items()
            if name in _CARRIED_SETTINGS and server.params.get(name) != value
        ]
        gate = self.gate
        if gate is not None and gate.search_path != self._startup_path:
            # search_path is not reported by the server: the guard's view of it is carried,
            # so that names resolve on the server as the guard resolved them.
            sets.append(f"SET search_path TO {', '.join(map(quote_identifier, gate.search_path))}")
            server.search_path_changed = True
        elif server.search_path_changed:
            sets.append("RESET search_path")
            server.search_path_changed = False
        if sets:
            self.tracker.expect(Request.QUERY, Action.SWALLOW)
            server.write(m.query("; ".join(sets)))

    def _release_server(self, server: ServerConnection) -> None:
        assert self.pool is not None
        self.server = None
        if self.gate is not None and self.gate.search_path != self._startup_path:
            server.search_path_changed = True
        if self._client_paused and server.transport is not None:
            server.transport.resume_reading()
        if len(server.prepared) > self.pool.db.max_prepared_statements:
            server.unlink()
            spawn(self.pool.reset_and_release(server, None), name="trim prepared statements")
        else:
            self.pool.release(server)

    def _note_statement_reset(self, view: memoryview, server: ServerConnection) -> None:
        """DISCARD ALL / DEALLOCATE drop server-side statements behind our back."""
        text = bytes(view[5:40]).lower()
        if b"discard" in text or b"deallocate" in text:
            server.prepared.clear()

    # --- ending ----------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _close_transport(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def fatal(self, sqlstate: str, message: str, detail: str | None = None) -> None:
        """Send a FATAL error and close the client connection."""
        self._write(m.error_response(sqlstate, message, severity="FATAL", detail=detail))
        self._close_transport()

    def _finish(self) -> None:
        """The client is gone: return or close the server connection, forget the session."""
        metrics.CLIENT_CONNECTIONS.dec()
        self.worker.unregister(self)
        server, self.server = self.server, None
        if server is None or self.pool is None:
            return
        if self._started or self._unsynced or server.closed:
            # Mid-request: the server is busy with work nobody will read. Do not reuse it.
            server.unlink()
            server.abort()
            return
        reset = None if self.transaction_pooling else self.pool.db.server_reset_query
        spawn(self.pool.reset_and_release(server, reset), name="release server")
