"""An upstream that is killed, stopped and restarted: clients get a precise error, readiness
reports it, and the worker recovers without a restart. Uses its own cluster so the rest of
the suite is not disturbed."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import psycopg
import pytest

from tests.conftest import databases_toml
from tests.support.certs import Certificates
from tests.support.pgcluster import PgCluster, create_cluster, wait_until
from tests.support.worker import WorkerProcess, launch


@pytest.fixture(scope="module")
def cluster(certs: Certificates) -> Iterator[PgCluster]:
    c = create_cluster(certs)
    yield c
    c.destroy()


@pytest.fixture(scope="module")
def proxy(cluster: PgCluster) -> Iterator[WorkerProcess]:
    proc = launch(databases_toml(cluster))
    yield proc
    proc.stop()


def test_it_recovers_when_the_upstream_restarts(
    proxy: WorkerProcess, cluster: PgCluster, db: str
) -> None:
    worker_pid = proxy.proc.pid if proxy.proc else None
    with psycopg.connect(proxy.dsn(db), autocommit=True) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert proxy.http("/readyz")[0] == 200

    busy = psycopg.connect(proxy.dsn(db), autocommit=True)
    failure: list[BaseException] = []

    def long_query() -> None:
        try:
            busy.execute("SELECT pg_sleep(30)")
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=long_query)
    thread.start()
    try:
        cluster.stop("immediate")
        thread.join(15)
        assert not thread.is_alive()
        assert failure and isinstance(failure[0], psycopg.OperationalError)

        with pytest.raises(psycopg.OperationalError) as down:
            psycopg.connect(proxy.dsn(db), connect_timeout=10)
        assert f'sqlproxy: database "{db}": cannot connect to 127.0.0.1:{cluster.port}' in str(
            down.value
        )
        status, body = proxy.http("/readyz")
        assert status == 503
        assert "cannot connect" in json.loads(body)["databases"][db]
    finally:
        cluster.start()
        busy.close()

    with psycopg.connect(proxy.dsn(db), autocommit=True) as conn:
        assert conn.execute("SELECT 'back'").fetchone() == ("back",)
    assert proxy.http("/readyz")[0] == 200
    assert proxy.proc is not None and proxy.proc.pid == worker_pid and proxy.proc.poll() is None


def test_it_drops_pooled_connections_the_server_closed(
    proxy: WorkerProcess, cluster: PgCluster, db: str
) -> None:
    with psycopg.connect(proxy.dsn(db), autocommit=True) as conn:
        conn.execute("SELECT 1")
    # Kill every backend while its connection idles in the worker's pool, and wait until
    # they are gone (pg_terminate_backend only sends the signal).
    with cluster.connect() as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
        )
        wait_until(
            lambda: (
                admin.execute(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
                ).fetchone()
                == (0,)
            )
        )
    with psycopg.connect(proxy.dsn(db), autocommit=True) as conn:
        assert conn.execute("SELECT 'fresh'").fetchone() == ("fresh",)


def test_it_tells_a_session_client_when_its_server_dies(
    proxy: WorkerProcess, cluster: PgCluster
) -> None:
    with psycopg.connect(proxy.dsn("app"), autocommit=True) as conn:
        conn.execute("SELECT 1")
        with cluster.connect() as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
            )
        with pytest.raises(psycopg.OperationalError) as info:
            conn.execute("SELECT 1")
        # The server's own reason, not one the worker adds after it.
        assert "terminating connection due to administrator command" in str(info.value)
        assert "sqlproxy" not in str(info.value)
