"""The processes a benchmark talks to: the bench database, a PgBouncer and a worker.

Everything listens on loopback only. Every process started here runs in its own session
(process group) and is stopped through ``Services.close`` — by its id, TERM first, KILL if it
does not go — so an interrupted bench leaves nothing behind. Nothing here measures anything.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"

BENCH_DB = "sqlproxy_bench"
BENCH_ROLE = "sqlproxy_bench"
BENCH_ROLE_PASSWORD = "bench-owner-pw"
CLIENT_USER = "bench"
CLIENT_PASSWORD = "bench-secret"
SESSION_DB = "bench"
TRANSACTION_DB = "bench_tx"


def worker_config(port: int, pool_size: int, pg_port: int, guard: bool) -> str:
    """A worker's TOML: the bench database as ``SESSION_DB`` (session mode) and
    ``TRANSACTION_DB`` (transaction mode), SCRAM for ``CLIENT_USER``; with ``guard`` the
    default signatures and a row limit on pgbench_accounts (every statement analysed; TPC-B's
    writes proven bounded), without it the relay alone."""
    policy = (
        "[signatures]\nenabled = true\n\n[table_limits]\npgbench_accounts = 100\n"
        if guard
        else "[signatures]\nenabled = false\n"
    )
    upstream = (
        f"postgresql://{BENCH_ROLE}:{BENCH_ROLE_PASSWORD}@{HOST}:{pg_port}/{BENCH_DB}"
        "?sslmode=disable"
    )
    return f"""\
[listen]
host = "{HOST}"
port = {port}

[admin]
port = -1

[logging]
format = "text"
level = "warning"

[[users]]
name = "{CLIENT_USER}"
password = "{CLIENT_PASSWORD}"

[[databases]]
name = "{SESSION_DB}"
upstream = "{upstream}"
pool_mode = "session"
pool_size = {pool_size}

[[databases]]
name = "{TRANSACTION_DB}"
upstream = "{upstream}"
pool_mode = "transaction"
pool_size = {pool_size}

{policy}"""


class SetupError(Exception):
    """The bench cannot run (missing tool, database not reachable, a proxy did not start)."""


@dataclass(frozen=True)
class Endpoint:
    """Where pgbench connects: one PostgreSQL-speaking port, user and database."""

    name: str
    port: int
    user: str
    password: str
    dbname: str

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(PGPASSWORD=self.password, PGSSLMODE="disable", PGAPPNAME="sqlproxy-bench")
        for name in ("PGSERVICE", "PGOPTIONS", "PGHOSTADDR", "PGPASSFILE"):
            env.pop(name, None)
        return env

    def args(self) -> list[str]:
        return ["-h", HOST, "-p", str(self.port), "-U", self.user]


def require_tools(*names: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for name in names:
        path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/lib/postgresql/15/bin")
        if path is None:
            raise SetupError(f"{name} not found: run `make install` (it installs the packages)")
        found[name] = path
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def tool_version(path: str) -> str:
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.splitlines()[0].strip() if out.stdout else "unknown"


# --- the bench database ---------------------------------------------------------------------


def _as_postgres(argv: list[str], pg_port: int) -> list[str]:
    """Run a client as the database superuser, the way scripts/demo.sh does."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv, "-p", str(pg_port)]
    if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], check=False).returncode == 0:
        return ["sudo", "-n", "-u", "postgres", *argv, "-p", str(pg_port)]
    return [*argv, "-h", HOST, "-p", str(pg_port), "-U", "postgres"]


def _psql(argv: list[str], sql: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [*argv, "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1"],
        input=sql,
        capture_output=True,
        text=True,
        env=env,
        check=False,
        cwd="/",
    )
    if done.returncode != 0:
        raise SetupError(f"psql failed ({' '.join(argv[:4])} ...): {done.stderr.strip()}")
    return done.stdout


def direct_endpoint(pg_port: int) -> Endpoint:
    return Endpoint("direct", pg_port, BENCH_ROLE, BENCH_ROLE_PASSWORD, BENCH_DB)


