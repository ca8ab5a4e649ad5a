"""PgJDBC through a real worker, in both pool modes.

``tests/clients/jdbc/Exercise.java`` runs what a Java application does: simple statements,
named server-side prepared statements from the first use (prepareThreshold=1), batches
(pipelined Binds and Executes under one Sync, one of them failing), typed results, metadata
queries, a query timeout (the driver's own CancelRequest), transactions, a server-side cursor
(Execute with a row limit, PortalSuspended) and two connections interleaving named statements.
It prints one line per result; the test compares them with a direct connection's and with the
exact values expected. Java and the driver come from Debian (``make install``); when missing the
tests fail rather than skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.support.pgcluster import PgCluster
from tests.support.worker import APP_PASSWORD, APP_USER, ROOT, WorkerProcess

SOURCE = os.path.join(ROOT, "tests", "clients", "jdbc", "Exercise.java")
DRIVER = "/usr/share/java/postgresql.jar"

EXPECTED = {
    "simple": "1|two|null|true",
    "prepared_sum": "110",
    "batch_inserted": "100",
    "count_after_batch": "100",
    "batch_error": "23505",
    "count_after_failed_batch": "100",
    "error": "42P01",
    "types": '2024-01-02|1.50|abc|3:3|a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11|{"k": [1, 2]}',
    "metadata_tables": "1",
    "timeout": "57014",
    "after_timeout": "100",
    "count_after_rollback": "100",
    "count_after_commit": "101",
    "tx_error": "22012",
    "after_tx_error": "25P02",
    "cursor": "50|1275",
    "interleaved": "ok",
    "done": "0.3",
}


@pytest.fixture(scope="module")
def classes(tmp_path_factory: pytest.TempPathFactory) -> str:
    javac = shutil.which("javac")
    if javac is None or not os.path.exists(DRIVER):
        pytest.fail("javac or PgJDBC is missing: run `make install` (Debian packages)")
    out = str(tmp_path_factory.mktemp("jdbc"))
    subprocess.run([javac, "-d", out, "-cp", DRIVER, SOURCE], check=True, timeout=120)
    return out


def exercise(classes: str, port: int, db: str, user: str, password: str, table: str) -> dict:
    proc = subprocess.run(
        ["java", "-cp", f"{DRIVER}:{classes}", "Exercise", "127.0.0.1", str(port), db, user,
         password, table],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        pytest.fail(f"Exercise exited with {proc.returncode}:\n{proc.stderr}")
    return dict(line.split("=", 1) for line in proc.stdout.splitlines())


def test_it_gives_jdbc_what_a_direct_connection_gives(
    classes: str, worker: WorkerProcess, upstream: PgCluster, db: str
) -> None:
    proxied = exercise(classes, worker.port, db, APP_USER, APP_PASSWORD, f"jdbc_{db}")
    direct = exercise(classes, upstream.port, "sqlproxy_test", "postgres", "", f"jdbc_d_{db}")
    assert direct == EXPECTED
    assert proxied == EXPECTED
