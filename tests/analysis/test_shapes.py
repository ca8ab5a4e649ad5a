"""ShapeCache: a text finds what was stored for another only when the two differ in the digits of
their literals and nothing else; everything the scan cannot read exactly is exact-text only."""

from __future__ import annotations

import re
from typing import Any, Final

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pglast.parser import scan

from proxyworker.analysis import analyze
from proxyworker.analysis.shapes import fixed_runs, literal_invariant
from proxyworker.protocol import messages as m
from proxyworker.scan import MAX_SHAPED_TEXT, ShapeCache, ShapeCachePy, shape_hash

try:
    from proxyworker._scan import ShapeCache as ShapeCacheC
except ImportError:  # not built
    ShapeCacheC = None  # type: ignore[assignment,misc]

_VERSIONS = [pytest.param(ShapeCachePy, id="python")] + (
    [] if ShapeCacheC is None else [pytest.param(ShapeCacheC, id="c")]
)


@pytest.fixture(params=_VERSIONS)
def cache_type(request: pytest.FixtureRequest) -> Any:
    """The cache as the Python reference and, when built, as the C extension."""
    return request.param


def _put(cache: Any, text: bytes, value: object, shaped: bool) -> None:
    """As a caller stores a result: for its shape, or for its exact text only."""
    cache.put(text, value, fixed_runs(text) if shaped else None)


_SYNC: Final = b"S\x00\x00\x00\x04"


def _find_inside(cache: Any, text: bytes, operation: str) -> object:
    """The text looked up where it lies in a Query message: with its bounds given
    (``find_in``), or read from the message, which a Sync follows (``find_query``)."""
    message = m.query(text.decode())
    if operation == "get query":
        return cache.find_query(message + _SYNC)
    return cache.find_in(message, 5, len(message) - 1)


def _found(stored: str, other: str) -> bool:
    """Found in either version (the same answer: ``test_both_versions_answer_alike``)."""
    answers = set()
    for version in (ShapeCachePy, ShapeCache):
        cache = version(16)
        _put(cache, stored.encode(), "stored", shaped=True)
        answers.add(cache.get(other.encode()) is not None)
    (answer,) = answers
    return answer


@pytest.mark.parametrize(
    ("stored", "other"),
    [
        (
            "SELECT abalance FROM pgbench_accounts WHERE aid = 123;",
            "SELECT abalance FROM pgbench_accounts WHERE aid = 456;",
        ),
        ("SELECT * FROM t WHERE d = '2024-01-01'", "SELECT * FROM t WHERE d = '1999-12-31'"),
        ("SELECT 1.5e3, .5, 7.", "SELECT 2.5e9, .1, 3."),
        ("SELECT 'it''s 1'", "SELECT 'it''s 2'"),
        ('SELECT "a b" FROM t WHERE x = 1', 'SELECT "a b" FROM t WHERE x = 2'),
        # Runs of another length (pgbench's aid of 1 to 7 digits, a delta of 1 to 4):
        ("SELECT 1", "SELECT 10"),
        (
            "UPDATE pgbench_accounts SET abalance = abalance + -4821 WHERE aid = 734512;",
            "UPDATE pgbench_accounts SET abalance = abalance + -7 WHERE aid = 12;",
        ),
        ("SELECT * FROM t1 WHERE x = 1", "SELECT * FROM t1 WHERE x = 12345"),
        ("SELECT $1 + 5 FROM t", "SELECT $1 + 500 FROM t"),
        ("SELECT 1.5e3, '12'", "SELECT 10.25e13, '1'"),
    ],
)
def test_it_finds_texts_that_differ_in_literal_digits(stored: str, other: str) -> None:
    assert _found(stored, other)


@pytest.mark.parametrize(
    ("stored", "other"),
    [
        ("SELECT * FROM t1 WHERE x = 1", "SELECT * FROM t2 WHERE x = 1"),  # names
        ('SELECT * FROM "t 1"', 'SELECT * FROM "t 2"'),  # quoted names
        ("SELECT $1 FROM t", "SELECT $2 FROM t"),  # parameters
        ("SELECT x.1 FROM t", "SELECT x.2 FROM t"),
        ("SELECT 1 -- 1", "SELECT 1 -- 2"),  # comments: exact text only
        ("SELECT 1 /* 1 */", "SELECT 1 /* 2 */"),
        ("SELECT $$1$$", "SELECT $$2$$"),  # dollar quotes
        ("SELECT $a$1$a$", "SELECT $a$2$a$"),
        ("SELECT E'\\x31'", "SELECT E'\\x32'"),  # escape strings
        ("SELECT U&'\\0031'", "SELECT U&'\\0032'"),
        ("SELECT B'1'", "SELECT B'0'"),
        ("SELECT 1e5x", "SELECT 2e5x"),  # not a lone number
        ("SELECT 1..5", "SELECT 2..5"),
        ("SELECT 1", "SELECT a"),
        # Runs of another length outside literals:
        ("SELECT * FROM t1 WHERE x = 1", "SELECT * FROM t12 WHERE x = 1"),
        ("SELECT $1 FROM t", "SELECT $10 FROM t"),
        ('SELECT * FROM "t 1"', 'SELECT * FROM "t 12"'),
        ("SELECT x.1 FROM t", "SELECT x.10 FROM t"),
        ("SELECT 1 -- 1", "SELECT 1 -- 12"),
        ("SELECT 1", "SELECT 1 1"),  # another number of runs
    ],
)
def test_it_does_not_find_texts_that_differ_elsewhere(stored: str, other: str) -> None:
    assert not _found(stored, other)


