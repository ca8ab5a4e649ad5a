"""Which server response answers which request, sans-io.

Every message forwarded to a server that gets an answer is recorded as an *expectation*, in
order. Server messages are matched against the head expectation as they arrive: the terminal
message of each kind of request pops it (ParseComplete for Parse, CommandComplete /
EmptyQueryResponse / PortalSuspended for Execute, ReadyForQuery for Sync and Query, ...). An
ErrorResponse in the extended protocol ends the current request and every one after it up to
the Sync, which the server skips. Asynchronous messages (NoticeResponse, NotificationResponse,
ParameterStatus) belong to no request.

Each expectation carries what to do with its answer: FORWARD it to the client, SWALLOW it
(requests the worker injected itself), or treat it as the CHECK that decides whether the
withheld answers of earlier requests are released. Nothing here does I/O.
"""

from __future__ import annotations

import enum
from typing import Final

from mypy_extensions import i64

from proxyworker.protocol import messages as m
from proxyworker.protocol.framing import accepting
from proxyworker.reuse import put


class Request(enum.IntEnum):
    PARSE = 1
    BIND = 2
    DESCRIBE_STATEMENT = 3
    DESCRIBE_PORTAL = 4
    EXECUTE = 5
    CLOSE = 6
    SYNC = 7
    QUERY = 8  # simple Query and FunctionCall: everything up to ReadyForQuery


class Action(enum.IntEnum):
    FORWARD = 0
    SWALLOW = 1  # requests the worker injected; the client never sent them
    HOLD = 2  # withheld until the next CHECK decides
    CHECK = 3  # the guard's own verification: releases or discards what is withheld
    CHECK_QUERY = 4  # a simple Query with the guard's check appended: held up to ReadyForQuery


# Terminal message kinds per request; ReadyForQuery ends SYNC and QUERY.
_TERMINAL: Final[dict[Request, frozenset[int]]] = {
    Request.PARSE: frozenset({m.PARSE_COMPLETE}),
    Request.BIND: frozenset({m.BIND_COMPLETE}),
    Request.DESCRIBE_STATEMENT: frozenset({m.ROW_DESCRIPTION, m.NO_DATA}),
    Request.DESCRIBE_PORTAL: frozenset({m.ROW_DESCRIPTION, m.NO_DATA}),
    Request.EXECUTE: frozenset({m.COMMAND_COMPLETE, m.EMPTY_QUERY, m.PORTAL_SUSPENDED}),
    Request.CLOSE: frozenset({m.CLOSE_COMPLETE}),
    Request.SYNC: frozenset({m.READY_FOR_QUERY}),
    Request.QUERY: frozenset({m.READY_FOR_QUERY}),
}
_ASYNC: Final = frozenset({m.NOTICE_RESPONSE, m.NOTIFICATION_RESPONSE, m.PARAMETER_STATUS})
_UNIT_END: Final = (Request.SYNC, Request.QUERY)


def _flags(kinds: frozenset[int]) -> bytes:
    """One byte per message kind, nonzero for ``kinds``: a lookup cheaper than a set's."""
    return bytes(kind in kinds for kind in range(256))


