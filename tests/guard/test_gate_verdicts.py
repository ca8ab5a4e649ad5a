"""Gate.decide_bytes remembers verdicts: only those that deciding again could not change, and
never across a change of what they were decided under."""

from __future__ import annotations

from proxyworker.config.policy import DatabasePolicy, Honeytokens, Signatures
from proxyworker.guard.catalog import Catalog, Relation
from proxyworker.guard.gate import Gate
from proxyworker.policy.decision import Deny
from proxyworker.policy.engine import Policy


def _catalog() -> Catalog:
    return Catalog(
        frozenset({"now"}),
        (
            Relation(1, "public", "accounts", "r", None, False, False, (frozenset({"id"}),), False),
            Relation(2, "app", "accounts", "r", None, False, False, (), False),
        ),
    )


def _gate(signatures: bool = True) -> Gate:
    config = DatabasePolicy(
        table_limits={"accounts": 10}, signatures=Signatures(enabled=signatures)
    )
    return Gate(Policy.compile(config), "alice", "app", catalog=_catalog())


def test_a_policy_needs_the_catalog_for_limited_or_honeytoken_tables() -> None:
    def uses_catalog(config: DatabasePolicy) -> bool:
        return Policy.compile(config).uses_catalog

    assert uses_catalog(DatabasePolicy(table_limits={"accounts": 10}))
    assert uses_catalog(DatabasePolicy(honeytokens=Honeytokens(tables=["secret_keys"])))
    assert not uses_catalog(DatabasePolicy(honeytokens=Honeytokens(values=["canary-7f3a9c"])))
    assert not uses_catalog(DatabasePolicy())


def test_it_decides_a_repeated_shape_once() -> None:
    gate = _gate()
    first = gate.decide_bytes(b"UPDATE accounts SET n = 1 WHERE id = 5")
    assert first.path == "static" and first.own_text
    again = gate.decide_bytes(b"UPDATE accounts SET n = 2 WHERE id = 7")
    assert again.decision is first.decision and not again.own_text
    exact = gate.statements(again, "UPDATE accounts SET n = 2 WHERE id = 7")
    assert exact[0].text == "UPDATE accounts SET n = 2 WHERE id = 7"
    assert gate.decide_bytes(b"UPDATE accounts SET n = 1 WHERE id = 5") is first


def test_it_follows_the_search_path_it_was_decided_under() -> None:
    gate = _gate()
    assert gate.decide_bytes(b"UPDATE accounts SET n = 1 WHERE id = 5").path == "static"
    gate.decide_bytes(b"SET search_path = app")
    # app.accounts has no unique key: the same text is no longer provably bounded.
    assert gate.decide_bytes(b"UPDATE accounts SET n = 1 WHERE id = 5").path == "verified"


def test_it_does_not_remember_settings_or_ddl() -> None:
    gate = _gate()
    gate.decide_bytes(b"SET search_path = app")
    assert len(gate._verdicts) == 0
    gate.decide_bytes(b"CREATE TABLE t1 (id int)")
    assert gate.ddl_pending
    assert gate.decide_bytes(b"UPDATE accounts SET n = 1 WHERE id = 5").path == "verified"
    assert len(gate._verdicts) == 0


def test_it_forgets_on_a_new_policy_or_catalog() -> None:
    gate = _gate(signatures=False)
    assert not isinstance(gate.decide_bytes(b"SELECT pg_sleep(1)").decision, Deny)
    gate.policy = Policy.compile(DatabasePolicy(table_limits={"accounts": 10}))
    assert isinstance(gate.decide_bytes(b"SELECT pg_sleep(1)").decision, Deny)
    gate.catalog = None
    assert gate.decide_bytes(b"UPDATE accounts SET n = 1 WHERE id = 5").path == "denied"


def test_it_denies_text_that_is_not_utf8() -> None:
    gate = _gate()
    gate.decide_bytes(b"SELECT * FROM accounts WHERE id = 1")
    verdict = gate.decide_bytes(b"SELECT * FROM accounts WHERE name = '\xff'")
    assert verdict.path == "denied"
