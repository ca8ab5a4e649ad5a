"""A quick slice of asyncpg's own test suite, directly and through the session's worker in
both pool modes (``pytest -m conformance tests/conformance``; the whole suites run with
``make conformance``).

The slice runs in a subprocess with the project's interpreter (asyncpg is pinned in
requirements/dev.txt); its tests come from the asyncpg sdist, downloaded once into
``build/conformance`` with pip. A test that passes directly must pass through the worker
unless ``known_differences.toml`` lists it for that pool mode.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conformance import outcomes
from tests.conformance.run import PLUGIN_DIR, REPO, asyncpg_tests, pinned
from tests.support.pgcluster import PgCluster
from tests.support.worker import APP_PASSWORD, APP_USER, WorkerProcess

pytestmark = pytest.mark.conformance

SLICE = (
    "tests/test_prepare.py",
    "tests/test_execute.py",
    "tests/test_transaction.py",
    "tests/test_cursor.py",
    "tests/test_codecs.py",
    "tests/test_exceptions.py",
)


def run_slice(
    src: Path, out: Path, *, port: int, user: str, password: str | None, database: str
) -> dict[str, outcomes.Outcome]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "PYTEST_"))}
    env |= {
        "PGHOST": "127.0.0.1",
        "PGPORT": str(port),
        "PGUSER": user,
        "PGDATABASE": database,
        "PGSSLMODE": "disable",
        "PYTHONPATH": str(PLUGIN_DIR),
        "SQLPROXY_OUTCOMES": str(out),
    }
    if password is not None:
        env["PGPASSWORD"] = password
    cmd = [sys.executable, "-m", "pytest", "-p", "sqlproxy_outcomes", "-p", "no:cacheprovider"]
    cmd += ["-q", "--timeout=60", *SLICE]
    proc = subprocess.run(
        cmd, cwd=src, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    if proc.returncode not in (0, 1):  # 1: some tests failed, which the caller judges
        pytest.fail(f"asyncpg's pytest exited with {proc.returncode}:\n{proc.stdout[-3000:]}")
    return outcomes.load(out)


@pytest.fixture(scope="module")
def asyncpg_src() -> Path:
    return asyncpg_tests(REPO / "build" / "conformance", pinned("asyncpg"))


@pytest.fixture(scope="module")
def direct(
    asyncpg_src: Path, upstream: PgCluster, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, outcomes.Outcome]:
    out = tmp_path_factory.mktemp("asyncpg-direct") / "outcomes.jsonl"
    return run_slice(
        asyncpg_src, out, port=upstream.port, user="postgres", password=None, database="postgres"
    )


def test_it_passes_the_asyncpg_slice_directly(direct: dict[str, outcomes.Outcome]) -> None:
    # The baseline must be meaningful: if it shrank, the comparison below would prove little.
    failing = {n: o.message for n, o in direct.items() if o.status in ("failed", "error")}
    assert failing == {}
    assert outcomes.counts(direct)["passed"] >= 100


def test_it_passes_the_asyncpg_slice_through_the_worker(
    asyncpg_src: Path,
    direct: dict[str, outcomes.Outcome],
    worker: WorkerProcess,
    db: str,
    tmp_path: Path,
) -> None:
    mode = "session" if db == "app" else "transaction"
    proxied = run_slice(
        asyncpg_src,
        tmp_path / "outcomes.jsonl",
        port=worker.port,
        user=APP_USER,
        password=APP_PASSWORD,
        database=db,
    )
    comparison = outcomes.compare("asyncpg", mode, direct, proxied, outcomes.known_differences())
    assert comparison.not_run == []
    assert {r.nodeid: r.message for r in comparison.new} == {}