_TERMINAL_FLAGS: Final = {request: _flags(kinds) for request, kinds in _TERMINAL.items()}
# Server messages that are nothing but answers (no error, notice, notification, setting or
# COPY), as ``Framer.frames`` takes them for ``route_forwarded``: a ReadyForQuery with its
# status byte.
ANSWERS: Final = accepting(
    (
        m.ROW_DESCRIPTION,
        m.DATA_ROW,
        m.COMMAND_COMPLETE,
        m.READY_FOR_QUERY,
        m.PARSE_COMPLETE,
        m.BIND_COMPLETE,
        m.CLOSE_COMPLETE,
        m.NO_DATA,
        m.PARAMETER_DESCRIPTION,
        m.PORTAL_SUSPENDED,
        m.EMPTY_QUERY,
    ),
    {m.READY_FOR_QUERY: 6},
)
# Client messages a chunk forwarded as is may hold (no COPY, FunctionCall or Terminate), as
# ``Framer.frames`` takes them for ``expect_frames``: a Parse or Describe long enough to read
# its first bytes (a shorter one is answered message by message).
PLAIN: Final = accepting(
    (m.QUERY, m.SYNC, m.PARSE, m.BIND, m.DESCRIBE, m.EXECUTE, m.CLOSE, m.FLUSH),
    {m.PARSE: 7, m.DESCRIBE: 7},
)
# The request each of them is, by kind (a Describe is of a statement until its body says it is
# of a portal; Flush, answered by nothing, is none: 0).
_PLAIN_REQUESTS: Final = bytes(
    {
        m.QUERY: Request.QUERY,
        m.SYNC: Request.SYNC,
        m.PARSE: Request.PARSE,
        m.BIND: Request.BIND,
        m.DESCRIBE: Request.DESCRIBE_STATEMENT,
        m.EXECUTE: Request.EXECUTE,
        m.CLOSE: Request.CLOSE,
    }.get(kind, 0)
    for kind in range(256)
)
_PORTAL: Final = ord("P")
_DESCRIBE_STATEMENT: Final = Request.DESCRIBE_STATEMENT.value
_DESCRIBE_PORTAL: Final = Request.DESCRIBE_PORTAL.value
_COMPACT_AT: Final = 64
"""Answered expectations kept at the front of the queue before it is compacted."""


class ProtocolDesync(Exception):
    """The server answered something no request asked for."""


class Expectation:
    """One request awaiting its answer; never changed once made (shared: ``FORWARDED``)."""

    __slots__ = ("action", "forwarded_terminal", "noted", "request", "tag", "terminal")

    def __init__(
        self, request: Request, action: Action = Action.FORWARD, tag: object = None
    ) -> None:
        self.request: Final = request
        self.action: Final = action
        self.tag: Final = tag
        """Caller's data, e.g. the server-side name a Parse creates."""
        self.terminal: Final = _TERMINAL_FLAGS[request]
        """What ends the answer to this request, a flag per message kind."""
        forwarded = action is Action.FORWARD and (tag is None or request is not Request.EXECUTE)
        self.forwarded_terminal: Final = self.terminal if forwarded else None
        """What ends the answer to a request forwarded as is, a flag per message kind (an
        Execute's tag renames its CommandComplete); None for any other request
        (``route_forwarded``)."""
        self.noted: Final = forwarded and (request in _UNIT_END or tag is not None)
        """Whether ``route_forwarded`` reports this request's end: the caller keeps books
        on those ending with ReadyForQuery and on its tagged ones."""

    def __repr__(self) -> str:
        return f"Expectation({self.request!r}, {self.action!r}, {self.tag!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Expectation):
            return NotImplemented
        return (self.request, self.action, self.tag) == (other.request, other.action, other.tag)

    def __hash__(self) -> int:
        return hash((self.request, self.action))


FORWARDED: Final = tuple(Expectation(Request(n)) if n else None for n in range(len(Request) + 1))
"""The expectation of a request forwarded as is, by the request's number: most requests are,
and sharing them spares an object per message."""


