"""A proxy user mapped to an upstream role: its server connections log in as that role, never
shared with another role's, in both pool modes — even when one server connection is all the
database may have."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tests.support.pgcluster import PgCluster
from tests.support.worker import WorkerProcess, launch

MAPPED = "sqlproxy_scram"  # a SCRAM role of the private cluster (tests/support/pgcluster.py)


@pytest.fixture(scope="module")
def mapped(upstream: PgCluster) -> Iterator[WorkerProcess]:
    databases = "".join(
        f"""
[[databases]]
name = "{name}"
upstream = "{upstream.url("postgres")}"
pool_mode = "{mode}"
pool_size = 1
"""
        for name, mode in (("one", "session"), ("one_tx", "transaction"))
    )
    users = f"""
[[users]]
name = "reporter"
password = "reporter-pw"
upstream_user = "{MAPPED}"
upstream_password = "scram-pw"
"""
    proc = launch(databases + users)
    yield proc
    proc.stop()


def current_user(conn: psycopg.Connection) -> str:
    row = conn.execute("SELECT current_user").fetchone()
    assert row is not None
    return str(row[0])


@pytest.mark.parametrize("db", ["one", "one_tx"], ids=["session", "transaction"])
def test_a_mapped_user_logs_in_upstream_as_its_role(mapped: WorkerProcess, db: str) -> None:
    with psycopg.connect(mapped.dsn(db, user="reporter", password="reporter-pw")) as conn:
        assert current_user(conn) == MAPPED
    with psycopg.connect(mapped.dsn(db)) as conn:  # the database's own upstream user
        assert current_user(conn) == "postgres"


def test_roles_never_share_a_server_connection(mapped: WorkerProcess) -> None:
    """Transaction mode with pool_size 1: the two clients take turns on the database's only
    slot, and each of their statements runs as its own role."""
    with (
        psycopg.connect(mapped.dsn("one_tx"), autocommit=True) as owner,
        psycopg.connect(
            mapped.dsn("one_tx", user="reporter", password="reporter-pw"), autocommit=True
        ) as reporter,
    ):
        for _ in range(5):
            assert current_user(owner) == "postgres"
            assert current_user(reporter) == MAPPED
