"""The harness can fail: every harm check finds nothing in a harmless statement, the tap sees
what a driver hides, and the checksums notice a change. Without these, a passing corpus test
could mean a blind check."""

from __future__ import annotations

import pytest

from tests.guard import fixture
from tests.guard.clients import Received
from tests.guard.corpus import TABLE_LIMIT, Attack
from tests.guard.harm import (
    CANARY,
    FILE_CONTENTS,
    REPLICA,
    SECRET_ROWS,
    AutoConf,
    FileWritten,
    Harm,
    NewLargeObject,
    Orphans,
    Slept,
    VictimHit,
    current_role,
    over_limit,
    session_role,
)
from tests.guard.harness import Lab, attack_case, run_direct

HARMS: list[Harm] = [
    over_limit("users"),
    over_limit("orders"),
    over_limit("sensitive_data"),
    SECRET_ROWS,
    CANARY,
    FILE_CONTENTS,
    FileWritten(f"{fixture.OUTPUT_PREFIX}nothing.txt"),
    Slept(),
    REPLICA,
    current_role(),
    session_role(),
    AutoConf("log_min_duration_statement", "12345"),
    NewLargeObject(fixture.FILE_SECRET),
    Orphans(),
    VictimHit(),
]


def _harmless(harm: Harm, sql: str = "SELECT id, name FROM users WHERE id = 1") -> Attack:
    return Attack(
        "harmless", "plain", "", sql, TABLE_LIMIT, harm, victim=isinstance(harm, VictimHit)
    )


@pytest.mark.parametrize("harm", HARMS, ids=[type(h).__name__ + ":" + h.description for h in HARMS])
@pytest.mark.parametrize("driver", ["simple", "asyncpg"])
def test_it_finds_no_harm_in_a_harmless_statement(lab: Lab, harm: Harm, driver: str) -> None:
    attack = _harmless(harm)
    assert run_direct(lab, attack_case(attack), driver, harm.found).harm is None


def test_it_sees_rows_the_driver_drops(lab: Lab) -> None:
    # psycopg discards a multi-statement Query's results when a later statement fails; the
    # rows were still sent to the client, and the tap saw them.
    attack = _harmless(SECRET_ROWS, "SELECT secret FROM secret_keys; SELECT 1 / 0")
    result = run_direct(lab, attack_case(attack), "simple", SECRET_ROWS.found)
    assert result.received.rows == []
    assert result.received.error is not None
    assert result.harm


def test_it_decodes_bytea_sent_as_hex() -> None:
    received = Received(wire=b"D\x00\x00\x00\x1c\x00\x01\x00\x00\x00\x12\\x63616e617279")
    assert "canary" in received.haystack()


def test_it_notices_a_changed_table(lab: Lab) -> None:
    attack = _harmless(over_limit("users"), "UPDATE users SET name = 'changed' WHERE id = 1")
    result = run_direct(lab, attack_case(attack), "simple", lambda obs: None, roll_back=False)
    assert fixture.diff(result.before, result.after) == ["table public.users"]