class ResponseTracker:
    """The requests awaiting an answer, oldest first: ``_queue[_head:]`` (a list with a moving
    head pops from the front without a deque's method calls; it is compacted when answered
    expectations pile up at its front — not each time it empties: an emptied list frees its
    array, and the next request would allocate it again)."""

    __slots__ = ("_head", "_queue", "_skipping", "dropped", "ended", "statuses")

    def __init__(self) -> None:
        self._queue: list[Expectation] = []
        self._head = 0
        self._skipping = False
        self.dropped: list[Expectation] = []
        """Requests sent after an error whose Sync had not been sent yet: the server skips
        them. The caller takes them (as it takes what ``skip_unit`` returns)."""
        self.ended: list[Expectation] = []
        """The noted requests (``Expectation.noted``) ``route_forwarded`` found ended, from
        the first (a scratch list, ``reuse.put``: the rest is stale)."""
        self.statuses: list[bytes | None] = []
        """For each of ``ended``: the transaction status its ReadyForQuery carries (as read,
        even empty), None for a request that ends otherwise."""

    def __len__(self) -> int:
        return len(self._queue) - self._head

    def _pop(self, count: int) -> None:
        """Forget the ``count`` oldest expectations (answered)."""
        head = self._head + count
        if head >= _COMPACT_AT:
            del self._queue[:head]
            head = 0
        self._head = head

    def expect(self, request: Request, action: Action = Action.FORWARD, tag: object = None) -> None:
        if action is Action.FORWARD and tag is None:
            expectation = FORWARDED[request]
            assert expectation is not None
        else:
            expectation = Expectation(request, action, tag)
        if self._skipping:
            if request not in _UNIT_END:
                self.dropped.append(expectation)
                return
            self._skipping = False
        self._queue.append(expectation)

    def expect_frames(self, frames: bytes) -> None:
        """``expect`` for each request of a chunk forwarded as is (``Framer.frames`` with
        ``PLAIN``), in one call."""
        queue = self._queue
        i: i64 = 0
        n: i64 = len(frames)
        while i < n:
            number = _PLAIN_REQUESTS[frames[i]]
            if number == _DESCRIBE_STATEMENT and frames[i + 1] == _PORTAL:
                number = _DESCRIBE_PORTAL
            i += 2
            if not number:
                continue  # (Flush)
            expectation = FORWARDED[number]
            assert expectation is not None
            if self._skipping:
                self.expect(expectation.request)
            else:
                queue.append(expectation)

    def units_in_flight(self) -> int:
        """Requests ending with ReadyForQuery that have not been answered yet."""
        queue = self._queue
        return sum(1 for i in range(self._head, len(queue)) if queue[i].request in _UNIT_END)

    def route(self, kind: int) -> tuple[Expectation | None, bool]:
        """The request a server message answers (None: asynchronous) and whether the message
        ends that answer. After an extended-protocol error, ``skip_unit`` must be called."""
        if kind in _ASYNC:
            return None, False
        queue = self._queue
        if self._head == len(queue):
            if kind == m.ERROR_RESPONSE:
                return None, False  # the server's own FATAL before it closes (shutdown, timeout)
            raise ProtocolDesync(f"server sent {chr(kind)!r} with no request outstanding")
        head = queue[self._head]
        if head.terminal[kind] or (kind == m.ERROR_RESPONSE and head.request not in _UNIT_END):
            self._pop(1)
            return head, True
        return head, False

    def route_forwarded(self, frames: bytes) -> int:
        """``route`` for a chunk of whole messages that are only answers (``Framer.frames``
        with ``ANSWERS``) to requests forwarded as is: how many noted requests they end,
        each in ``ended`` (its status in ``statuses``). The others they end are only
        forgotten: nothing is made per request, the expectations being shared and a status
        byte a cached one-byte ``bytes``. -1, with nothing routed, when one answers no
        request or one not forwarded as is: route the chunk message by message."""
        queue = self._queue
        end = len(queue)
        head = self._head
        at = head  # the request the next message answers
        ended = self.ended
        statuses = self.statuses
        noted = 0
        i: i64 = 0
        n: i64 = len(frames)
        while i < n:
            if at == end:
                return -1
            expectation = queue[at]
            terminal = expectation.forwarded_terminal
            if terminal is None:
                return -1
            kind = frames[i]
            if terminal[kind]:
                at += 1
                if expectation.noted:
                    put(ended, noted, expectation)
                    ready = kind == m.READY_FOR_QUERY
                    put(statuses, noted, frames[i + 1 : i + 2] if ready else None)
                    noted += 1
            i += 2
        if at > head:
            self._pop(at - head)
        return noted

    def skip_unit(self) -> list[Expectation]:
        """After an ErrorResponse the server skips to the Sync: drop what it will not answer."""
        queue = self._queue
        skipped = []
        while self._head < len(queue) and queue[self._head].request not in _UNIT_END:
            skipped.append(queue[self._head])
            self._pop(1)
        # A pipelining client may not have sent the Sync yet: what it sends before it is
        # skipped by the server too, so it must not wait in the queue for an answer.
        self._skipping = not len(self)
        return skipped

    def clear(self) -> None:
        self._queue.clear()
        self._head = 0
        self._skipping = False
        self.dropped.clear()
