"""node-postgres (pg) through a real worker, in both pool modes and over verified TLS.

``tests/clients/node/exercise.js`` runs simple and extended queries, named prepared
statements, transactions with rollbacks and savepoints, errors mid-stream, many rows,
pipelining and a ``pg.Pool`` of concurrent clients, and prints one JSON object. The tests
here compare that object with the one a direct connection to PostgreSQL produces, and with
exact expected values. Node.js and ``node_modules`` are installed by ``make install``; when
they are missing the tests fail (a skip would hide that the driver was never exercised).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import databases_toml
from tests.support.certs import Certificates, make_certificates
from tests.support.pgcluster import PgCluster
from tests.support.worker import APP_PASSWORD, APP_USER, ROOT, WorkerProcess, launch

NODE_DIR = os.path.join(ROOT, "tests", "clients", "node")


def node_binary() -> str:
    """The node executable, after checking that the pinned pg package is installed."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: run `make install` (it installs Debian's nodejs)")
    with open(os.path.join(NODE_DIR, "package.json"), encoding="utf-8") as fh:
        pinned = json.load(fh)["dependencies"]["pg"]
    installed = os.path.join(NODE_DIR, "node_modules", "pg", "package.json")
    if not os.path.isfile(installed):
        pytest.fail(f"{NODE_DIR}/node_modules has no pg: run `make install` (npm ci)")
    with open(installed, encoding="utf-8") as fh:
        version = json.load(fh)["version"]
    if version != pinned:
        pytest.fail(
            f"node_modules has pg {version}, package.json pins {pinned}: run `make install`"
        )
    return node


def run_node(
    script: str,
    *,
    port: int,
    database: str,
    user: str = APP_USER,
    password: str | None = APP_PASSWORD,
    ca: str | None = None,
    **extra: str,
) -> dict[str, Any]:
    """Run a script of tests/clients/node with only the given settings in its environment."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PGHOST": "127.0.0.1",
        "PGPORT": str(port),
        "PGUSER": user,
        "PGDATABASE": database,
        **extra,
    }
    if password is not None:
        env["PGPASSWORD"] = password
    if ca is not None:
        env["PGSSLROOTCERT"] = ca
    proc = subprocess.run(
        [node_binary(), script],
        cwd=NODE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"node {script} exited with {proc.returncode}:\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def exercise(port: int, database: str, table: str, *, notify: bool, **kw: Any) -> dict[str, Any]:
    extra = {"EXERCISE_TABLE": table, "EXERCISE_NOTIFY": "1" if notify else "0"}
    return run_node("exercise.js", port=port, database=database, **extra, **kw)


def expected_results(*, notify: bool, transport: dict[str, Any]) -> dict[str, Any]:
    """What exercise.js must print; kept in step with the script section by section."""
    md5s = "".join(f"{hashlib.md5(str(x).encode()).hexdigest()}\n" for x in range(1, 50001))
    error = {"severity": "ERROR"}
    return {
        "transport": transport,
        "simple": {
            "rows": [{"one": 1, "two": "two", "nothing": None, "yes": True}],
            "fields": [["one", 23], ["two", 25], ["nothing", 23], ["yes", 16]],
            "command": ["SELECT", 1],
            "multi": [[{"a": 1}], [{"b": 2, "c": 3}]],
            "notices": [["NOTICE", "hello from node"], ["WARNING", "careful"]],
        },
        "parameterized": {
            "series": [7, 14, 21],
            "typed": {
                "t": 'héllo ✓ "quoted"',
                "b": True,
                "n": "12345678901234567890.5",
                "j": {"k": [1, "x"], "nested": {"ok": None}},
                "by": "000102ff",
                "arr": [1, 2, 3],
                "nul": None,
                "ts": "2024-02-29T12:34:56.789Z",
            },
            "batched": [1000, 1, 1000],
        },
        "named": {"uses": [[2 * i, f"a{i}-b"] for i in range(6)]},
        "transactions": {
            "sameBackend": True,
            "committed": [1, 2],
            "inside": [1, 2, 3],
            "rolledBack": [1, 2],
            "duplicate": "23505",
            "aborted": "25P02",
            "inSavepoint": "23505",
            "final": [
                {"id": 1, "note": "one"},
                {"id": 2, "note": "two"},
                {"id": 4, "note": "four"},
                {"id": 5, "note": "five"},
            ],
        },
        "errors": {
            "simple": {"code": "22012", **error, "message": "division by zero"},
            "extended": {"code": "22012", **error, "message": "division by zero"},
            "missing": {
                "code": "42P01",
                **error,
                "message": 'relation "no_such_table_node" does not exist',
            },
            "syntax": {"code": "42601", **error, "message": 'syntax error at or near "SELEC"'},
            "badParam": {
                "code": "22P02",
                **error,
                "message": 'invalid input syntax for type integer: "not a number"',
            },
            "reuse": 42,
            "after": "still here",
        },
        "manyRows": {
            "count": 50000,
            "sum": 50000 * 50001 // 2,
            "sha256": hashlib.sha256(md5s.encode()).hexdigest(),
            "wide": [1_000_000, 500_000],
        },
        "pipeline": [100 + i if i != 6 else "22012" for i in range(12)],
        "pool": {
            "plain": list(range(20)),
            "named": [3 * i for i in range(20)],
            "transactions": [[i, True] for i in range(5)],
            "errors": ["22012", 1, 2, "22012", 4, 5],
        },
        "notify": {"channelMatches": True, "payload": "payload from node"} if notify else None,
    }


PLAIN = {"tls": False}


def listens(db: str) -> bool:
    """LISTEN needs the session's own server connection: session pooling only."""
    return db == "app"


