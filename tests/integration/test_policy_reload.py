"""Per-database policies, users limited to databases, and a policy swapped by a reload: a
transaction in flight finishes under the policy it started with, the next one gets the new."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import psycopg
import pytest

from tests.conftest import databases_toml
from tests.support.pgcluster import PgCluster, wait_until
from tests.support.worker import WorkerProcess, launch, worker_config

SECRET = "reload_secret"


def _config(upstream: PgCluster, app_policy: str, top_level: str = "") -> str:
    """``app`` carries ``app_policy`` as [databases.policy]; ``app_tx`` uses the top level."""
    app, app_tx = databases_toml(upstream).split("[[databases]]")[1:]
    return (
        f"[[databases]]{app}\n{app_policy}\n[[databases]]{app_tx}\n"
        '[[users]]\nname = "narrow"\npassword = "narrow-pw"\ndatabases = ["app_tx"]\n'
        f"\n{top_level}"
    )


def _reconfigure(proc: WorkerProcess, databases: str) -> None:
    text = worker_config(databases, port=proc.port, admin_port=proc.admin_port)
    with open(proc.config_path, "w") as fh:
        fh.write(text)
    reloads = proc.log().count("configuration reloaded")
    proc.signal(signal.SIGHUP)
    wait_until(lambda: proc.log().count("configuration reloaded") > reloads, timeout=10)


@pytest.fixture
def secret_table(upstream: PgCluster) -> Iterator[None]:
    with upstream.connect() as direct:
        direct.execute(
            f"DROP TABLE IF EXISTS {SECRET}; CREATE TABLE {SECRET} (k text);"
            f"INSERT INTO {SECRET} VALUES ('x')"
        )
    yield


HONEY = '[databases.policy.honeytokens]\ntables = ["reload_secret"]\n'


@pytest.fixture
def proc(upstream: PgCluster, secret_table: None) -> Iterator[WorkerProcess]:
    worker = launch(_config(upstream, HONEY))
    yield worker
    worker.stop()


def test_it_applies_each_databases_own_policy(proc: WorkerProcess) -> None:
    with (
        psycopg.connect(proc.dsn("app"), autocommit=True) as guarded,
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="protected table"),
    ):
        guarded.execute(f"SELECT * FROM {SECRET}")
    with psycopg.connect(proc.dsn("app_tx"), autocommit=True) as other:
        assert other.execute(f"SELECT k FROM {SECRET}").fetchall() == [("x",)]


def test_it_keeps_a_user_to_the_databases_it_may_use(proc: WorkerProcess) -> None:
    with psycopg.connect(proc.dsn("app_tx", user="narrow", password="narrow-pw")) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    with pytest.raises(psycopg.OperationalError, match='may not connect to database "app"'):
        psycopg.connect(proc.dsn("app", user="narrow", password="narrow-pw"))


def test_it_swaps_the_policy_between_transactions(proc: WorkerProcess, upstream: PgCluster) -> None:
    with psycopg.connect(proc.dsn("app")) as conn:
        conn.execute("SELECT 1")  # a transaction is open under the first policy
        _reconfigure(proc, _config(upstream, "[databases.policy.table_limits]\nx = 1\n"))
        # Still the first policy: the honeytoken is refused inside the open transaction...
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="protected table"):
            conn.execute(f"SELECT * FROM {SECRET}")
        conn.rollback()
        # ...and the next transaction runs under the new one, which does not protect it.
        assert conn.execute(f"SELECT k FROM {SECRET}").fetchall() == [("x",)]


def test_it_ends_a_session_that_ran_without_a_policy_when_one_arrives(
    proc: WorkerProcess, upstream: PgCluster
) -> None:
    with psycopg.connect(proc.dsn("app_tx"), autocommit=True) as conn:
        assert conn.execute(f"SELECT k FROM {SECRET}").fetchall() == [("x",)]
        _reconfigure(proc, _config(upstream, "", top_level=HONEY.replace("databases.policy.", "")))
        # It could have changed search_path unseen: fail closed rather than guess.
        with pytest.raises(psycopg.OperationalError, match="policy of database"):
            conn.execute(f"SELECT k FROM {SECRET}")
    with (
        psycopg.connect(proc.dsn("app_tx"), autocommit=True) as fresh,
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="protected table"),
    ):
        fresh.execute(f"SELECT * FROM {SECRET}")
