"""Shared fixtures: a private PostgreSQL cluster and real worker processes in front of it.

``db`` is parametrized over both pool modes, so every integration test that takes it runs once
through a session-mode database and once through a transaction-mode one.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.certs import Certificates, make_certificates
from tests.support.pgcluster import PgCluster, create_cluster
from tests.support.worker import WorkerProcess, launch


@pytest.fixture(scope="session")
def certs() -> Certificates:
    return make_certificates()


@pytest.fixture(scope="session")
def upstream(certs: Certificates) -> Iterator[PgCluster]:
    cluster = create_cluster(certs)
    yield cluster
    cluster.destroy()


def databases_toml(cluster: PgCluster, pool_size: int = 20, extra: str = "") -> str:
    """Databases ``app`` (session pooling) and ``app_tx`` (transaction pooling); ``extra``
    lines go into both."""
    return f"""
[[databases]]
name = "app"
upstream = "{cluster.url("postgres")}"
pool_mode = "session"
pool_size = {pool_size}
{extra}

[[databases]]
name = "app_tx"
upstream = "{cluster.url("postgres")}"
pool_mode = "transaction"
pool_size = {pool_size}
{extra}
"""


@pytest.fixture(scope="session")
def worker(upstream: PgCluster) -> Iterator[WorkerProcess]:
    proc = launch(databases_toml(upstream))
    yield proc
    proc.stop()


@pytest.fixture(params=["app", "app_tx"], ids=["session", "transaction"])
def db(request: pytest.FixtureRequest) -> str:
    """The proxy database name: session pooling, then transaction pooling."""
    return str(request.param)