def prepare_database(psql: str, pgbench: str, pg_port: int, scale: int) -> Endpoint:
    """Create the bench role and database if missing; (re)initialize pgbench tables at
    ``scale`` unless they are already there at that scale."""
    _psql(
        [*_as_postgres([psql], pg_port), "-d", "postgres"],
        f"""
        SELECT 'CREATE ROLE {BENCH_ROLE} LOGIN PASSWORD ''{BENCH_ROLE_PASSWORD}'''
        WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{BENCH_ROLE}')\\gexec
        ALTER ROLE {BENCH_ROLE} LOGIN PASSWORD '{BENCH_ROLE_PASSWORD}';
        SELECT 'CREATE DATABASE {BENCH_DB} OWNER {BENCH_ROLE}'
        WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{BENCH_DB}')\\gexec
        \\c {BENCH_DB}
        GRANT ALL ON SCHEMA public TO {BENCH_ROLE};
        """,
    )
    direct = direct_endpoint(pg_port)
    client = [psql, *direct.args(), "-d", direct.dbname]
    have = "0"
    if _psql(client, "SELECT to_regclass('pgbench_branches') IS NOT NULL;", direct.env()) == "t\n":
        have = _psql(client, "SELECT count(*) FROM pgbench_branches;", direct.env()).strip()
    if have != str(scale):
        print(f"initializing pgbench tables at scale {scale} (once) ...", flush=True)
        done = subprocess.run(
            [pgbench, *direct.args(), "-i", "-q", "-s", str(scale), direct.dbname],
            capture_output=True,
            text=True,
            env=direct.env(),
            check=False,
        )
        if done.returncode != 0:
            raise SetupError(f"pgbench -i failed: {done.stderr.strip()[-2000:]}")
    return direct


def settle(psql: str, direct: Endpoint) -> None:
    """Before each run that writes: what pgbench does before a run unless told not to (empty
    the history table, vacuum the small tables every transaction updates), then a checkpoint,
    so that no run inherits another's dead tuples and none pays for a checkpoint that another
    run's writes brought on (a timed checkpoint starts its interval again from this one)."""
    _psql(
        [psql, *direct.args(), "-d", direct.dbname],
        "TRUNCATE pgbench_history; VACUUM ANALYZE pgbench_branches, pgbench_tellers;",
        direct.env(),
    )
    _psql([*_as_postgres([psql], direct.port), "-d", direct.dbname], "CHECKPOINT;")


def server_connection_budget(psql: str, direct: Endpoint) -> tuple[int, int]:
    """(max_connections, connections in use now) of the upstream server."""
    out = _psql(
        [psql, *direct.args(), "-d", direct.dbname],
        "SELECT current_setting('max_connections')::int, count(*) FROM pg_stat_activity;",
        direct.env(),
    ).strip()
    limit, used = out.split("|")
    return int(limit), int(used)


# --- proxies --------------------------------------------------------------------------------


