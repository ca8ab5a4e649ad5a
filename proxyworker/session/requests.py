"""Client to server: framing the client's bytes into messages, gathering them into request
units, and forwarding them — as the very chunk received when no message changed (zero-copy),
otherwise message by message with the guard's replacements (``guarded.py``) and the renamed
prepared statements of transaction mode (``pooling.py``). A chunk with nothing for either
(``_forward_plain``) is not cut into messages at all: one pass over its lengths, one batch of
expected answers, one write.

A client with no server connection (transaction mode, between transactions) waits for one
with its messages kept in order in a backlog.
"""

from __future__ import annotations

import logging
from typing import Final

from mypy_extensions import i64

from proxyworker import clocks, metrics, sockets
from proxyworker.guard.checks import RATE_SQLSTATE, raise_sql
from proxyworker.guard.rewrite import DRY_RUN_END, PREVIEW_SAVEPOINT
from proxyworker.protocol import messages as m
from proxyworker.protocol.framing import following
from proxyworker.protocol.tracker import Action, Request
from proxyworker.session.guarded import mentions_proxy
from proxyworker.session.responses import Responses
from proxyworker.session.state import COPY_IN
from proxyworker.upstream.connection import ServerConnection

log = logging.getLogger(__name__)

_FUNCTION_CALL_REFUSAL: Final = raise_sql(
    "sqlproxy: the FunctionCall protocol message is not allowed",
    detail="FunctionCall carries no SQL text the proxy could check.",
    hint="Call the function with SELECT, or set listen.allow_function_call.",
)


_RATE_REFUSAL: Final = raise_sql(
    "sqlproxy: statement refused by rate_limits",
    detail="Too many statements per second for this user, client address or database.",
    hint="Slow down and retry.",
    sqlstate=RATE_SQLSTATE,
)


# Extended-protocol messages that are answered, and the request each one is.
_EXTENDED: Final = {
    m.PARSE: Request.PARSE,
    m.BIND: Request.BIND,
    m.DESCRIBE: Request.DESCRIBE_STATEMENT,  # or DESCRIBE_PORTAL, by its first byte
    m.EXECUTE: Request.EXECUTE,
    m.CLOSE: Request.CLOSE,
}
_PORTAL: Final = ord("P")
write: Final = sockets.write


