"""Every attack in the corpus does real harm on a direct connection, or it would prove nothing
when the worker refuses it; and every benign entry really is benign (within the limits, no
secret, no error), or the worker would be blamed for refusing it.

Each runs with psycopg's simple protocol. Texts the drivers send differently — several
statements (sent one by one, in a transaction, by the extended drivers) or COPY (through each
driver's COPY API) — also run with psycopg's extended protocol and asyncpg, so every way the
worker test sends an attack is shown to do harm; a single statement is the same text in every
protocol. A sample also runs through psql. See harness.py for how cases share a database.
"""

from __future__ import annotations

import pytest

from tests.guard.clients import statements
from tests.guard.corpus import ATTACKS, BENIGN, Attack, Benign
from tests.guard.harness import Lab, attack_case, benign_case, benign_harm, run_direct

EXTENDED_DRIVERS = ("extended", "asyncpg")


def sent_differently(sql: str) -> bool:
    stmts = statements(sql)
    return len(stmts) > 1 or any(s.copy for s in stmts)


def drivers_for(sql: str) -> tuple[str, ...]:
    return ("simple", *EXTENDED_DRIVERS) if sent_differently(sql) else ("simple",)


PSQL_FAMILIES = {a.rule: a for a in reversed(ATTACKS)}  # the first attack of each rule
ATTACK_CASES = [(a, d) for a in ATTACKS for d in drivers_for(a.sql)] + [
    (a, "psql") for a in PSQL_FAMILIES.values()
]
BENIGN_CASES = [(b, d) for b in BENIGN for d in drivers_for(b.sql)]


@pytest.mark.parametrize(
    ("attack", "driver"), ATTACK_CASES, ids=[f"{a.id}-{d}" for a, d in ATTACK_CASES]
)
def test_it_does_harm_on_a_direct_connection(lab: Lab, attack: Attack, driver: str) -> None:
    result = run_direct(lab, attack_case(attack), driver, attack.harm.found)
    assert result.harm, (
        f"{attack.id} did no harm ({attack.harm.description}) with {driver}: "
        f"error={result.received.error} rows={result.received.rows[:5]}"
    )


@pytest.mark.parametrize(
    ("benign", "driver"), BENIGN_CASES, ids=[f"{b.id}-{d}" for b, d in BENIGN_CASES]
)
def test_it_keeps_benign_statements_benign(lab: Lab, benign: Benign, driver: str) -> None:
    result = run_direct(lab, benign_case(benign), driver, benign_harm)
    assert result.received.error is None, result.received.error
    assert result.harm is None, result.harm
    assert not result.leaked()
    assert result.alive
