"""Fixtures of the evasion corpus: the template database in the session's cluster, and one
worker enforcing the corpus policy in front of it.

The worker lists one [[databases]] entry per case (guard_w0, guard_w1, ...): each case creates
its database from the template and runs its setup before the worker ever connects to it, so
whatever the worker learns about a database's catalog it learns after the setup, and no case
can inherit another's pooled connections or cached catalog.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.guard import fixture
from tests.guard.harness import FreshDatabases, Lab, Target
from tests.support.net import free_port
from tests.support.pgcluster import PgCluster
from tests.support.worker import (
    APP_PASSWORD,
    APP_USER,
    WorkerProcess,
    worker_config,
    write_config,
)

# Cases through the worker in one pytest session, at most (a few per attack and benign entry,
# plus respelled attacks); each needs a [[databases]] entry. Unused entries cost nothing.
WORKER_DATABASES = 2500
WORKER_PREFIX = "guard_w"


@pytest.fixture(scope="session")
def lab(upstream: PgCluster) -> Iterator[Lab]:
    fixture.create_template(upstream)
    maintenance = upstream.connect("postgres")
    try:
        yield Lab(upstream, maintenance)
    finally:
        maintenance.close()


@pytest.fixture(scope="session")
def worker_databases(upstream: PgCluster, lab: Lab) -> Iterator[FreshDatabases]:
    databases = FreshDatabases(upstream, WORKER_PREFIX, WORKER_DATABASES)
    try:
        yield databases
    finally:
        databases.close()


def guard_databases_toml(cluster: PgCluster, names: list[str]) -> str:
    return "".join(
        f"""
[[databases]]
name = "{name}"
upstream = "{cluster.url("postgres", db=name)}"
pool_mode = "session"
pool_size = 4
"""
        for name in names
    )


@pytest.fixture(scope="session")
def guard_worker(upstream: PgCluster, worker_databases: FreshDatabases) -> Iterator[WorkerProcess]:
    """A worker enforcing fixture.POLICY_TOML, listing every database `worker_databases` makes."""
    port = free_port()
    text = worker_config(
        guard_databases_toml(upstream, worker_databases.names()), port=port, admin_port=-1,
        policy=fixture.POLICY_TOML,
    )  # fmt: skip
    proc = WorkerProcess(write_config(text), port, -1).start()
    try:
        yield proc
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def worker_target(guard_worker: WorkerProcess) -> Target:
    return Target("worker", guard_worker.port, APP_USER, APP_PASSWORD)
