"""The corpus through a real worker enforcing fixture.POLICY_TOML, with psycopg (simple and
extended protocol), asyncpg (extended) and psql (simple, a sample).

Every attack must be refused — ErrorResponse 42501, message starting "sqlproxy: " and naming
the rule family — with the database left exactly as it was (checksums), no harm observable
(the same check that proves the attack on a direct connection), no secret in anything the
client received (rows, COPY data, notices, error fields, ParameterStatus: the raw bytes on the
wire), and the session still usable. Every benign statement must return exactly what a direct
connection returns and leave the same database state behind.

Each case gets a database of its own that the worker has never seen (see conftest.py).
"""

from __future__ import annotations

import pytest

from tests.guard import fixture
from tests.guard.corpus import ATTACKS, BENIGN, Attack, Benign, psql_sample
from tests.guard.harness import (
    FreshDatabases,
    Lab,
    Target,
    attack_case,
    benign_case,
    benign_harm,
    refusal_problems,
    run_direct,
    run_through,
)

DRIVERS = ("simple", "extended", "asyncpg")
ATTACK_CASES = [(a, d) for a in ATTACKS for d in DRIVERS] + [(a, "psql") for a in psql_sample()]
BENIGN_CASES = [(b, d) for b in BENIGN for d in DRIVERS] + [(b, "psql") for b in BENIGN[::4]]

# Gaps the guard still has, by "id-driver". Each is expected to fail
# (strict: a fix makes the case pass and the marker must then go); docs/policy.md lists them.
KNOWN_GAPS: dict[str, str] = {}
ATTACK_IDS = {a.id for a in ATTACKS}
BENIGN_IDS = {b.id for b in BENIGN}


def case(entry: Attack | Benign, driver: str, kind: str) -> object:
    """The parameter with its marks: drivers other than psycopg's simple protocol run in the
    slow suite (make test-slow), known gaps are expected failures."""
    reason = KNOWN_GAPS.get(f"{entry.id}-{driver}")
    ids = ATTACK_IDS if kind == "attack" else BENIGN_IDS
    marks = []
    if reason is not None and entry.id in ids:
        marks.append(pytest.mark.xfail(strict=True, reason=reason))
    if driver != "simple":
        marks.append(pytest.mark.slow)
    return pytest.param(entry, driver, marks=marks, id=f"{entry.id}-{driver}")


@pytest.mark.parametrize(("attack", "driver"), [case(a, d, "attack") for a, d in ATTACK_CASES])
def test_it_refuses_every_attack(
    lab: Lab, worker_target: Target, worker_databases: FreshDatabases, attack: Attack, driver: str
) -> None:
    result = run_through(
        lab, attack_case(attack), driver, worker_target, worker_databases, attack.harm.found
    )
    problems = refusal_problems(result, attack.rules)
    assert not problems, f"{attack.id} ({attack.description}) with {driver}:\n  " + "\n  ".join(
        problems
    )


@pytest.mark.parametrize(("benign", "driver"), [case(b, d, "benign") for b, d in BENIGN_CASES])
def test_it_lets_benign_statements_through_unchanged(
    lab: Lab, worker_target: Target, worker_databases: FreshDatabases, benign: Benign, driver: str
) -> None:
    case = benign_case(benign)
    direct = run_direct(lab, case, driver, benign_harm, roll_back=False)
    through = run_through(lab, case, driver, worker_target, worker_databases, benign_harm)
    problems = []
    if through.received.error is not None:
        problems.append(f"refused or failed: {through.received.error}")
    elif through.received.outcome() != direct.received.outcome():
        problems.append(
            f"returned {through.received.outcome()}, a direct connection "
            f"{direct.received.outcome()}"
        )
    changed = fixture.diff(direct.after, through.after)
    if changed:
        problems.append(f"left a different database state than directly: {changed}")
    if not through.alive:
        problems.append("the session no longer answers SELECT 1")
    assert not problems, f"{benign.id} ({benign.description}) with {driver}:\n  " + "\n  ".join(
        problems
    )
