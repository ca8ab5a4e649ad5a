"""Respelling an attack never changes the verdict: random keyword and identifier case, quoted
and U&-escaped identifiers, comments (/* */, --) and odd whitespace between tokens.

The analysis property runs over the whole corpus and compares everything analyze() reports
for the respelled text with what it reports for the original. A sample of respelled attacks
also goes through the worker, after being shown to still do harm on a direct connection.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pglast.parser import scan

from proxyworker.analysis import StatementInfo, analyze
from tests.guard.corpus import ATTACKS, BENIGN, Attack
from tests.guard.harness import (
    FreshDatabases,
    Lab,
    Target,
    attack_case,
    refusal_problems,
    run_direct,
    run_through,
)

# Between two tokens that had whitespace between them. Comments get a space on each side: a
# "-" followed directly by "--" would start a comment, which is a different statement.
SEPARATORS = (" ", "  ", "\t", "\n", "\r\n", "\f", " /* c */ ", " /* a /* b */ c */ ", " -- c\n")


def respell_identifier(text: str, rnd: random.Random) -> str:
    """A bare identifier, spelled another way that the server folds to the same name."""
    name = text.lower()
    style = rnd.randrange(4)
    if style == 0:
        return text
    if style == 1:
        return "".join(c.upper() if rnd.random() < 0.5 else c for c in name)
    if style == 2:
        return f'"{name}"'
    escaped = "".join(f"\\{ord(c):04x}" if rnd.random() < 0.5 else c for c in name)
    return f'U&"{escaped}"'


def respell(sql: str, rnd: random.Random) -> str:
    """The same statements with other keyword case, identifier spellings, comments and
    whitespace. String literals and dollar-quoted bodies are left alone."""
    out: list[str] = []
    previous_end = -1
    for token in scan(sql):
        text = sql[token.start : token.end + 1]
        if token.name in ("C_COMMENT", "SQL_COMMENT"):
            continue
        if out:
            adjacent = token.start == previous_end + 1
            out.append(rnd.choice(("", *SEPARATORS) if adjacent else SEPARATORS))
        if token.kind != "NO_KEYWORD":
            text = "".join(c.upper() if rnd.random() < 0.5 else c.lower() for c in text)
        elif token.name == "IDENT" and text[0] != '"':
            text = respell_identifier(text, rnd)
        out.append(text)
        previous_end = token.end
    return "".join(out)


# What follows the spelling by design: the statement's own text and what is derived from it.
SPELLING_FIELDS = frozenset({"text", "fingerprint", "normalized"})


def facts(info: StatementInfo) -> dict[str, Any]:
    """Everything analyze() reports, nested bodies included, except its texts."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(info):
        if f.name in SPELLING_FIELDS:
            continue
        value = getattr(info, f.name)
        out[f.name] = [facts(child) for child in value] if f.name == "body" else value
    return out


TEXTS = [a.sql for a in ATTACKS] + [b.sql for b in BENIGN]


def test_it_respells_for_real() -> None:
    original = "DELETE FROM users WHERE id = 1"
    spellings = {respell(original, random.Random(seed)) for seed in range(20)}
    assert len(spellings) > 10
    assert any('"users"' in s for s in spellings)
    assert any('U&"' in s for s in spellings)
    assert any("/*" in s or "--" in s for s in spellings)


@pytest.mark.parametrize("sql", TEXTS, ids=[a.id for a in ATTACKS] + [b.id for b in BENIGN])
@settings(
    max_examples=8, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(rnd=st.randoms(use_true_random=False))
def test_it_analyses_a_respelled_statement_exactly_like_the_original(
    sql: str, rnd: random.Random
) -> None:
    respelled = respell(sql, rnd)
    assert [facts(i) for i in analyze(respelled)] == [facts(i) for i in analyze(sql)], respelled


# A sample across rule families and techniques for the slow path through the worker.
THROUGH_WORKER = [
    "no-where-delete-users",
    "cte-shadow-name",
    "search-path-set",
    "views-nested",
    "dynamic-format",
    "truncate-list",
    "honeytoken-table-join",
    "honeytoken-table-copy",
    "honeytoken-value-concat",
    "server-file-access-read",
    "replication-role-set",
    "role-switch-set-role",
    "sleep-pg-sleep",
]
_BY_ID = {a.id: a for a in ATTACKS}


@pytest.mark.parametrize("attack_id", THROUGH_WORKER)
@settings(
    max_examples=3,
    deadline=None,
    database=None,
    phases=(Phase.generate,),  # each example costs two databases; no shrinking
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rnd=st.randoms(use_true_random=False))
def test_it_refuses_a_respelled_attack_through_the_worker(
    lab: Lab,
    worker_target: Target,
    worker_databases: FreshDatabases,
    attack_id: str,
    rnd: random.Random,
) -> None:
    original = _BY_ID[attack_id]
    attack: Attack = dataclasses.replace(original, sql=respell(original.sql, rnd))
    direct = run_direct(lab, attack_case(attack), "simple", attack.harm.found)
    assert direct.harm, f"the respelling did no harm directly: {attack.sql!r}"
    result = run_through(
        lab, attack_case(attack), "simple", worker_target, worker_databases, attack.harm.found
    )
    problems = refusal_problems(result, attack.rules)
    assert not problems, f"{attack.sql!r}:\n  " + "\n  ".join(problems)
