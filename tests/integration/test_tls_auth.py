"""TLS on both sides and every upstream authentication method.

Client side: the worker terminates TLS (verified by the client against the test CA) and
authenticates clients with SCRAM-SHA-256 against a stored verifier. Server side: trust,
password, md5 and SCRAM-SHA-256 roles, and a role the cluster only accepts over TLS, reached
with sslmode=verify-full."""

from __future__ import annotations

import os
from collections.abc import Iterator

import psycopg
import pytest

from proxyworker.protocol.scram import make_verifier
from tests.support.certs import Certificates, make_certificates
from tests.support.pgcluster import PgCluster
from tests.support.worker import APP_PASSWORD, APP_USER, WorkerProcess, launch


@pytest.fixture(scope="module")
def tls_worker(
    upstream: PgCluster, certs: Certificates, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[WorkerProcess, dict[str, str]]]:
    paths = certs.write(str(tmp_path_factory.mktemp("certs")))
    other_ca = make_certificates().write(str(tmp_path_factory.mktemp("other-ca")))
    verifier = make_verifier("stored-secret")
    databases = "\n".join(
        f'[[databases]]\nname = "{name}"\nupstream = "{url}"\n'
        for name, url in {
            "trust": upstream.url("postgres"),
            "scram": upstream.url("sqlproxy_scram"),
            "md5": upstream.url("sqlproxy_md5"),
            "plain": upstream.url("sqlproxy_plain"),
            "tls": upstream.url("sqlproxy_tls", sslmode="verify-full", sslrootcert=paths["ca"]),
            "tls_wrong_ca": upstream.url(
                "sqlproxy_tls", sslmode="verify-full", sslrootcert=other_ca["ca"]
            ),
            "bad_password": upstream.url("postgres").replace("postgres@", "sqlproxy_scram:nope@"),
        }.items()
    )
    databases += f'\n[[users]]\nname = "verifier_user"\nscram_verifier = "{verifier}"\n'
    extra = f'tls_cert = "{paths["cert"]}"\ntls_key = "{paths["key"]}"'
    proc = launch(databases, extra=extra)
    yield proc, paths
    proc.stop()


def connect_tls(
    proc: WorkerProcess, paths: dict[str, str], db: str, **kw: str
) -> psycopg.Connection:
    dsn = proc.dsn(db).replace("sslmode=disable", f"sslmode=verify-full sslrootcert={paths['ca']}")
    params = " ".join(f"{k}={v}" for k, v in kw.items())
    return psycopg.connect(f"{dsn} host=localhost {params}", autocommit=True, connect_timeout=10)


def test_it_terminates_client_tls_verified_by_the_client(
    tls_worker: tuple[WorkerProcess, dict[str, str]],
) -> None:
    proc, paths = tls_worker
    with connect_tls(proc, paths, "trust") as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_it_refuses_a_client_that_does_not_trust_its_certificate(
    tls_worker: tuple[WorkerProcess, dict[str, str]], tmp_path: str
) -> None:
    proc, _ = tls_worker
    other = make_certificates().write(str(tmp_path))
    # Same CA name, other key: OpenSSL reports a signature failure rather than an unknown CA.
    with pytest.raises(
        psycopg.OperationalError, match=r"certificate verify failed|signature failure"
    ):
        connect_tls(proc, {"ca": other["ca"]}, "trust")


@pytest.mark.parametrize(
    ("db", "role"),
    [
        ("trust", "postgres"),
        ("scram", "sqlproxy_scram"),
        ("md5", "sqlproxy_md5"),
        ("plain", "sqlproxy_plain"),
    ],
)
def test_it_authenticates_upstream_with_each_method(
    tls_worker: tuple[WorkerProcess, dict[str, str]], upstream: PgCluster, db: str, role: str
) -> None:
    proc, paths = tls_worker
    with connect_tls(proc, paths, db) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (role,)
    with upstream.connect("postgres") as admin:
        method = admin.execute(
            "SELECT auth_method FROM pg_hba_file_rules WHERE user_name = ARRAY[%s]", (role,)
        ).fetchone()
    expected = {
        "postgres": None,
        "sqlproxy_scram": "scram-sha-256",
        "sqlproxy_md5": "md5",
        "sqlproxy_plain": "password",
    }
    assert (method[0] if method else None) == expected[role]


def test_it_reaches_a_tls_only_role_with_verify_full(
    tls_worker: tuple[WorkerProcess, dict[str, str]],
) -> None:
    proc, paths = tls_worker
    with connect_tls(proc, paths, "tls") as conn:
        row = conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
        assert row == (True,)
        assert conn.execute("SELECT current_user").fetchone() == ("sqlproxy_tls",)


def test_it_refuses_an_upstream_whose_certificate_it_cannot_verify(
    tls_worker: tuple[WorkerProcess, dict[str, str]],
) -> None:
    proc, paths = tls_worker
    with pytest.raises(psycopg.OperationalError) as info:
        connect_tls(proc, paths, "tls_wrong_ca")
    assert "certificate verify failed" in str(info.value)
    assert 'sqlproxy: database "tls_wrong_ca"' in str(info.value)


def test_it_passes_on_an_upstream_login_failure(
    tls_worker: tuple[WorkerProcess, dict[str, str]],
) -> None:
    proc, paths = tls_worker
    with pytest.raises(psycopg.OperationalError) as info:
        connect_tls(proc, paths, "bad_password")
    expected = 'password authentication failed for user "sqlproxy_scram"'
    assert f'sqlproxy: database "bad_password": {expected}' in str(info.value)


def test_it_authenticates_clients_against_a_stored_verifier(
    tls_worker: tuple[WorkerProcess, dict[str, str]],
) -> None:
    proc, paths = tls_worker
    dsn_user = {"user": "verifier_user", "password": "stored-secret"}
    with connect_tls(proc, paths, "trust", **dsn_user) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect_tls(proc, paths, "trust", user="verifier_user", password="wrong")


def test_it_keeps_no_plaintext_password_in_a_verifier_config(
    tls_worker: tuple[WorkerProcess, dict[str, str]],
) -> None:
    proc, _ = tls_worker
    with open(proc.config_path) as fh:
        text = fh.read()
    assert "stored-secret" not in text
    assert os.path.exists(proc.config_path)
    assert APP_PASSWORD in text and APP_USER in text  # the plaintext user, for contrast