class Services:
    """Owns a temporary directory and the proxies started in it."""

    def __init__(self, psql: str) -> None:
        self.psql = psql
        self.dir = Path(tempfile.mkdtemp(prefix="sqlproxy-bench-"))
        self._procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.worker_pid: int | None = None
        """The worker process (the supervisor with ``--workers`` > 1)."""
        if os.geteuid() == 0:
            # PgBouncer refuses to run as root; it drops to postgres and must read its files.
            entry = pwd.getpwnam("postgres")
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)

    def _start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> int:
        log = open(self.dir / f"{name}.log", "wb")  # noqa: SIM115 - the child keeps it
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        log.close()
        self._procs.append((name, proc))
        return proc.pid

    def cpu_seconds(self, name: str) -> tuple[float, float]:
        """(user, system) CPU seconds used so far by the processes of ``name`` (its whole
        process group: with ``--workers N`` the supervisor and every worker process)."""
        groups = {proc.pid for proc_name, proc in self._procs if proc_name == name}
        user = system = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue  # exited meanwhile
            # After "pid (comm)": state ppid pgrp session tty tpgid flags minflt cminflt
            # majflt cmajflt utime stime ...
            if int(fields[2]) in groups:
                user += int(fields[11])
                system += int(fields[12])
        hz = os.sysconf("SC_CLK_TCK")
        return user / hz, system / hz

    def log_tail(self, name: str, lines: int = 20) -> str:
        path = self.dir / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def _write(self, name: str, text: str) -> Path:
        path = self.dir / name
        path.write_text(text)
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            os.chown(path, entry.pw_uid, entry.pw_gid)
        path.chmod(0o600)
        return path

    def start_pgbouncer(self, pgbouncer: str, pg_port: int, pool_size: int) -> int:
        port = free_port()
        server = (
            f"host={HOST} port={pg_port} dbname={BENCH_DB} "
            f"user={BENCH_ROLE} password={BENCH_ROLE_PASSWORD}"
        )
        ini = self._write(
            "pgbouncer.ini",
            f"""\
[databases]
{SESSION_DB} = {server} pool_mode=session pool_size={pool_size}
{TRANSACTION_DB} = {server} pool_mode=transaction pool_size={pool_size}

[pgbouncer]
listen_addr = {HOST}
listen_port = {port}
unix_socket_dir =
auth_type = scram-sha-256
auth_file = {self.dir / "userlist.txt"}
pidfile =
max_client_conn = 1000
default_pool_size = {pool_size}
server_tls_sslmode = disable
client_tls_sslmode = disable
log_connections = 0
log_disconnections = 0
log_pooler_errors = 1
stats_period = 3600
""",
        )
        self._write("userlist.txt", f'"{CLIENT_USER}" "{CLIENT_PASSWORD}"\n')
        as_user = ["-u", "postgres"] if os.geteuid() == 0 else []
        self._start("pgbouncer", [pgbouncer, *as_user, str(ini)])
        return port

    def start_worker(
        self, pool_size: int, pg_port: int, processes: int, guard: bool, name: str = "worker"
    ) -> int:
        """A worker on a free port, configured by ``worker_config``. ``name`` tells two
        workers apart (their logs and CPU time)."""
        port = free_port()
        config = self._write(f"{name}.toml", worker_config(port, pool_size, pg_port, guard))
        env = dict(os.environ)
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        argv = [sys.executable, "-m", "proxyworker", "--config", str(config)]
        argv += ["--workers", str(processes)]
        env["PYTHONPATH"] = str(ROOT)
        pid = self._start(name, argv, env)
        if name == "worker":
            self.worker_pid = pid
        return port

    def start_floor(self, pg_port: int) -> int:
        """``floor.py``: a relay that only forwards bytes (what Python and uvloop cost)."""
        port = free_port()
        argv = [sys.executable, str(ROOT / "bench" / "floor.py"), str(port), str(pg_port)]
        self._start("floor", argv)
        return port

    def wait_ready(self, name: str, endpoint: Endpoint, timeout: float = 20.0) -> None:
        """Until a query goes through ``endpoint`` (the proxy accepts and reaches the server)."""
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            for proc_name, proc in self._procs:
                if proc_name == name and proc.poll() is not None:
                    raise SetupError(
                        f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}"
                    )
            done = subprocess.run(
                [self.psql, *endpoint.args(), "-d", endpoint.dbname, "-X", "-Atc", "SELECT 1"],
                capture_output=True,
                text=True,
                env=endpoint.env(),
                check=False,
            )
            if done.returncode == 0:
                return
            last = done.stderr.strip()
            time.sleep(0.2)
        raise SetupError(
            f"{name} did not answer within {timeout:.0f}s: {last}\n{self.log_tail(name)}"
        )

    def close(self) -> None:
        """Stop every process started here (TERM, then KILL after 10 s) and remove the files."""
        for _, proc in self._procs:
            # The whole group: a supervisor's worker processes and runuser's child go too.
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for _, proc in self._procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
        self._procs.clear()
        shutil.rmtree(self.dir, ignore_errors=True)