def test_it_returns_what_a_direct_connection_returns(
    worker: WorkerProcess, upstream: PgCluster, db: str
) -> None:
    proxied = exercise(worker.port, db, f"node_{db}", notify=listens(db))
    direct = exercise(
        upstream.port,
        "sqlproxy_test",
        f"node_direct_{db}",
        notify=listens(db),
        user="postgres",
        password=None,
    )
    assert proxied == direct


def test_it_gives_node_postgres_the_exact_expected_results(worker: WorkerProcess, db: str) -> None:
    result = exercise(worker.port, db, f"node_{db}", notify=listens(db))
    assert result == expected_results(notify=listens(db), transport=PLAIN)


@pytest.fixture(scope="module")
def ca_files(tmp_path_factory: pytest.TempPathFactory, certs: Certificates) -> dict[str, str]:
    """The suite's CA, server certificate and key as files, plus an unrelated CA."""
    directory = tmp_path_factory.mktemp("node-tls")
    paths = certs.write(str(directory))
    other = directory / "other-ca.pem"
    other.write_bytes(make_certificates().ca_cert)
    return {**paths, "other_ca": str(other)}


@pytest.fixture(scope="module")
def tls_worker(upstream: PgCluster, ca_files: dict[str, str]) -> Iterator[WorkerProcess]:
    proc = launch(
        databases_toml(upstream),
        extra=f'tls_cert = "{ca_files["cert"]}"\ntls_key = "{ca_files["key"]}"',
    )
    yield proc
    proc.stop()


def test_it_runs_everything_over_verified_tls(
    tls_worker: WorkerProcess, ca_files: dict[str, str], db: str
) -> None:
    result = exercise(tls_worker.port, db, f"node_tls_{db}", notify=listens(db), ca=ca_files["ca"])
    tls = {"tls": True, "authorized": True, "protocol": "TLSv1.3"}
    assert result == expected_results(notify=listens(db), transport=tls)


def test_it_refuses_a_worker_certificate_signed_by_another_ca(
    tls_worker: WorkerProcess, ca_files: dict[str, str]
) -> None:
    result = run_node("probe.js", port=tls_worker.port, database="app", ca=ca_files["other_ca"])
    assert result["ok"] is False
    # Both test CAs share a subject name, so OpenSSL finds the issuer and rejects its signature.
    assert result["error"]["code"] == "CERT_SIGNATURE_FAILURE"


def test_it_connects_in_plain_text_when_no_ca_is_given(tls_worker: WorkerProcess) -> None:
    result = run_node("probe.js", port=tls_worker.port, database="app")
    assert result == {"ok": True, "transport": PLAIN}


def test_it_tells_node_postgres_when_the_worker_has_no_tls(
    worker: WorkerProcess, ca_files: dict[str, str]
) -> None:
    result = run_node("probe.js", port=worker.port, database="app", ca=ca_files["ca"])
    assert result == {
        "ok": False,
        "error": {
            "code": None,
            "severity": None,
            "message": "The server does not support SSL connections",
        },
    }