def test_it_finds_exact_text_only_when_not_shaped(cache_type: Any) -> None:
    cache = cache_type(16)
    _put(cache, b"SELECT 1", "v", shaped=False)
    assert cache.get(b"SELECT 1") == ("v", True)
    assert cache.get(b"SELECT 2") is None


def test_it_says_when_the_text_found_is_another(cache_type: Any) -> None:
    cache = cache_type(16)
    _put(cache, b"SELECT 1", "v", shaped=True)
    assert cache.get(b"SELECT 1") == ("v", True)
    assert cache.get(b"SELECT 2") == ("v", False)


def test_a_text_of_another_length_is_never_taken_for_the_stored_one(cache_type: Any) -> None:
    cache = cache_type(16)
    _put(cache, b"SELECT * FROM t WHERE id = 123", "v", shaped=True)
    assert cache.get(b"SELECT * FROM t WHERE id = 4") == ("v", False)
    # Found again, still as another text; the stored one still is.
    assert cache.get(b"SELECT * FROM t WHERE id = 4") == ("v", False)
    assert cache.get(b"SELECT * FROM t WHERE id = 5") == ("v", False)
    assert cache.get(b"SELECT * FROM t WHERE id = 123") == ("v", True)


def test_a_text_of_another_shape_under_the_same_key_is_not_found(cache_type: Any) -> None:
    """The key is a hash: what it finds is compared with the text before it is used."""
    cache = cache_type(16)
    stored = b"SELECT a FROM t WHERE id = 1"
    key = shape_hash(b"SELECT b FROM t WHERE id = 1")
    cache._put_under(key, stored, "v", fixed_runs(stored))  # (as if the two keys collided)
    cache._forget_order()  # (only the key left to find it)
    assert cache.get(b"SELECT b FROM t WHERE id = 2") is None


def test_exact_texts_are_not_found_by_runs(cache_type: Any) -> None:
    cache = cache_type(16)
    _put(cache, b"SELECT 1 -- x", "v", shaped=True)
    _put(cache, b"SELECT 2", "w", shaped=False)
    assert cache.get(b"SELECT 10 -- x") is None
    assert cache.get(b"SELECT 20") is None


def test_it_refuses_to_locate_literals_it_cannot_read() -> None:
    for text in (b"SELECT 1 -- x", b"SELECT $$x$$", b"SELECT E'x'", b"SELECT N'x'", b"a\x00b"):
        assert fixed_runs(text) is None
    assert fixed_runs(b"SELECT 1") == b""  # no run outside a literal
    assert fixed_runs(b"SELECT t1") == b"\xff"
    assert fixed_runs(b"SELECT t12, 3, '4', x5") == b"\xff\x00\x00\xff"


def test_only_lone_queries_and_dml_stand_for_their_shape() -> None:
    assert literal_invariant(analyze("SELECT * FROM t WHERE id = 1"))
    assert literal_invariant(analyze("DELETE FROM t WHERE id = 1"))
    assert not literal_invariant(analyze("SELECT 1; SELECT 2"))
    assert not literal_invariant(analyze("SET search_path = 'a'"))
    assert not literal_invariant(analyze("DO 'BEGIN NULL; END'"))
    assert not literal_invariant(analyze("SELECT set_config('role', 'x', false)"))
    assert not literal_invariant(analyze("COPY t FROM '/tmp/1'"))


_PIECES = st.sampled_from(
    [
        "SELECT", " ", "x", "t1", "1", "2", "10", ".5", "1.5", "e", "E", "'", "''", '"', "$",
        "$1", "--", "/*", "*/", "\n", ",", "(", ")", "=", "-", "+", "::", "U&", ";", "\\", "a$",
    ]
)  # fmt: skip


def _tokens(text: str) -> list[tuple[str, str]] | None:
    """The server's tokens, literal values replaced by their kind."""
    try:
        tokens = scan(text)
    except Exception:
        return None
    literals = {"SCONST", "USCONST", "ICONST", "FCONST", "BCONST", "XCONST"}
    return [(t.name, "" if t.name in literals else text[t.start : t.end + 1]) for t in tokens]


