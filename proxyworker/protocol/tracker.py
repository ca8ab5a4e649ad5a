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
from collections import deque
from dataclasses import dataclass

from proxyworker.protocol import messages as m


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
_TERMINAL: dict[Request, frozenset[int]] = {
    Request.PARSE: frozenset({m.PARSE_COMPLETE}),
    Request.BIND: frozenset({m.BIND_COMPLETE}),
    Request.DESCRIBE_STATEMENT: frozenset({m.ROW_DESCRIPTION, m.NO_DATA}),
    Request.DESCRIBE_PORTAL: frozenset({m.ROW_DESCRIPTION, m.NO_DATA}),
    Request.EXECUTE: frozenset({m.COMMAND_COMPLETE, m.EMPTY_QUERY, m.PORTAL_SUSPENDED}),
    Request.CLOSE: frozenset({m.CLOSE_COMPLETE}),
    Request.SYNC: frozenset({m.READY_FOR_QUERY}),
    Request.QUERY: frozenset({m.READY_FOR_QUERY}),
}
_ASYNC = frozenset({m.NOTICE_RESPONSE, m.NOTIFICATION_RESPONSE, m.PARAMETER_STATUS})
_UNIT_END = (Request.SYNC, Request.QUERY)


class ProtocolDesync(Exception):
    """The server answered something no request asked for."""


@dataclass(frozen=True, slots=True)
class Expectation:
    request: Request
    action: Action = Action.FORWARD
    tag: object = None
    """Caller's data, e.g. the server-side name a Parse creates."""


# The expectation of a request forwarded as is, one per kind of request: most requests are,
# and sharing them spares an object per message.
# (Keyed by int: ``expect_forwarded`` looks them up by the requests' numbers.)
_FORWARDED: dict[int, Expectation] = {r: Expectation(r) for r in Request}


def _forwarded_terminal(expectation: Expectation) -> frozenset[int] | None:
    """What ends the answer to a request forwarded as is; None for any other request."""
    if expectation.action is not Action.FORWARD or (
        expectation.tag is not None and expectation.request is Request.EXECUTE
    ):
        return None
    return _TERMINAL[expectation.request]


class ResponseTracker:
    __slots__ = ("_queue", "_skipping", "dropped")

    def __init__(self) -> None:
        self._queue: deque[Expectation] = deque()
        self._skipping = False
        self.dropped: list[Expectation] = []
        """Requests sent after an error whose Sync had not been sent yet: the server skips
        them. The caller takes them (as it takes what ``skip_unit`` returns)."""

    def __len__(self) -> int:
        return len(self._queue)

    def expect(self, request: Request, action: Action = Action.FORWARD, tag: object = None) -> None:
        expectation = (
            _FORWARDED[request]
            if action is Action.FORWARD and tag is None
            else Expectation(request, action, tag)
        )
        if self._skipping:
            if request not in _UNIT_END:
                self.dropped.append(expectation)
                return
            self._skipping = False
        self._queue.append(expectation)

    def expect_forwarded(self, requests: bytes | bytearray) -> None:
        """``expect`` for requests forwarded as is, given as their numbers (``Request``
        values, one byte each)."""
        if self._skipping:
            for number in requests:
                self.expect(Request(number))
        else:
            self._queue.extend(map(_FORWARDED.__getitem__, requests))

    def units_in_flight(self) -> int:
        """Requests ending with ReadyForQuery that have not been answered yet."""
        return sum(1 for e in self._queue if e.request in _UNIT_END)

    def route(self, kind: int) -> tuple[Expectation | None, bool]:
        """The request a server message answers (None: asynchronous) and whether the message
        ends that answer. After an extended-protocol error, ``skip_unit`` must be called."""
        if kind in _ASYNC:
            return None, False
        queue = self._queue
        if not queue:
            if kind == m.ERROR_RESPONSE:
                return None, False  # the server's own FATAL before it closes (shutdown, timeout)
            raise ProtocolDesync(f"server sent {chr(kind)!r} with no request outstanding")
        head = queue[0]
        if kind in _TERMINAL[head.request] or (
            kind == m.ERROR_RESPONSE and head.request not in _UNIT_END
        ):
            queue.popleft()
            return head, True
        return head, False

    def route_forwarded(self, kinds: bytes | bytearray) -> list[tuple[int, Expectation]] | None:
        """``route`` for a run of messages none of which is asynchronous or an error, when
        each answers a request forwarded as is (FORWARD, no tag on an Execute): the requests
        they end, each with the index of the message that ends it. None, with nothing
        routed, when one does not (or answers no request): route them one by one."""
        queue = self._queue
        depth = len(queue)
        ended: list[tuple[int, Expectation]] = []
        at = 0  # the request the next message answers
        terminal = _forwarded_terminal(queue[0]) if depth else None
        for index, kind in enumerate(kinds):
            if terminal is None:
                return None
            if kind in terminal:
                ended.append((index, queue[at]))
                at += 1
                terminal = _forwarded_terminal(queue[at]) if at < depth else None
        for _ in range(at):
            queue.popleft()
        return ended

    def skip_unit(self) -> list[Expectation]:
        """After an ErrorResponse the server skips to the Sync: drop what it will not answer."""
        queue = self._queue
        skipped = []
        while queue and queue[0].request not in _UNIT_END:
            skipped.append(queue.popleft())
        # A pipelining client may not have sent the Sync yet: what it sends before it is
        # skipped by the server too, so it must not wait in the queue for an answer.
        self._skipping = not queue
        return skipped

    def clear(self) -> None:
        self._queue.clear()
        self._skipping = False
        self.dropped.clear()
