"""Framer playbooks: bytes in, messages out, no sockets."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxyworker.protocol import messages as m
from proxyworker.protocol.framing import CONTINUATION, Framer, accepting, following


def msg(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


STREAM = msg(b"T", b"\x00\x01a\x00" + b"\x00" * 18) + msg(b"D", b"\x00\x01\x00\x00\x00\x011")
STREAM += msg(b"C", b"SELECT 1\x00") + msg(b"Z", b"I")


def test_it_returns_whole_messages_without_copying() -> None:
    framer = Framer(1 << 20)
    out = framer.feed(STREAM)
    assert [chr(k) for k, _ in out] == ["T", "D", "C", "Z"]
    assert b"".join(bytes(v) for _, v in out) == STREAM
    assert framer.aligned and framer.pending == 0
    assert all(v.obj is out[0][1].obj for _, v in out)  # views of one buffer


def test_it_holds_a_partial_message_until_it_is_complete() -> None:
    framer = Framer(1 << 20)
    first = framer.feed(STREAM[:7])
    assert [chr(k) for k, _ in first] == []
    assert not framer.aligned and framer.pending == 7
    rest = framer.feed(STREAM[7:])
    assert [chr(k) for k, _ in rest] == ["T", "D", "C", "Z"]
    assert b"".join(bytes(v) for _, v in rest) == STREAM


@settings(max_examples=200)
@given(st.lists(st.integers(min_value=1, max_value=len(STREAM)), max_size=12))
def test_any_chunking_yields_the_same_messages(cuts: list[int]) -> None:
    framer = Framer(1 << 20)
    points = sorted(set(cuts))
    pieces = [STREAM[a:b] for a, b in zip([0, *points], [*points, len(STREAM)], strict=True)]
    got = [(k, bytes(v)) for piece in pieces for k, v in framer.feed(piece)]
    assert got == [(k, bytes(v)) for k, v in Framer(1 << 20).feed(STREAM)]


def test_it_streams_large_passthrough_messages_in_pieces() -> None:
    big = msg(b"D", b"x" * 100_000)
    framer = Framer(1 << 20, passthrough=frozenset({m.DATA_ROW}), passthrough_min=1000)
    a = framer.feed(big[:30_000])
    b = framer.feed(big[30_000:90_000])
    c = framer.feed(big[90_000:] + msg(b"Z", b"I"))
    assert [k for k, _ in a] == [m.DATA_ROW]
    assert [k for k, _ in b] == [CONTINUATION]
    assert [k for k, _ in c] == [CONTINUATION, m.READY_FOR_QUERY]
    assert b"".join(bytes(v) for _, v in a + b + c) == big + msg(b"Z", b"I")
    assert framer.pending == 0


@pytest.mark.parametrize("length", [0, 3, -1, 2_000_000])
def test_it_rejects_impossible_lengths(length: int) -> None:
    framer = Framer(1 << 20)
    with pytest.raises(m.MalformedMessage, match=f"declares {length} bytes"):
        framer.feed(b"Q" + struct.pack("!i", length) + b"...")


ANY = accepting(range(256))


def test_frames_gives_each_message_its_kind_and_first_byte_and_following_walks_them() -> None:
    framer = Framer(1 << 20, whole=ANY)
    assert framer.frames(STREAM) == b"T\x00D\x00C" + b"SZI"
    starts = starts_of(STREAM)
    assert [STREAM[s] for s in starts] == list(b"TDCZ")
    assert following(STREAM, starts[-1]) == len(STREAM)
    assert [chr(k) for k, _ in Framer(1 << 20).feed(STREAM)] == list("TDCZ")
    assert [bytes(v) for _, v in Framer(1 << 20).feed(STREAM)] == [
        STREAM[a:b] for a, b in zip(starts, [*starts[1:], len(STREAM)], strict=True)
    ]
    assert framer.aligned and framer.pending == 0
    assert framer.frames(msg(b"Z", b"")) == b"Z\x00"  # an empty body: 0
    assert framer.frames(b"") == b""


def test_frames_takes_only_the_kinds_and_lengths_its_table_accepts() -> None:
    framer = Framer(1 << 20, whole=accepting(b"TDC", {ord("C"): 10}))
    assert framer.frames(STREAM) is None  # a Z among them
    assert framer.frames(STREAM[: STREAM.index(b"Z")]) == b"T\x00D\x00CS"
    assert framer.frames(msg(b"C", b"BEGIN")) == b"CB"  # 10 bytes: enough
    assert framer.frames(msg(b"C", b"BEG\x00")) is None  # 9 bytes: not
    assert Framer(1 << 20).frames(STREAM) is None  # (by default it takes nothing)


def starts_of(chunk: bytes) -> list[int]:
    """Where the messages of a chunk ``frames`` accepts start, walked with ``following``."""
    found = Framer(1 << 20, whole=ANY).frames(chunk)
    assert found is not None
    starts = [0]
    for _ in range(len(found) // 2 - 1):
        starts.append(following(chunk, starts[-1]))
    return starts


@settings(max_examples=200)
@given(st.integers(min_value=1, max_value=len(STREAM) - 1))
def test_frames_leaves_any_other_chunk_to_feed(cut: int) -> None:
    framer = Framer(1 << 20, whole=ANY)
    boundaries = set(starts_of(STREAM))
    head = framer.frames(STREAM[:cut])
    if cut in boundaries:
        assert head is not None
        assert len(head) // 2 == len([b for b in boundaries if b < cut])  # up to the cut
    else:
        assert head is None and framer.pending == 0  # nothing consumed: feed takes it all
        assert (
            b"".join(bytes(v) for _, v in framer.feed(STREAM[:cut]))
            == STREAM[:cut][: max(b for b in boundaries if b < cut)]
        )
    # Something held back by feed: frames declines until it is complete.
    framer = Framer(1 << 20, whole=ANY)
    framer.feed(STREAM[:3])
    assert framer.frames(STREAM[3:]) is None
    assert b"".join(bytes(v) for _, v in framer.feed(STREAM[3:])) == STREAM


@pytest.mark.parametrize("length", [0, 3, -1, 2_000_000])
def test_frames_declines_impossible_lengths_so_feed_reports_them(length: int) -> None:
    framer = Framer(1 << 20, whole=ANY)
    bad = b"Q" + struct.pack("!i", length) + b"..."
    assert framer.frames(bad) is None
    with pytest.raises(m.MalformedMessage):
        framer.feed(bad)