@settings(max_examples=400, deadline=None)
@given(
    st.lists(_PIECES, max_size=14),
    st.lists(st.sampled_from(["0", "1", "7", "42", "365", "100000"]), max_size=8),
)
def test_a_hit_always_lexes_like_the_text_stored(pieces: list[str], runs: list[str]) -> None:
    stored = "".join(pieces)
    other = _with_runs(stored, runs)
    if _found(stored, other):
        assert _tokens(stored) == _tokens(other)


def _with_runs(stored: str, runs: list[str]) -> str:
    """The same text with some runs of digits replaced, by runs of any length (what either
    key can make equal)."""
    parts = re.split(r"([0-9]+)", stored)
    for i, run in enumerate(runs):
        positions = range(1, len(parts), 2)
        if positions:
            parts[positions[i % len(positions)]] = run
    return "".join(parts)


@settings(max_examples=1000, deadline=None)
@given(
    st.lists(_PIECES, max_size=14),
    st.lists(st.sampled_from(["0", "1", "7", "42", "365", "100000"]), max_size=8),
)
def test_a_text_found_reads_its_runs_as_the_stored_one_does(
    pieces: list[str], runs: list[str]
) -> None:
    """A text found for another has its runs of digits inside and outside literals where the
    stored text has them: what ``fixed_runs`` finds reading its own literals."""
    stored, other = "".join(pieces).encode(), _with_runs("".join(pieces), runs).encode()
    cache: ShapeCache[str] = ShapeCache(16)
    _put(cache, stored, "stored", shaped=True)
    if cache.get(other) is not None:
        assert fixed_runs(other) == fixed_runs(stored)


_SESSION_TEXTS = [
    b"SELECT * FROM t WHERE id = 1",
    b"SELECT * FROM t WHERE id = 2",
    b"SELECT * FROM t WHERE id = 12",
    b"SELECT * FROM t1 WHERE id = 1",
    b"SELECT * FROM t2 WHERE id = 1",
    b"SELECT 1 -- 2",
    b"SELECT 1 -- 3",
    b"SELECT $1",
    b"SELECT $2",
]


@pytest.mark.parametrize("cache_type", _VERSIONS)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(_SESSION_TEXTS),
            st.sampled_from(["get", "get inside", "get query", "put", "put shaped"]),
        ),
        max_size=40,
    )
)
def test_what_get_keeps_of_the_last_lookup_never_changes_an_answer(
    cache_type: Any, operations: list[tuple[bytes, str]]
) -> None:
    """``get`` keeps the last entry it found for each length, and which entry was found after
    which, to skip the dict next time. A cache whose memory of them is wiped before every
    lookup answers alike throughout (a small maxsize: clearing when full is covered too; each
    value stored is new, so a replaced or cleared entry found again would show) — also when
    the text is looked up where it lies inside a Query message (``find_in``)."""
    kept, wiped = cache_type(3), cache_type(3)
    for number, (text, operation) in enumerate(operations):
        if operation.startswith("get"):
            wiped._forget_order()
            if operation == "get":
                assert kept.get(text) == wiped.get(text), text
                continue
            found = _find_inside(kept, text, operation)
            assert (None if found is None else (found, kept.own)) == wiped.get(text), text
        else:
            for cache in (kept, wiped):
                _put(cache, text, (text, number), shaped=operation == "put shaped")


def test_the_statement_that_followed_last_time_is_compared_first(cache_type: Any) -> None:
    """A session's sequence of statements: each is found without making its key, even when
    texts of the sequence share a length (and so the entry kept per length)."""
    cache = cache_type(16)
    sequence = [
        b"BEGIN",
        b"UPDATE a SET x = x + 1 WHERE id = 7",
        b"UPDATE b SET x = x + 1 WHERE id = 7",
        b"END",
    ]
    for text in sequence:
        assert cache.get(text) is None
        _put(cache, text, text.decode(), shaped=True)
    assert cache.get(b"BEGIN") == ("BEGIN", True)  # (after END now)
    cache._forget_keys()  # (no other way left)
    for text in [*sequence[1:], sequence[0]]:
        assert cache.get(text.replace(b"7", b"12")) == (text.decode(), b"7" not in text)


def test_the_text_found_last_is_found_again_without_comparing(cache_type: Any) -> None:
    """The same object as the text found last: found again with what it was found as, and
    never once its entry was replaced or the cache cleared."""
    cache = cache_type(16)
    _put(cache, b"SELECT * FROM t WHERE id = 1", "one", shaped=True)
    text = b"SELECT * FROM t WHERE id = 2"
    assert cache.get(text) == ("one", False)
    cache._forget_keys()  # (only the identity left)
    assert cache.get(text) == ("one", False)
    _put(cache, b"SELECT * FROM t WHERE id = 1", "again", shaped=True)
    assert cache.get(text) == ("again", False)
    cache.clear()
    assert cache.get(text) is None


