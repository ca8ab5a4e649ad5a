"""Statement text in and out: normalization hides data, fingerprints group, bad text fails
closed with the parser's message, and results are cached by text."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from proxyworker.analysis import (
    DEFAULT_CACHE_SIZE,
    AnalysisError,
    analyze,
    cache_info,
    configure_cache,
)
from proxyworker.analysis.analyzer import MAX_CACHED_TEXT
from tests.analysis.expect import one

SECRETS = [
    "s3cr3t",
    "4111111111111111",
    "1e-7",
    "0xDEAD",
    "deadbeef",
    "tab\there",
    "dollar body",
]


@pytest.mark.parametrize(
    ("sql", "normalized"),
    [
        ("SELECT * FROM t WHERE a = 1 AND b = 'x'", "SELECT * FROM t WHERE a = $1 AND b = $2"),
        ("select\n\t*  from t -- who: alice\n", "select * from t"),
        ("SELECT /* card 4111 */ 2", "SELECT $1"),
        ("SELECT /* outer /* nested */ still comment */ 3", "SELECT $1"),
        ("SELECT $1, 'x', $3", "SELECT $1, $4, $3"),
        ("SELECT -1, 2-3, 1.5e-7, .5, 0xFF, 1_000", "SELECT -$1, $2-$3, $4, $5, $6, $7"),
        (
            "SELECT E'a\\'b', U&'\\0041', B'01', X'ff', $$x$$, $t$y$t$, N'z'",
            # N'z' scans as the keyword NCHAR followed by a plain string.
            "SELECT $1, $2, $3, $4, $5, $6, N$7",
        ),
        ("SELECT 'a'\n'b' AS continued", "SELECT $1 AS continued"),
        ('SELECT "quoted -- not a comment" FROM "t"', 'SELECT "quoted -- not a comment" FROM "t"'),
        ("CREATE ROLE bob PASSWORD 'hunter2'", "CREATE ROLE bob PASSWORD $1"),
        ("COPY t FROM '/etc/passwd'", "COPY t FROM $1"),
        ("DO $$ BEGIN RAISE 'x'; END $$", "DO $1"),
        ("SET search_path = app, 'x'", "SET search_path = app, $1"),
    ],
)
def test_it_normalizes_every_literal_and_drops_comments(sql: str, normalized: str) -> None:
    assert one(sql).normalized == normalized


@pytest.mark.parametrize("secret", SECRETS)
def test_it_never_leaves_a_data_value_in_normalized_text(secret: str) -> None:
    statements = [
        f"SELECT * FROM users WHERE pw = '{secret}'",
        f"SELECT * FROM users WHERE pw = E'{secret}'",
        f"SELECT * FROM users WHERE pw = $q${secret}$q$ -- {secret}",
        f"INSERT INTO t VALUES ('{secret}') /* {secret} */",
        f"ALTER ROLE bob PASSWORD '{secret}'",
    ]
    for sql in statements:
        info = one(sql)
        assert secret not in info.normalized, sql


def test_it_normalizes_away_only_literals_so_shapes_group_together() -> None:
    first = one("UPDATE pgbench_accounts SET abalance = abalance + 5 WHERE aid = 42")
    second = one("update pgbench_accounts set abalance = abalance + -3 where aid = 7 -- x")
    assert first.fingerprint == second.fingerprint
    assert first.normalized == "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2"
    other = one("UPDATE pgbench_accounts SET abalance = abalance + 5 WHERE bid = 42")
    assert other.fingerprint != first.fingerprint


def test_it_returns_nothing_for_empty_text() -> None:
    assert analyze("") == ()
    assert analyze(" ; ;; -- only a comment\n /* and another */") == ()


@pytest.mark.parametrize(
    ("sql", "message", "position"),
    [
        ("SELECT 1 FROM", "syntax error at end of input", None),
        ("SELECT * FORM users", 'syntax error at or near "FORM"', 9),
        ("SELECT a FORM users", 'syntax error at or near "users"', 14),
        ("SELECT 'unterminated", "unterminated quoted string", 7),
        ("DELETE FROM users; DROP", "syntax error at end of input", None),
        ("SELECT 1; SELEC 2", 'syntax error at or near "SELEC"', 10),
    ],
)
def test_it_fails_closed_with_the_parsers_message(
    sql: str, message: str, position: int | None
) -> None:
    with pytest.raises(AnalysisError) as caught:
        analyze(sql)
    assert caught.value.message.startswith(message)
    assert caught.value.position == position


def test_it_refuses_text_with_a_nul_the_parser_would_stop_at() -> None:
    # libpg_query reads a C string: without this check it would see only "SELECT 1".
    with pytest.raises(AnalysisError, match="NUL") as caught:
        analyze("SELECT 1\x00; DROP TABLE users")
    assert caught.value.position == 8


def test_it_refuses_anything_but_a_string() -> None:
    with pytest.raises(AnalysisError, match="must be str"):
        analyze(b"SELECT 1")  # type: ignore[arg-type]


def test_it_refuses_an_expression_nested_too_deeply_to_walk() -> None:
    with pytest.raises(AnalysisError, match="nested too deeply"):
        analyze("SELECT " + "1 + " * 2000 + "1")
    assert one("SELECT " + "1 + " * 100 + "1").normalized.count("$") == 101


@pytest.fixture
def fresh_cache() -> Iterator[None]:
    configure_cache(DEFAULT_CACHE_SIZE)
    yield
    configure_cache(DEFAULT_CACHE_SIZE)


@pytest.mark.usefixtures("fresh_cache")
def test_it_answers_repeated_text_from_the_cache() -> None:
    sql = "SELECT * FROM cached_table WHERE id = 1"
    first = analyze(sql)
    second = analyze("".join(list(sql)))  # equal text, different object
    assert second is first
    assert cache_info().hits == 1 and cache_info().misses == 1


@pytest.mark.usefixtures("fresh_cache")
def test_it_caches_failures_and_still_raises_each_time() -> None:
    for _ in range(3):
        with pytest.raises(AnalysisError, match="syntax error"):
            analyze("SELECT FROM WHERE")
    assert cache_info().misses == 1 and cache_info().hits == 2


@pytest.mark.usefixtures("fresh_cache")
def test_it_bounds_the_cache() -> None:
    configure_cache(2)
    for n in range(5):
        analyze(f"SELECT {n}")
    assert cache_info().currsize == 2 and cache_info().maxsize == 2


@pytest.mark.usefixtures("fresh_cache")
def test_it_does_not_cache_very_long_texts() -> None:
    sql = "INSERT INTO t VALUES " + ", ".join(["(1)"] * (MAX_CACHED_TEXT // 4))
    assert len(sql) > MAX_CACHED_TEXT
    assert one(sql).writes
    assert cache_info().currsize == 0
