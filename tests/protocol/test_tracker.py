"""ResponseTracker playbooks: which server message answers which request."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from proxyworker.protocol import messages as m
from proxyworker.protocol.framing import Framer
from proxyworker.protocol.tracker import (
    ANSWERS,
    Action,
    Expectation,
    ProtocolDesync,
    Request,
    ResponseTracker,
)


def routes(tracker: ResponseTracker, kinds: str) -> list[tuple[str | None, bool]]:
    out = []
    for k in kinds:
        expectation, ends = tracker.route(ord(k))
        out.append((expectation.request.name if expectation else None, ends))
        if (
            ends
            and k == "E"
            and expectation
            and expectation.request not in (Request.SYNC, Request.QUERY)
        ):
            tracker.skip_unit()
    return out


def test_it_matches_an_extended_batch() -> None:
    t = ResponseTracker()
    for r in (Request.PARSE, Request.BIND, Request.DESCRIBE_PORTAL, Request.EXECUTE, Request.SYNC):
        t.expect(r)
    assert routes(t, "12TDDCZ") == [
        ("PARSE", True),
        ("BIND", True),
        ("DESCRIBE_PORTAL", True),
        ("EXECUTE", False),
        ("EXECUTE", False),
        ("EXECUTE", True),
        ("SYNC", True),
    ]
    assert len(t) == 0


def test_describe_statement_ends_at_its_row_description() -> None:
    t = ResponseTracker()
    t.expect(Request.DESCRIBE_STATEMENT)
    t.expect(Request.SYNC)
    assert routes(t, "tnZ") == [
        ("DESCRIBE_STATEMENT", False),
        ("DESCRIBE_STATEMENT", True),
        ("SYNC", True),
    ]


def test_an_error_skips_to_the_sync() -> None:
    t = ResponseTracker()
    for r in (
        Request.PARSE,
        Request.BIND,
        Request.EXECUTE,
        Request.CLOSE,
        Request.SYNC,
        Request.QUERY,
    ):
        t.expect(r)
    t.route(m.PARSE_COMPLETE)
    expectation, ends = t.route(m.ERROR_RESPONSE)
    assert expectation is not None and expectation.request is Request.BIND and ends
    assert [e.request for e in t.skip_unit()] == [Request.EXECUTE, Request.CLOSE]
    assert routes(t, "Z") == [("SYNC", True)]
    # In a simple Query an error does not end the request; ReadyForQuery does.
    assert routes(t, "TDEZ") == [("QUERY", False)] * 3 + [("QUERY", True)]


def test_asynchronous_messages_belong_to_no_request() -> None:
    t = ResponseTracker()
    t.expect(Request.QUERY)
    assert routes(t, "NSACZ") == [
        (None, False),
        (None, False),
        (None, False),
        ("QUERY", False),
        ("QUERY", True),
    ]


def test_it_keeps_each_requests_action_and_tag() -> None:
    t = ResponseTracker()
    t.expect(Request.PARSE, Action.SWALLOW, "_sqlp1_1")
    t.expect(Request.BIND)
    first, _ = t.route(m.PARSE_COMPLETE)
    assert first is not None and (first.action, first.tag) == (Action.SWALLOW, "_sqlp1_1")
    second, _ = t.route(m.BIND_COMPLETE)
    assert second is not None and second.action is Action.FORWARD


def test_an_error_with_nothing_outstanding_is_the_servers_own() -> None:
    # e.g. FATAL 57P01 on an idle connection before the server closes it
    assert ResponseTracker().route(m.ERROR_RESPONSE) == (None, False)


def test_it_refuses_an_answer_nobody_asked_for() -> None:
    t = ResponseTracker()
    try:
        t.route(m.COMMAND_COMPLETE)
    except ProtocolDesync as exc:
        assert "no request outstanding" in str(exc)
    else:
        raise AssertionError("expected ProtocolDesync")


def test_an_error_before_the_sync_was_sent_drops_what_the_client_pipelines_after_it() -> None:
    # psycopg's executemany: Parse/Bind/Execute go out, the Parse fails, and only then do
    # the next Bind/Execute and the Sync arrive. The server skips those Binds and Executes.
    t = ResponseTracker()
    t.expect(Request.PARSE, Action.FORWARD, "_sqlp1_1")
    t.expect(Request.BIND)
    t.expect(Request.EXECUTE)
    assert routes(t, "E") == [("PARSE", True)]
    t.expect(Request.PARSE, Action.SWALLOW, "_sqlp1_1")  # a replay the worker would add
    t.expect(Request.BIND)
    t.expect(Request.EXECUTE)
    t.expect(Request.SYNC)
    assert [(e.request, e.tag) for e in t.dropped] == [
        (Request.PARSE, "_sqlp1_1"),
        (Request.BIND, None),
        (Request.EXECUTE, None),
    ]
    assert routes(t, "Z") == [("SYNC", True)]
    assert len(t) == 0
    t.expect(Request.QUERY)  # after the Sync, requests are answered again
    assert routes(t, "CZ") == [("QUERY", False), ("QUERY", True)]


_REQUESTS = st.sampled_from(list(Request))
_KINDS = st.sampled_from(list("123CDITZnst") * 3 + list("ENSAdGHc"))  # mostly answers
_NOT_ANSWERS = "ENSAdGHc"  # error, notice, parameter, notification, COPY: route them one by one


def chunk(kinds: str) -> bytes:
    """Whole messages of these kinds: empty bodies, but a ReadyForQuery's status "I"."""
    return b"".join(
        k.encode() + (b"\x00\x00\x00\x05I" if k == "Z" else b"\x00\x00\x00\x04") for k in kinds
    )


