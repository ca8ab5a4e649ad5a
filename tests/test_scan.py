"""The hot path's byte scans (``proxyworker/scan.py``): what each answers, in both versions,
and the C extension (``proxyworker/_scan.c``) agreeing with the Python one on any input."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxyworker import scan

try:
    from proxyworker import _scan
except ImportError:  # not built
    _scan = None  # type: ignore[assignment]

needs_build = pytest.mark.skipif(_scan is None, reason="needs `make build`")

ALL = bytes([5] * 256)
"""A ``shortest`` table accepting every kind."""


def msg(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!i", len(body) + 4) + body


def versions() -> list[Any]:
    """The scan functions as the Python module and, when built, as the extension."""
    return [pytest.param(scan, id="python")] + (
        [] if _scan is None else [pytest.param(_scan, id="c")]
    )


def frames_of(module: Any) -> Callable[[bytes, int, bytes], bytes | None]:
    """``Frames(limit, shortest)(data)`` of that version, as one call."""
    frames = module.FramesPy if module is scan else module.Frames
    return lambda data, limit, shortest: frames(limit, shortest)(data)  # type: ignore[no-any-return]


@pytest.mark.parametrize("module", versions())
def test_frames(module: Any) -> None:
    frames = frames_of(module)
    parse = msg(b"P", b"\x00SELECT 1\x00\x00\x00")  # 17 bytes
    chunk = parse + msg(b"S", b"") + msg(b"D", b"Pname\x00")
    assert frames(chunk, 1 << 20, ALL) == b"P\x00S\x00DP"
    assert frames(b"", 1 << 20, ALL) == b""
    assert frames(chunk[:-1], 1 << 20, ALL) is None  # the last message cut short
    assert frames(chunk + b"S\x00\x00", 1 << 20, ALL) is None  # a header cut short
    only_p = bytes(5 if kind == ord("P") else 0 for kind in range(256))
    assert frames(chunk, 1 << 20, only_p) is None  # a kind not accepted
    assert frames(parse, 1 << 20, only_p) == b"P\x00"
    assert frames(parse, 15, only_p) is None  # declares more than the limit (16)
    assert frames(parse, 16, only_p) == b"P\x00"
    long_p = bytes(18 if kind == ord("P") else 0 for kind in range(256))
    assert frames(parse, 1 << 20, long_p) is None  # shorter than its kind's shortest
    for length in (0, 3, -1, 2**31 + 10):
        bad = b"S" + struct.pack("!I", length % 2**32) + b"..."
        assert frames(bad, 1 << 20, ALL) is None


@pytest.mark.parametrize("module", versions())
def test_frames_refuses_a_table_of_another_size(module: Any) -> None:
    with pytest.raises(ValueError, match="256 bytes"):
        (module.FramesPy if module is scan else module.Frames)(10, b"\x05")


@needs_build
def test_the_c_frames_refuses_what_is_not_bytes() -> None:
    assert _scan is not None
    frames = _scan.Frames(10, ALL)
    with pytest.raises(TypeError, match="'data' must be bytes"):
        frames(bytearray(b"S\x00\x00\x00\x04"))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="one argument"):
        frames(b"", b"")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="cannot be interpreted as an integer"):
        _scan.Frames("10", ALL)  # type: ignore[arg-type]


@pytest.mark.parametrize("module", versions())
def test_same_shape(module: Any) -> None:
    same_shape = module.same_shape_py if module is scan else module.same_shape
    text = b"SELECT * FROM t1 WHERE id = 42 AND n = 7"
    fixed = b"\xff"  # run 0, the 1 of t1; the others are not
    assert same_shape(text, text, fixed) == scan.SAME_TEXT
    assert same_shape(text.replace(b"42", b"99"), text, fixed) == scan.SAME_SHAPE
    assert same_shape(text.replace(b"42", b"123456"), text, fixed) == scan.SAME_SHAPE
    assert same_shape(text.replace(b"= 7", b"= 70"), text, fixed) == scan.SAME_SHAPE
    assert same_shape(text.replace(b"t1", b"t2"), text, fixed) == scan.FIXED_DIFFERS
    assert same_shape(text.replace(b"t1", b"t10"), text, fixed) == scan.FIXED_DIFFERS
    assert same_shape(text.replace(b"42", b"4x"), text, fixed) == scan.OTHER_SHAPE
    assert same_shape(text.replace(b"42", b"4 2"), text, fixed) == scan.OTHER_SHAPE
    assert same_shape(text + b" ", text, fixed) == scan.OTHER_SHAPE
    assert same_shape(text[:-1], text, fixed) == scan.OTHER_SHAPE  # a run less
    # A fixed run changed and, later, a letter: another shape, not a fixed difference.
    assert same_shape(text.replace(b"t1", b"t2")[:-1] + b"x", text, fixed) == scan.OTHER_SHAPE
    assert same_shape(text.replace(b"t1", b"t2"), text, b"") == scan.SAME_SHAPE  # none fixed
    assert same_shape(text.replace(b"= 7", b"= 8"), text, b"\x00\x00\xff") == (scan.FIXED_DIFFERS)
    assert same_shape(text.replace(b"42", b"99"), text, None) == scan.FIXED_DIFFERS  # all
    assert same_shape(text, text, None) == scan.SAME_TEXT
    # Long texts: the equal stretches are skipped a word at a time.
    long = b"SELECT abalance FROM pgbench_accounts WHERE aid = 1234567;" * 3
    assert same_shape(long.replace(b"1234567", b"89"), long, b"") == scan.SAME_SHAPE
    assert same_shape(long.replace(b"aid", b"bid"), long, b"") == scan.OTHER_SHAPE
    assert same_shape(long.replace(b"1234567", b"1234568"), long, None) == scan.FIXED_DIFFERS
    # As long a text with a digit's place taken by a byte next to the digits, or by one whose
    # low 7 bits are a digit's: another shape (16 bytes compared at once, as 8 are).
    for other in (b"/", b":", b"\xb1", b"\xb9", b"\xb0"):
        for stored in (long, b"aid = 1234567;"):
            changed = stored.replace(b"4", other)
            assert same_shape(changed, stored, b"") == scan.OTHER_SHAPE
            assert same_shape(stored, changed, b"") == scan.OTHER_SHAPE
    # A run one text continues past the first word's end, where the two were equal.
    assert same_shape(b"SELECT 12 x", b"SELECT 1 x", b"") == scan.SAME_SHAPE
    assert same_shape(b"SELECT 1 x", b"SELECT 12 x", None) == scan.FIXED_DIFFERS
    # Of one length: runs moved ("1 22" / "11 2") are another shape only if the bytes between
    # differ; runs of as many digits that differ, by the fixed ones.
    assert same_shape(b"a=1 b=22", b"a=11 b=2", b"") == scan.SAME_SHAPE
    assert same_shape(b"a=1 b=22", b"a=11 c=2", b"") == scan.OTHER_SHAPE
    assert same_shape(b"a=1 b=22", b"a=2 b=22", b"\x00\xff") == scan.SAME_SHAPE
    assert same_shape(b"a=1 b=22", b"a=1 b=23", b"\x00\xff") == scan.FIXED_DIFFERS
    assert same_shape(b"x1", b"xa", b"") == scan.OTHER_SHAPE  # short: byte by byte


@pytest.mark.parametrize("module", versions())
def test_same_shape_of_a_text_inside_a_message(module: Any) -> None:
    same_shape = module.same_shape_py if module is scan else module.same_shape
    text = b"SELECT abalance FROM pgbench_accounts WHERE aid = 42;"
    query = msg(b"Q", text.replace(b"42", b"7") + b"\x00")
    assert same_shape(query, text, b"", 5, len(query) - 1) == scan.SAME_SHAPE
    assert same_shape(query, text, b"", 5, len(query)) == scan.OTHER_SHAPE  # (the NUL)
    assert same_shape(query, query, b"", 0, len(query)) == scan.SAME_TEXT
    assert same_shape(b"xx 1 yy", b"1", None, 3, 4) == scan.SAME_TEXT
    for start, end in [(-1, 3), (4, 3), (0, len(query) + 1)]:
        with pytest.raises(ValueError, match="is not within"):
            same_shape(query, text, b"", start, end)


@pytest.mark.parametrize("module", versions())
def test_shape_hash(module: Any) -> None:
    shape_hash = module.shape_hash_py if module is scan else module.shape_hash
    text = b"SELECT * FROM t12 WHERE id = 345 AND x = '6a7'"
    same = [text, text.replace(b"345", b"9"), text.replace(b"t12", b"t1"), b"SELECT 1" * 0 + text]
    assert {shape_hash(t) for t in same} == {shape_hash(text)}
    others = [
        text.replace(b"id", b"ix"),
        text + b" ",
        text.replace(b"345", b"3 5"),  # two runs
        text.replace(b"345", b""),  # none
        b"",
        b"0",
        b"\x00",  # (a NUL is not the padding)
        b"\x00" * 8,
        b"SELECT 1",
        b"SELECT 1 ",
        b"SELECT 1;",
    ]
    hashes = [shape_hash(t) for t in [text, *others]]
    assert len(set(hashes)) == len(hashes)
    assert all(0 <= h < 2**64 for h in hashes)


@pytest.mark.parametrize("module", versions())
def test_contains_any(module: Any) -> None:
    contains_any = module.contains_any_py if module is scan else module.contains_any
    assert contains_any(b"SET sqlproxy.dry_run = on", b"xX")
    assert contains_any(b"SET SQLPROXY.DRY_RUN = ON", b"xX")
    assert not contains_any(b"SELECT 1", b"xX")
    assert not contains_any(b"", b"xX")
    assert not contains_any(b"anything", b"")


# Chunks of messages of a few kinds, some cut or with impossible lengths.
_MESSAGE = st.tuples(st.sampled_from(b"PBDESQCZTn\x00\xff"), st.binary(max_size=12))
_CHUNK = st.builds(
    lambda parts, cut, junk: b"".join(msg(bytes([k]), body) for k, body in parts)[:cut] + junk,
    st.lists(_MESSAGE, max_size=6),
    st.one_of(st.none(), st.integers(min_value=0, max_value=80)),
    st.one_of(st.just(b""), st.binary(max_size=8)),
)
_TABLE = st.one_of(
    st.just(ALL), st.binary(min_size=256, max_size=256).map(lambda b: bytes(x % 12 for x in b))
)


@needs_build
@settings(max_examples=500)
@given(_CHUNK, st.integers(min_value=-1, max_value=40), _TABLE)
def test_the_c_frames_is_the_python_one(chunk: bytes, limit: int, table: bytes) -> None:
    assert _scan is not None
    assert _scan.Frames(limit, table)(chunk) == scan.FramesPy(limit, table)(chunk)


# Texts of a few letters, digits and spaces: runs of digits of many lengths, between them
# stretches longer and shorter than a word; and the bytes next to the digits ('/', ':') and a
# byte whose low 7 bits are a digit's (0xb1), for the word-at-a-time digit test.
_TEXT = st.binary(max_size=100).map(lambda b: bytes(b"a0 9'x1234567/:\xb1"[x % 16] for x in b))


@needs_build
@settings(max_examples=1000)
@given(
    _TEXT,
    _TEXT,
    st.integers(min_value=0, max_value=7),
    st.one_of(st.none(), st.just(b""), st.binary(max_size=8)),
)
def test_the_c_same_shape_is_the_python_one(
    raw: bytes, other: bytes, change: int, fixed: bytes | None
) -> None:
    assert _scan is not None
    # Mostly texts of one shape: the reference is raw with its runs changed, or raw itself.
    if change == 1:
        reference = scan._RUNS.sub(lambda run: run[0][::-1] + b"1" * (len(run[0]) % 3), raw)
    elif change == 2:
        reference = raw
    elif change == 3:  # runs one digit longer or shorter: equal up to their last digits
        reference = scan._RUNS.sub(lambda run: run[0][:-1] or run[0] + b"7", raw)
    elif change == 4:  # the last byte differs: the word reaching back from the end
        reference = raw[:-1] + (b"x" if raw[-1:] != b"x" else b"1")
    elif change == 5:  # its digits changed in place: a text of the same length
        reference = raw.translate(bytes.maketrans(b"0123456789", b"9876543210"))
    elif change == 6:  # in place of some digits, the bytes next to the digits: no digits
        reference = raw.translate(bytes.maketrans(b"091", b"/:\xb1"))
    else:
        reference = other
    assert _scan.same_shape(raw, reference, fixed) == scan.same_shape_py(raw, reference, fixed)
    assert _scan.shape_hash(raw) == scan.shape_hash_py(raw)
    # The same text inside a message, between bytes of its own kind.
    message = b"Q00\x00" + raw + b"7"
    args = (message, reference, fixed, 4, 4 + len(raw))
    assert _scan.same_shape(*args) == scan.same_shape_py(*args)


@needs_build
@given(st.binary(max_size=40), st.binary(max_size=4))
def test_the_c_contains_any_is_the_python_one(data: bytes, chars: bytes) -> None:
    assert _scan is not None
    assert _scan.contains_any(data, chars) == scan.contains_any_py(data, chars)


@needs_build
def test_the_c_frames_fills_its_last_answer_again_only_when_nobody_holds_it() -> None:
    assert _scan is not None
    frames = _scan.Frames(1 << 20, ALL)
    query, sync = msg(b"Q", b"SELECT 1\x00"), msg(b"S", b"")
    kept = frames(query)
    assert kept == b"QS"
    again = frames(sync)  # kept is held: a new answer
    assert (kept, again) == (b"QS", b"S\x00")
    hash(again)  # (a cached hash must not survive a refill)
    ident = id(again)
    del again
    third = frames(query)  # only frames held it: the same object, filled again
    assert third == b"QS" and id(third) == ident
    assert hash(third) == hash(b"QS")
    assert frames(query + sync) == b"QSS\x00"  # another size: a new one


@needs_build
def test_the_c_functions_refuse_what_they_cannot_read() -> None:
    assert _scan is not None
    with pytest.raises(TypeError, match=r"same_shape\(\) takes 3 or 5 arguments"):
        _scan.same_shape(b"", b"")  # type: ignore[call-arg]
    with pytest.raises(TypeError, match=r"same_shape\(\) takes 3 or 5 arguments"):
        _scan.same_shape(b"", b"", None, 0)
    with pytest.raises(TypeError, match="an integer is required"):
        _scan.same_shape(b"", b"", None, 0, "1")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="'reference' must be bytes, not str"):
        _scan.same_shape(b"", "", None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="'fixed' must be bytes, not int"):
        _scan.same_shape(b"", b"", 0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="'chars' must be bytes"):
        _scan.contains_any(b"", bytearray())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="'raw' must be bytes"):
        _scan.shape_hash(memoryview(b""))  # type: ignore[arg-type]
