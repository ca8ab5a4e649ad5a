"""rewrite.py without a server: what a query string becomes and how its answers map back.
(What the server then does with it is tested through real workers: tests/integration/
test_dry_run.py, test_guard.py and the corpus.)"""

from __future__ import annotations

import pytest

from proxyworker.analysis import analyze
from proxyworker.guard.rewrite import (
    DRY_RUN_END,
    NOTHING,
    Checks,
    Modes,
    SettingRefused,
    dry_notice_text,
    plan_query,
    plan_statement,
    preview_sql,
)

CHECKS = Checks("BASELINE", "CHECK", "CHECK_NOW")


def plan(sql: str, status: bytes = b"I", checks: Checks | None = CHECKS, **modes: bool):  # type: ignore[no-untyped-def]
    statements = analyze(sql)
    writes = tuple(i.kind.value in ("insert", "update", "delete") for i in statements)
    return plan_query(sql, statements, status, checks, Modes(**modes), writes)


def test_it_leaves_a_string_alone_when_nothing_is_needed() -> None:
    assert plan("SELECT 1; UPDATE t SET a = 1", checks=None) is None


def test_it_checks_before_each_commit_and_baselines_each_transaction() -> None:
    p = plan("BEGIN; DELETE FROM t; COMMIT; UPDATE t SET a = 1")
    assert p is not None
    assert p.sql.split("\n;") == [
        "BEGIN", "BASELINE", "DELETE FROM t", "CHECK_NOW", "COMMIT",
        "BASELINE", "UPDATE t SET a = 1", "CHECK_NOW",
    ]  # fmt: skip
    assert p.drop == {1, 3, 5, 7} and p.hold
    # Error positions: "DELETE" starts at character 8 of the client's text.
    assert p.position(p.sql.index("DELETE") + 1) == 8
    assert p.position(p.sql.index("BASELINE") + 1) is None


def test_inside_a_block_the_last_check_does_not_fire_deferred_triggers() -> None:
    p = plan("UPDATE t SET a = 1", status=b"T")
    assert p is not None and p.sql.split("\n;") == ["BASELINE", "UPDATE t SET a = 1", "CHECK"]


def test_a_dry_run_commit_is_a_rollback_shown_as_commit() -> None:
    p = plan("DELETE FROM t; COMMIT AND CHAIN", status=b"T", checks=None, dry_run=True)
    assert p is not None
    assert p.sql.split("\n;") == ["DELETE FROM t", "ROLLBACK AND CHAIN"]
    assert p.rename == {1: b"COMMIT"} and p.notice_after == {1}


def test_a_dry_run_write_outside_a_block_ends_with_the_rollback() -> None:
    modes = Modes(dry_run=True)
    statements = analyze("INSERT INTO t VALUES (1)")
    p = plan_query("INSERT INTO t VALUES (1)", statements, b"I", None, modes, (True,))
    assert p is not None and p.sql.endswith(DRY_RUN_END) and p.collect
    assert not modes.dry_transaction
    # A failed block's COMMIT is the server's ROLLBACK already: left as it is.
    p = plan("COMMIT", status=b"E", checks=None, dry_run=True)
    assert p is not None and p.sql == "COMMIT" and not p.rename


def test_the_worker_answers_its_own_settings() -> None:
    modes = Modes()
    statements = analyze("SET sqlproxy.dry_run = on; SHOW sqlproxy.dry_run")
    p = plan_query("", statements, b"I", None, modes, (False, False))
    assert p is not None and modes.dry_run
    first, second = p.sql.split("\n;")
    assert first == NOTHING and "'on'" in second
    assert p.rename == {0: b"SET", 1: b"SHOW"}
    with pytest.raises(SettingRefused) as refused:
        plan("SET sqlproxy.dry_run = off", checks=None, forced=True)
    assert refused.value.sqlstate == "42501"
    with pytest.raises(SettingRefused):
        plan("SET sqlproxy.preview = sometimes", checks=None)


def test_preview_wraps_delete_and_update() -> None:
    (info,) = analyze("DELETE FROM t WHERE a > $1 -- the old ones")
    sql = preview_sql(info)
    assert sql.startswith("WITH sqlproxy_preview AS (DELETE FROM t WHERE a > $1 -- the old ones\n")
    assert "RETURNING *" in sql and sql.endswith("LIMIT 5")
    analyze(sql)  # still one valid statement
    statement = plan_statement((info,), b"I", Modes(preview=True), (True,))
    assert statement is not None and statement.preview and statement.writes


def test_the_notice_lists_what_changed() -> None:
    tags = [b"SELECT 3", b"DELETE 42", b"INSERT 0 1", b"BEGIN"]
    assert dry_notice_text(tags) == "sqlproxy dry run: DELETE 42, INSERT 0 1 rolled back"
    assert dry_notice_text([b"SELECT 1"]) == "sqlproxy dry run: rolled back"
