"""Real worker processes for integration tests: write a TOML (or point the worker at a
control plane's Redis), start ``python -m proxyworker``, wait for its port, stop it, show its
log on failure."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.net import free_port, wait_for_port
from tests.support.pgcluster import wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

APP_USER = "app"
APP_PASSWORD = "app-secret"


@dataclass
class WorkerProcess:
    config_path: str
    port: int
    admin_port: int
    workers: int = 1
    proc: subprocess.Popen[bytes] | None = None
    log_path: str = ""
    extra_args: list[str] = field(default_factory=list)
    source: list[str] | None = None
    """What the worker enforces; default ``--config config_path``."""
    env: dict[str, str] = field(default_factory=dict)
    """Set in the worker's environment besides the test's own."""

    def start(self) -> WorkerProcess:
        self.log_path = self.log_path or self.config_path + ".log"
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        started_at = log.tell()  # a restart appends to the same log
        source = self.source if self.source is not None else ["--config", self.config_path]
        cmd = [sys.executable, "-m", "proxyworker", *source]
        if self.workers > 1:
            cmd += ["--workers", str(self.workers)]
        self.proc = subprocess.Popen(
            cmd + self.extra_args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, **self.env, "PYTHONPATH": ROOT},
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 15
            while self.proc.poll() is None and time.monotonic() < deadline:
                try:
                    wait_for_port(self.port, timeout=0.2)
                    break
                except TimeoutError:
                    continue
            if self.proc.poll() is not None:
                raise TimeoutError
            wait_for_port(self.port)
            if self.admin_port > 0:
                wait_for_port(self.admin_port)
            # The port answers as soon as one process listens; wait for all of them.
            deadline = time.monotonic() + 15
            while self.log()[started_at:].count('"message": "listening"') < self.workers:
                if time.monotonic() > deadline:
                    raise TimeoutError
                time.sleep(0.05)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"worker did not start:\n{self.log()}") from None
        return self

    def wait_for_no_clients(self, timeout: float = 10) -> None:
        """Until the worker has no client connection: ``start``'s probes of the port were
        clients too, and a worker busy when they came may accept them together with a
        test's first connection (a test that counts clients starts after this)."""
        wait_until(
            lambda: "\nsqlproxy_client_connections 0.0\n" in self.http("/metrics")[1],
            timeout,
            interval=0.02,
        )

    def dsn(
        self, db: str = "app", user: str = APP_USER, password: str = APP_PASSWORD, **kw: str
    ) -> str:
        extra = " ".join(f"{k}={v}" for k, v in kw.items())
        return (
            f"host=127.0.0.1 port={self.port} dbname={db} user={user} password={password} "
            f"sslmode=disable {extra}"
        ).strip()

    def http(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.admin_port}{path}", timeout=10
            ) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 20) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as fh:
            return fh.read()


def write_config(text: str) -> str:
    fd, path = tempfile.mkstemp(prefix="sqlproxy-", suffix=".toml")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    return path


NO_POLICY = "[signatures]\nenabled = false\n"
"""Protocol tests run without the guard (they use pg_sleep, for one)."""


def worker_config(
    databases: str, *, port: int, admin_port: int, extra: str = "", policy: str = NO_POLICY
) -> str:
    return f"""
[listen]
host = "127.0.0.1"
port = {port}
{extra}

[admin]
port = {admin_port}

[logging]
format = "json"
level = "info"

[[users]]
name = "{APP_USER}"
password = "{APP_PASSWORD}"

{databases}

{policy}
"""


def launch(
    databases: str,
    *,
    extra: str = "",
    workers: int = 1,
    admin: bool = True,
    policy: str = NO_POLICY,
) -> WorkerProcess:
    """Start a worker; ``extra`` goes into [listen], ``policy`` is appended at top level."""
    port, admin_port = free_port(), (free_port() if admin else -1)
    text = worker_config(databases, port=port, admin_port=admin_port, extra=extra, policy=policy)
    path = write_config(text)
    return WorkerProcess(path, port, admin_port, workers).start()


def launch_fleet(
    redis_url: str,
    state_dir: str,
    *,
    worker_id: str = "w1",
    workers: int = 1,
    port: int | None = None,
    admin_port: int | None = None,
    url_from: str = "argument",
) -> WorkerProcess:
    """A worker fed by the control plane, given the Redis URL as ``url_from`` says:
    ``argument`` (``--control-plane``), ``file`` (``--control-plane-file``) or ``env``
    (``--control-plane-env``); its log is in ``state_dir``. Give the ports of a previous run
    to restart it in place."""
    port = port or free_port()
    admin_port = admin_port or free_port()
    os.makedirs(state_dir, exist_ok=True)
    env = {}
    if url_from == "file":
        path = os.path.join(state_dir, "redis-url")
        Path(path).write_text(redis_url + "\n")
        source = ["--control-plane-file", path]
    elif url_from == "env":
        env["SQLPROXY_TEST_CONTROL_PLANE"] = redis_url
        source = ["--control-plane-env", "SQLPROXY_TEST_CONTROL_PLANE"]
    else:
        assert url_from == "argument", url_from
        source = ["--control-plane", redis_url]
    source += [
        "--worker-id", worker_id, "--state-dir", state_dir,
        "--listen", f"127.0.0.1:{port}", "--admin-port", str(admin_port),
    ]  # fmt: skip
    proc = WorkerProcess(
        os.path.join(state_dir, "worker"), port, admin_port, workers, source=source, env=env
    )
    return proc.start()


def exit_of_sigterm_on_listening(source: list[str], log_path: str) -> int:
    """Start a worker on ``source`` (its arguments), send SIGTERM the moment it logs that it
    listens, and return its exit status (15 s at most each way)."""
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "proxyworker", *source], cwd=ROOT, stdout=out,
            stderr=subprocess.STDOUT, env={**os.environ, "PYTHONPATH": ROOT},
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 15
        log = Path(log_path)
        while b'"listening"' not in log.read_bytes():
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"worker did not start:\n{log.read_text()}")
            time.sleep(0.002)
        proc.send_signal(signal.SIGTERM)
        return proc.wait(15)
    finally:
        proc.kill()
        proc.wait()
