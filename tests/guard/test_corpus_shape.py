"""The corpus is as large and as varied as promised, and honest: every secret a harm looks
for is absent from the SQL itself, so finding it in what the client received means the server
produced it."""

from __future__ import annotations

from collections import Counter

from tests.guard import fixture
from tests.guard.clients import statements
from tests.guard.corpus import (
    ATTACKS,
    BENIGN,
    HONEYTOKEN_TABLE,
    HONEYTOKEN_VALUE,
    SIGNATURE_IDS,
    TABLE_LIMIT,
    TECHNIQUES,
)

RULES = {TABLE_LIMIT, HONEYTOKEN_TABLE, HONEYTOKEN_VALUE} | {
    f"signature:{s}" for s in SIGNATURE_IDS
}


def test_it_has_enough_attacks_and_benign_statements() -> None:
    assert len(ATTACKS) >= 120
    assert len(BENIGN) >= 50


def test_it_names_every_case_once() -> None:
    ids = Counter([a.id for a in ATTACKS] + [b.id for b in BENIGN])
    assert [i for i, n in ids.items() if n > 1] == []


def test_it_covers_every_technique_and_rule() -> None:
    assert {a.technique for a in ATTACKS} == set(TECHNIQUES)
    assert {a.rule for a in ATTACKS} == RULES
    for attack in ATTACKS:
        assert set(attack.rules) <= RULES, attack.id


def test_it_reaches_every_rule_family_by_many_routes() -> None:
    for rule in RULES:
        techniques = {a.technique for a in ATTACKS if a.rule == rule}
        assert len(techniques) >= 3, (rule, techniques)


def test_it_never_spells_a_secret_in_sql() -> None:
    secrets = (*fixture.SECRET_VALUES, fixture.FILE_SECRET)
    for entry in (*ATTACKS, *BENIGN):
        for secret in secrets:
            assert secret not in entry.sql, entry.id


def test_it_parses_every_text_the_drivers_will_split() -> None:
    for entry in (*ATTACKS, *BENIGN):
        assert statements(entry.sql), entry.id
        copies = [s for s in statements(entry.sql) if s.copy == "in"]
        assert bool(copies) == (entry.copy_data is not None), entry.id
