"""psql and pgbench, the server's own clients, through a real worker."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from tests.support.worker import APP_PASSWORD, APP_USER, WorkerProcess


def client_env() -> dict[str, str]:
    return {**os.environ, "PGPASSWORD": APP_PASSWORD, "PGSSLMODE": "disable"}


def psql(
    worker: WorkerProcess, db: str, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["psql", "-X", "-h", "127.0.0.1", "-p", str(worker.port), "-U", APP_USER, "-d", db, *args],
        input=stdin, capture_output=True, text=True, timeout=60, env=client_env(),
    )  # fmt: skip


def test_it_runs_multi_statement_strings_in_psql(worker: WorkerProcess, db: str) -> None:
    result = psql(worker, db, "-At", "-c", "SELECT 1; SELECT 2 UNION ALL SELECT 3; SELECT 'x'")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["1", "2", "3", "x"]


def test_it_reports_errors_in_psql_and_continues(worker: WorkerProcess, db: str) -> None:
    script = "SELECT 1/0;\nSELECT 'after';\n"
    result = psql(worker, db, "-At", stdin=script)
    assert "division by zero" in result.stderr
    assert result.stdout.strip() == "after"


def test_it_copies_with_psql(
    worker: WorkerProcess, db: str, tmp_path: pytest.TempPathFactory
) -> None:
    table = f"psql_copy_{db}"
    data = "".join(f"{i}\tvalue {i}\n" for i in range(1000))
    script = (
        f"DROP TABLE IF EXISTS {table};\nCREATE TABLE {table} (a int, b text);\n"
        f"COPY {table} FROM STDIN;\n{data}\\.\n"
        f"SELECT count(*), sum(a) FROM {table};\n"
        f"COPY (SELECT * FROM {table} ORDER BY a LIMIT 2) TO STDOUT;\n"
        f"DROP TABLE {table};\n"
    )
    result = psql(worker, db, "-At", "-v", "ON_ERROR_STOP=1", stdin=script)
    assert result.returncode == 0, result.stderr
    assert "1000|499500" in result.stdout
    assert "0\tvalue 0\n1\tvalue 1" in result.stdout


@pytest.fixture(scope="module")
def pgbench_tables(worker: WorkerProcess) -> None:
    init = subprocess.run(
        ["pgbench", "-i", "-q", "-s", "1",
         "-h", "127.0.0.1", "-p", str(worker.port), "-U", APP_USER, "app"],
        capture_output=True, text=True, timeout=120, env=client_env(),
    )  # fmt: skip
    assert init.returncode == 0, init.stderr


@pytest.mark.parametrize("mode", ["simple", "extended", "prepared"])
def test_it_runs_pgbench(worker: WorkerProcess, db: str, mode: str, pgbench_tables: None) -> None:
    # -j 4: pgbench's synchronous PQprepare in one thread would otherwise wait on the pool.
    result = subprocess.run(
        ["pgbench", "-n", "-c", "8", "-j", "4", "-t", "50", "-M", mode,
         "-h", "127.0.0.1", "-p", str(worker.port), "-U", APP_USER, db],
        capture_output=True, text=True, timeout=120, env=client_env(),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    processed = re.search(r"number of transactions actually processed: (\d+)/(\d+)", result.stdout)
    assert processed is not None, result.stdout
    assert processed.group(1) == processed.group(2) == "400"
    assert "number of failed transactions: 0" in result.stdout