class Requests(Responses):
    """The relay from the client to the server."""

    def _client_data(self, data: bytes) -> None:
        metrics.BYTES_FROM_CLIENTS.inc(len(data))
        if not self._deciding and not self._acquiring and not self._backlog:
            server = self.server
            if server is None and data[0] != m.TERMINATE:
                assert self.pool is not None
                server = self.pool.acquire_idle(self.pool_key)
                if server is not None:
                    self._link(server)
            if server is not None and self._forward_plain(server, data):
                return
        try:
            msgs = self.framer.feed(data)
        except m.MalformedMessage as exc:
            self.fatal("08P01", f"sqlproxy: {exc}")
            return
        if self._deciding and not self._acquiring and not self._backlog:
            # COPY data of the statement being decided goes on; the rest waits for it.
            n = 0
            while n < len(msgs) and msgs[n][0] in COPY_IN:
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

    def _forward_plain(self, server: ServerConnection, data: bytes) -> bool:
        """The common chunk, forwarded as it came after one pass over its lengths: whole
        Query, Sync and extended-protocol messages whose statements the guard, if any, has
        already decided to let through as they are (``_remembered_plain``), in a session with
        nothing for the rate limits, dry run or preview, the worker's own settings or
        transaction mode's renaming to do. The same bookkeeping as ``_forward``; False, with
        nothing done, for any other chunk."""
        gate = self.gate
        if (
            self.policy.rate is not None
            or self.modes.active
            or self._generation != self.worker.generation
            or self._check_pending
            or self._dry_end_pending
            or self._decide_pending
            or self._preview_open
            or self._portal_tags
            or (
                gate is not None
                and (
                    len(self._tokens) != 0  # (len: compiled, a tuple's truth is a call)
                    or self._unit_events
                    or self.policy.rows_budget is not None
                    or self._sample_allowed
                )
            )
        ):
            return False
        frames = self.framer.frames(data)
        if frames is None:
            return False
        statements = self._statements
        units = binds = 0
        kind = 0
        i: i64 = 0
        walk: i64 = 0  # messages up to the last Query or Parse
        count: i64 = len(frames)
        while i < count:
            kind = frames[i]
            if kind == m.QUERY or kind == m.SYNC:
                units += 1
                if kind == m.QUERY:
                    walk = i // 2 + 1
            elif kind == m.BIND:
                binds += 1
            elif kind == m.PARSE:
                if statements is not None and frames[i + 1]:
                    return False  # transaction mode: a named statement to rename
                walk = i // 2 + 1
            i += 2
        last = kind
        if statements is not None and statements:
            return False  # transaction mode: the client's named statements to rename
        # DISCARD ALL / DEALLOCATE matter only while the server holds prepared statements.
        resets = statements is not None and bool(server.prepared)
        if gate is None and mentions_proxy(data):
            # The worker's own settings (Guarded._bare); a guarded session's are statements
            # its gate decides, and their verdicts are never remembered as plain.
            return False
        if gate is not None and (
            (binds and self._bind_armed())
            or not self._remembered_plain(gate, data, walk)  # (last: it counts)
        ):
            return False
        if resets:
            text = data.lower()
            if text.find(b"discard") >= 0 or text.find(b"deallocate") >= 0:
                start: i64 = 0
                n: i64 = len(data)
                while start < n:
                    if data[start] == m.QUERY:
                        self._note_statement_reset(memoryview(data)[start:], server)
                    start = following(data, start)
        if self._carry_settings:
            self._carry_settings = False
            self._apply_settings(server)
        self.tracker.expect_frames(frames)
        if units:
            now = clocks.perf_counter()
            started = self._started
            for _unit in range(units):  # (named: ``_`` is an object here, boxed each time)
                started.append(now)
            assert self._labels is not None
            self._labels.queries.inc(units)
            if gate is not None:
                self._audit_pending.skip(units)  # (nothing to audit)
                if len(self._parsed_now) != 0:  # (as _tokens above)
                    self._parsed_now.clear()
        self._unsynced = last != m.QUERY and last != m.SYNC
        self._forwarded = True
        transport = server.transport
        assert transport is not None
        write(transport, data)
        return True

    def _forward(self, msgs: list[tuple[int, memoryview]], whole: bytes | None) -> None:
        """Send client messages to the linked server; ``whole`` is the chunk they came in,
        when it was made of exactly these messages and can be written as is. A message whose
        body breaks the protocol ends the session with 08P01, as the server would end it
        (and the server connection with it: part of the chunk may have reached it)."""
        try:
            self._forward_messages(msgs, whole)
        except m.MalformedMessage as malformed:  # (a name of its own: docs/compiled.md)
            self._unsynced = True  # (so _finish does not return the server to the pool)
            self.fatal("08P01", f"sqlproxy: {malformed}")

    def _forward_messages(self, msgs: list[tuple[int, memoryview]], whole: bytes | None) -> None:
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
                self._started.append(clocks.perf_counter())
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
                    self._parsed_now.clear()
                    # The decisions made for this request, audited when it completes.
                    if self._unit_events or self.policy.rows_budget is not None:
                        self._audit_pending.append(self._audit_slot())
                    else:
                        self._audit_pending.skip(1)  # (_audit_slot's None, without the call)
                if self._deciding:
                    # What the client sent after it waits until the worker's COMMIT/ROLLBACK,
                    # but for its COPY data (asyncpg sends it without waiting for the answer).
                    rest = msgs[i + 1 :]
                    n = 0
                    while n < len(rest) and rest[n][0] in COPY_IN:
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
                if gate is not None and (
                    kind == m.PARSE or (kind == m.BIND and self._bind_armed())
                ):
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
                    if renamed is not None and renamed.message is not None:
                        replacement = renamed.replay + renamed.message
                request = _EXTENDED[kind]
                if request is Request.DESCRIBE_STATEMENT:
                    if len(view) < 7:
                        raise m.MalformedMessage("Describe names no statement or portal")
                    if view[5] == _PORTAL:
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
            write(transport, whole)
        elif out is not None:
            transport.writelines(out)
        elif msgs:
            transport.writelines([v for _, v in msgs])

    def _deny_function_call(self) -> bytes:
        """Replace a FunctionCall with a statement that fails the same way on the server, so
        the error arrives in order and aborts the transaction as a real error would."""
        metrics.ERRORS.labels("function_call_denied").inc()
        return m.query(_FUNCTION_CALL_REFUSAL)