def routed(tracker: ResponseTracker, kinds: str) -> list[tuple[bytes | None, Expectation]] | None:
    """The noted requests ``route_forwarded`` ends for a chunk of these kinds, with their
    statuses; None: not routed."""
    noted = route_chunk(tracker, chunk(kinds))
    if noted < 0:
        return None
    return list(zip(tracker.statuses[:noted], tracker.ended[:noted], strict=True))


def route_chunk(tracker: ResponseTracker, data: bytes) -> int:
    """``route_forwarded`` as the relay calls it: on the chunk's ``frames`` of ``ANSWERS``
    (-1 when the chunk has other messages: routed one by one)."""
    frames = Framer(1 << 20, whole=ANSWERS).frames(data)
    return -1 if frames is None else tracker.route_forwarded(frames)


_ACTIONS = st.sampled_from([Action.FORWARD] * 4 + list(Action))  # mostly forwarded as is


@settings(max_examples=300)
@given(
    st.lists(st.tuples(_REQUESTS, _ACTIONS, st.booleans()), max_size=6),
    st.lists(_KINDS, max_size=10),
)
def test_route_forwarded_routes_as_route_does_or_not_at_all(
    requests: list[tuple[Request, Action, bool]], kinds: list[str]
) -> None:
    batch, single = ResponseTracker(), ResponseTracker()
    for request, action, tagged in requests:
        for t in (batch, single):
            t.expect(request, action, "tag" if tagged else None)
    ended = routed(batch, "".join(kinds))
    if ended is None:
        assert len(batch) == len(requests)  # nothing routed
        return
    assert not set(kinds) & set(_NOT_ANSWERS)
    expected = []
    for k in kinds:
        expectation, ends = single.route(ord(k))
        assert expectation is not None and expectation.action is Action.FORWARD
        assert not (expectation.request is Request.EXECUTE and expectation.tag is not None)
        unit = expectation.request in (Request.SYNC, Request.QUERY)
        if ends and (unit or expectation.tag is not None):
            expected.append((b"I" if unit else None, expectation))
    assert ended == expected
    assert len(batch) == len(single)


def test_route_forwarded_takes_an_extended_batch_at_once() -> None:
    t = ResponseTracker()
    t.expect(Request.PARSE, tag="_sqlp1_1")  # a renamed Parse: its end is noted
    for r in (Request.BIND, Request.DESCRIBE_PORTAL, Request.EXECUTE, Request.SYNC):
        t.expect(r)
    ended = routed(t, "12TDDCZ")
    assert ended is not None
    assert [(status, e.request, e.tag) for status, e in ended] == [
        (None, Request.PARSE, "_sqlp1_1"),
        (b"I", Request.SYNC, None),
    ]
    assert len(t) == 0
    t.expect(Request.SYNC)
    t.expect(Request.SYNC)
    # Two ReadyForQuery, each with its own status; what the chunk ends is forgotten.
    data = b"Z\x00\x00\x00\x05TZ\x00\x00\x00\x05I"
    assert route_chunk(t, data) == 2 and t.statuses[:2] == [b"T", b"I"] and len(t) == 0
    t.expect(Request.SYNC)
    # A ReadyForQuery without its status byte: routed one by one (``route``).
    assert route_chunk(t, b"Z\x00\x00\x00\x04") == -1 and len(t) == 1
    t = ResponseTracker()
    t.expect(Request.QUERY, Action.CHECK_QUERY)
    assert routed(t, "CZ") is None and len(t) == 1  # not forwarded as is
    assert routed(ResponseTracker(), "Z") is None  # nothing asked for it
    t = ResponseTracker()
    t.expect(Request.QUERY)
    assert routed(t, "NCZ") is None and len(t) == 1  # a notice: one by one


# The client message of each request, as (kind, first byte of its body).
_MESSAGES = {
    Request.PARSE: b"P\x00",
    Request.BIND: b"B\x00",
    Request.DESCRIBE_STATEMENT: b"DS",
    Request.DESCRIBE_PORTAL: b"DP",
    Request.EXECUTE: b"E\x00",
    Request.CLOSE: b"CS",
    Request.SYNC: b"S\x00",
    Request.QUERY: b"QS",
}


@settings(max_examples=200)
@given(
    st.lists(_REQUESTS, max_size=8),
    st.lists(st.one_of(_REQUESTS, st.none()), max_size=8),
    st.booleans(),
)
def test_expect_frames_expects_as_expect_does(
    before: list[Request], requests: list[Request | None], after_an_error: bool
) -> None:
    """Each request of a chunk's frames (None: a Flush, which asks for nothing)."""
    batch, single = ResponseTracker(), ResponseTracker()
    for t in (batch, single):
        for request in before:
            t.expect(request)
        if after_an_error and len(t):
            t.route(m.ERROR_RESPONSE)  # the server now skips to the Sync
            t.skip_unit()
    batch.expect_frames(b"".join(b"H\x00" if r is None else _MESSAGES[r] for r in requests))
    for request in requests:
        if request is not None:
            single.expect(request)
    assert batch._queue[batch._head :] == single._queue[single._head :]
    assert batch.dropped == single.dropped
