"""``[rate_limits] rows_changed_per_minute`` through a real worker: a per-user budget of rows
changed across transactions, counted from what the guard's check measured and from the
command tags; refused with 53400 once spent, or by the check itself (before anything commits)
when one statement would take more than what is left. Audit events carry the rows per table."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import errors

from tests.conftest import databases_toml
from tests.support.pgcluster import PgCluster
from tests.support.worker import WorkerProcess, launch

POLICY = """
[table_limits]
rb_limited = 100

[rate_limits]
rows_changed_per_minute = 10

[audit]
path = "{audit}"
sample_allowed = 1.0
"""
SCHEMA = """
DROP TABLE IF EXISTS rb_free, rb_limited CASCADE;
CREATE TABLE rb_free (id int PRIMARY KEY, v int);
CREATE TABLE rb_limited (id int PRIMARY KEY, v int);
"""
ROWS = """
TRUNCATE rb_free, rb_limited;
INSERT INTO rb_free SELECT g, 0 FROM generate_series(1, 50) g;
INSERT INTO rb_limited SELECT g, 0 FROM generate_series(1, 50) g;
"""


@pytest.fixture(scope="module")
def schema(upstream: PgCluster) -> None:
    with upstream.connect() as conn:
        conn.execute(SCHEMA)


@pytest.fixture
def budgeted(upstream: PgCluster, schema: None, tmp_path: Path) -> Iterator[WorkerProcess]:
    """A worker of its own per test: the budget is per user and per worker process."""
    with upstream.connect() as conn:
        conn.execute(ROWS)
    audit = tmp_path / "audit.jsonl"
    proc = launch(databases_toml(upstream), policy=POLICY.format(audit=audit))
    proc.audit_path = str(audit)  # type: ignore[attr-defined]
    yield proc
    proc.stop()


def connect(proc: WorkerProcess, protocol: str) -> psycopg.Connection:
    factory = psycopg.ClientCursor if protocol == "simple" else psycopg.Cursor
    return psycopg.connect(proc.dsn("app"), autocommit=True, cursor_factory=factory)


def changed(upstream: PgCluster, table: str) -> int:
    with upstream.connect() as conn:
        row = conn.execute(f"SELECT count(*) FROM {table} WHERE v <> 0").fetchone()
        assert row is not None
        return int(row[0])


def audit_rows(proc: WorkerProcess) -> list[dict[str, int]]:
    deadline = time.monotonic() + 5
    while True:
        with open(proc.audit_path) as fh:  # type: ignore[attr-defined]
            events = [json.loads(line) for line in fh]
        rows = [e["rows"] for e in events if "rows" in e]
        if rows or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


@pytest.mark.parametrize("protocol", ["simple", "extended"])
def test_it_refuses_writes_once_the_budget_is_spent(
    budgeted: WorkerProcess, upstream: PgCluster, protocol: str
) -> None:
    with connect(budgeted, protocol) as conn:
        assert conn.execute("UPDATE rb_free SET v = 1 WHERE id <= 6").rowcount == 6
        # 4 rows left: this one still runs (the budget is checked before a write)...
        assert conn.execute("UPDATE rb_free SET v = 1 WHERE id BETWEEN 7 AND 12").rowcount == 6
        # ... and now it is spent, across transactions and statements of any kind.
        with pytest.raises(errors.ConfigurationLimitExceeded) as exc:
            conn.execute("DELETE FROM rb_free WHERE id = 50")
        assert exc.value.sqlstate == "53400"
        assert exc.value.diag.message_primary == "sqlproxy: statement refused by rate_limits"
        assert "rows_changed_per_minute" in (exc.value.diag.message_detail or "")
        # Reads are not limited, and the session stays usable.
        assert conn.execute("SELECT count(*) FROM rb_free").fetchone() == (50,)
    assert changed(upstream, "rb_free") == 12


def test_the_check_refuses_one_statement_over_what_is_left(
    budgeted: WorkerProcess, upstream: PgCluster
) -> None:
    with connect(budgeted, "simple") as conn:
        # Within the table limit (100) but over the budget (10): refused before it commits.
        with pytest.raises(errors.ConfigurationLimitExceeded) as exc:
            conn.execute("UPDATE rb_limited SET v = 1 WHERE id <= 15")
        assert "rows_changed_per_minute" in (exc.value.diag.message_detail or "")
        assert changed(upstream, "rb_limited") == 0
        assert conn.execute("UPDATE rb_limited SET v = 1 WHERE id <= 3").rowcount == 3
        assert audit_rows(budgeted) == [{"public.rb_limited": 3}]
        with conn.transaction():
            conn.execute("UPDATE rb_limited SET v = 2 WHERE id <= 4")
            conn.execute("UPDATE rb_limited SET v = 3 WHERE id = 10")
        assert audit_rows(budgeted)[1:] == [{"public.rb_limited": 4}, {"public.rb_limited": 1}]
        # 2 rows left: 3 more in one statement are refused by the check.
        with pytest.raises(errors.ConfigurationLimitExceeded):
            conn.execute("UPDATE rb_limited SET v = 4 WHERE id BETWEEN 20 AND 22")
    assert changed(upstream, "rb_limited") == 5