def test_an_entry_replaced_is_not_found_through_the_length_it_was_last_found_for(
    cache_type: Any,
) -> None:
    """An entry found for a text of another length is kept for that length too; once
    replaced, that slot must not answer for the entry replacing it."""
    cache = cache_type(16)
    _put(cache, b"SELECT * FROM t WHERE id = 12", "that text", shaped=False)
    assert cache.get(b"SELECT * FROM t WHERE id = 1") is None  # (kept for length 28 now)
    _put(cache, b"SELECT * FROM t WHERE id = 12", "its shape", shaped=True)
    assert cache.get(b"SELECT * FROM t WHERE id = 1") == ("its shape", False)


def test_a_value_stands_for_other_texts_as_stored_for_them(cache_type: Any) -> None:
    """``elsewhere``: what a text of the shape finds when it is not the text stored."""
    cache = cache_type(16)
    stored = b"SELECT * FROM t WHERE id = 1"
    cache.put(stored, "this text", fixed_runs(stored), "its shape")
    assert cache.get(b"SELECT * FROM t WHERE id = 22") == ("its shape", False)
    assert cache.get(stored) == ("this text", True)
    assert cache.get(b"SELECT * FROM t WHERE id = 3") == ("its shape", False)
    message = m.query(stored.decode())
    assert cache.find_in(message, 5, len(message) - 1) == "this text"
    assert cache.own


def test_a_full_cache_is_cleared_before_it_stores_more(cache_type: Any) -> None:
    """At most ``maxsize`` values stored since it was last cleared, replaced ones too."""
    cache = cache_type(2)
    cache.put(b"SELECT a", "a", None)
    cache.put(b"SELECT a", "a again", None)  # (replaces it: one key, two stored)
    assert len(cache) == 1 and cache.get(b"SELECT a") == ("a again", True)
    cache.put(b"SELECT b", "b", None)
    assert len(cache) == 1
    assert cache.get(b"SELECT a") is None
    assert cache.get(b"SELECT b") == ("b", True)


def test_it_refuses_what_it_cannot_store_or_find(cache_type: Any) -> None:
    cache = cache_type(16)
    with pytest.raises(ValueError, match="may not be None"):
        cache.put(b"SELECT 1", None, None)
    with pytest.raises(ValueError, match="is not within"):
        cache.find_in(b"SELECT 1", 3, 9)
    query = m.query("SELECT 1")
    for not_a_query in (b"", b"SELECT 1", query[:-1], query[:-1] + b"x", b"P" + query[1:], _SYNC):
        with pytest.raises(ValueError, match="does not start with a whole Query message"):
            cache.find_query(not_a_query)
    with pytest.raises(ValueError, match="at least 1"):
        cache_type(0)
    long_text = b"SELECT " + b"x" * MAX_SHAPED_TEXT
    cache.put(long_text, "v", None)  # (not stored: too long)
    assert len(cache) == 0 and cache.get(long_text) is None


_OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(_SESSION_TEXTS),
        st.sampled_from(
            [
                "get",
                "get inside",
                "get query",
                "get again",
                "put",
                "put shaped",
                "put elsewhere",
                "clear",
            ]
        ),
    ),
    max_size=60,
)


@pytest.mark.skipif(ShapeCacheC is None, reason="needs `make build`")
@settings(max_examples=500, deadline=None)
@given(_OPERATIONS, st.integers(1, 4))
def test_both_versions_answer_alike(operations: list[tuple[bytes, str]], maxsize: int) -> None:
    """The C cache answers every sequence of operations as the Python reference does: each
    value found, ``own`` after it, the number of keys."""
    caches = [ShapeCachePy(maxsize), ShapeCacheC(maxsize)]
    last = b""
    for number, (text, operation) in enumerate(operations):
        fresh = bytes(bytearray(text))  # (a new object: not the one found last)
        answers: list[list[object]] = [[], []]
        for cache, answer in zip(caches, answers, strict=True):
            if operation == "get":
                answer.append(cache.get(fresh))
            elif operation == "get again":  # (the object last looked up: found without comparing)
                answer.append(cache.get(last))
            elif operation in ("get inside", "get query"):
                found = _find_inside(cache, text, operation)
                answer.append(None if found is None else (found, cache.own))
            elif operation == "clear":
                cache.clear()
            else:
                fixed = None if operation == "put" else fixed_runs(text)
                other = (text, number, "elsewhere") if operation == "put elsewhere" else None
                cache.put(text, (text, number), fixed, other)
            answer.append(len(cache))
        assert answers[0] == answers[1], (text, operation)
        if operation == "get":
            last = fresh
