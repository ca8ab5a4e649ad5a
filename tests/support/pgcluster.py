"""A private PostgreSQL cluster for the test suite: initdb in a temporary directory, its own
port, TLS on, and roles for every upstream authentication method.

The suite never depends on how the machine's own PostgreSQL is configured, and it can stop,
kill and restart its cluster to test upstream failures. As root, the server runs as the
``postgres`` system user (initdb refuses root).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass

import psycopg

from tests.support.certs import Certificates
from tests.support.net import free_port

ROLES = {
    # role: (password, hba method)
    "sqlproxy_scram": ("scram-pw", "scram-sha-256"),
    "sqlproxy_md5": ("md5-pw", "md5"),
    "sqlproxy_plain": ("plain-pw", "password"),
    "sqlproxy_tls": ("tls-pw", "scram-sha-256"),
}


def bindir() -> str:
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    if found:
        return os.path.dirname(found[-1])
    pg_config = shutil.which("pg_config")
    if pg_config:
        return subprocess.check_output([pg_config, "--bindir"], text=True).strip()
    raise RuntimeError("PostgreSQL server binaries not found: run `make install`")


@dataclass
class PgCluster:
    datadir: str
    port: int
    certs: Certificates
    bin: str

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def url(self, role: str = "postgres", db: str = "sqlproxy_test", **query: str) -> str:
        password = ROLES[role][0] if role in ROLES else None
        auth = f"{role}:{password}" if password else role
        params = "&".join(f"{k}={v}" for k, v in {"sslmode": "disable", **query}.items())
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{db}?{params}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=120)

    def start(self) -> None:
        self._run(
            f"{self.bin}/pg_ctl", "-D", self.datadir, "-l", f"{self.datadir}/server.log",
            "-w", "-t", "60", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run(f"{self.bin}/pg_ctl", "-D", self.datadir, "-m", mode, "-w", "stop", check=False)

    def running(self) -> bool:
        return (
            self._run(f"{self.bin}/pg_ctl", "-D", self.datadir, "status", check=False).returncode
            == 0
        )

    def connect(self, db: str = "sqlproxy_test", **kw: object) -> psycopg.Connection[tuple]:
        return psycopg.connect(f"{self.dsn} dbname={db}", autocommit=True, **kw)  # type: ignore[arg-type]

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.datadir, ignore_errors=True)


def create_cluster(certs: Certificates) -> PgCluster:
    datadir = tempfile.mkdtemp(prefix="sqlproxy-pg-")
    cluster = PgCluster(datadir, free_port(), certs, bindir())
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(datadir, pw.pw_uid, pw.pw_gid)
    cluster._run(
        f"{cluster.bin}/initdb", "-D", datadir, "-U", "postgres", "--auth=trust",
        "--no-sync", "-E", "UTF8", "--locale=C",
    )  # fmt: skip
    for name, data in (("server.crt", certs.server_cert), ("server.key", certs.server_key)):
        path = os.path.join(datadir, name)
        with open(path, "wb") as fh:
            fh.write(data)
        os.chmod(path, 0o600)
        if os.geteuid() == 0:
            os.chown(path, pw.pw_uid, pw.pw_gid)
    hba = ["local all all trust"]
    hba += [
        f"hostssl all {role} 127.0.0.1/32 {m}" for role, (_, m) in ROLES.items() if "tls" in role
    ]
    hba += ["hostnossl all sqlproxy_tls 127.0.0.1/32 reject"]
    hba += [
        f"host all {role} 127.0.0.1/32 {m}" for role, (_, m) in ROLES.items() if "tls" not in role
    ]
    hba += ["host all all 127.0.0.1/32 trust"]
    with open(os.path.join(datadir, "pg_hba.conf"), "w") as fh:
        fh.write("\n".join(hba) + "\n")
    with open(os.path.join(datadir, "postgresql.auto.conf"), "a") as fh:
        fh.write(
            f"port = {cluster.port}\n"
            "listen_addresses = '127.0.0.1'\n"
            f"unix_socket_directories = '{datadir}'\n"
            "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n"
            "max_connections = 300\nfsync = off\nsynchronous_commit = off\n"
            "full_page_writes = off\nshared_buffers = 64MB\n"
        )
    cluster.start()
    with psycopg.connect(cluster.dsn, autocommit=True) as conn:
        for role, (password, method) in ROLES.items():
            encryption = "md5" if method == "md5" else "scram-sha-256"
            conn.execute(f"SET password_encryption = '{encryption}'")
            conn.execute(f"CREATE ROLE {role} LOGIN SUPERUSER PASSWORD '{password}'")
        conn.execute("CREATE DATABASE sqlproxy_test")
    return cluster


def wait_until(predicate: object, timeout: float = 10.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(interval)
    raise TimeoutError(f"condition not met within {timeout}s")
