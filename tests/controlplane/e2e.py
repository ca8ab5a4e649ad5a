"""End-to-end helpers shared by the daphne and browser tests: the whole stack as processes
(daphne, ingest, a worker fed by the control plane through Redis) and tenant A's database made
real — an upstream database in the suite's cluster with a honeytoken table."""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from django.conf import settings
from django.db import connection

from controlplane.policies.models import Policy
from controlplane.policies.services import update_policy
from proxyworker.config.policy import DatabasePolicy, Honeytokens
from tests.controlplane.conftest import World
from tests.support.controlplane import ControlPlane, start_control_plane
from tests.support.pgcluster import PgCluster
from tests.support.redisserver import RedisServer
from tests.support.worker import WorkerProcess, launch_fleet

UPSTREAM_DB = "sqlproxy_e2e_orders"
APP_PASSWORD = "a-app-pw"
"""tenant A's proxy user a_app (tests/controlplane/conftest.py)."""


@dataclass
class Stack:
    control_plane: ControlPlane
    worker: WorkerProcess
    redis: RedisServer

    def dsn(self, sql_user: str = "a_app", password: str = APP_PASSWORD) -> str:
        return self.worker.dsn(db="a_orders", user=sql_user, password=password)


@contextmanager
def running_stack(upstream: PgCluster, redis: RedisServer, name: str) -> Iterator[Stack]:
    """daphne + ingest + one worker (id ``name``); call with the test database set up."""
    with upstream.connect("postgres") as conn:
        conn.autocommit = True
        conn.execute(f"DROP DATABASE IF EXISTS {UPSTREAM_DB}")
        conn.execute(f"CREATE DATABASE {UPSTREAM_DB}")
    with upstream.connect(UPSTREAM_DB) as conn:
        conn.execute(
            "CREATE TABLE secret_keys (k text);"
            "INSERT INTO secret_keys VALUES ('canary');"
            "CREATE TABLE orders (id int PRIMARY KEY, total int);"
            "INSERT INTO orders SELECT g, g FROM generate_series(1, 100) g;"
        )
    directory = tempfile.mkdtemp(prefix=f"sqlproxy-{name}-")
    worker = launch_fleet(redis.url, os.path.join(directory, "worker"), worker_id=name)
    control_plane = None
    try:
        control_plane = start_control_plane(
            directory,
            database=connection.settings_dict,
            redis_url=redis.url,
            secret_key=settings.SECRET_KEY,
            fernet_key=settings.SQLPROXY_SECRET_KEYS[0],
            worker=f"127.0.0.1:{worker.port}",
        )
        yield Stack(control_plane, worker, redis)
    finally:
        if control_plane is not None:
            control_plane.stop()
        worker.stop()


def make_tenant_a_real(world: World, upstream: PgCluster) -> None:
    """Point a_orders at the upstream database, guard secret_keys with a honeytoken; each
    save is published at once (transactional tests autocommit)."""
    db = world.a_db
    db.host, db.port, db.dbname, db.user = "127.0.0.1", upstream.port, UPSTREAM_DB, "postgres"
    db.sslmode = "disable"
    db.save()
    policy = Policy.objects.get(database=db)
    update_policy(policy, DatabasePolicy(honeytokens=Honeytokens(tables=["secret_keys"])))


def wait_for_enforcement(stack: Stack, timeout: float = 15.0) -> None:
    """Until the worker serves a_orders with the honeytoken policy in force."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(stack.dsn(), connect_timeout=2, autocommit=True) as conn:
                try:
                    conn.execute("SELECT k FROM secret_keys").fetchall()
                except psycopg.errors.InsufficientPrivilege:
                    return
                last = AssertionError("secret_keys readable: policy not yet in force")
        except psycopg.OperationalError as exc:
            last = exc
        time.sleep(0.1)
    raise AssertionError(f"worker not enforcing tenant A's policy: {last}\n{stack.worker.log()}")
