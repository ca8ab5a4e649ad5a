"""The control plane as real processes for end-to-end tests: daphne serving
``controlplane.asgi`` and ``manage.py ingest``, both with the production settings module
(``controlplane.settings.runtime``) pointed at the test database and the suite's private Redis
(so the channel layer is channels-redis, as in production). Logs go to files under the
test's directory and are shown when a process does not come up."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from tests.support.net import free_port, wait_for_port
from tests.support.worker import ROOT


def database_url(settings_dict: dict[str, Any]) -> str:
    auth = quote(settings_dict["USER"] or "postgres", safe="")
    if settings_dict.get("PASSWORD"):
        auth += ":" + quote(settings_dict["PASSWORD"], safe="")
    return (
        f"postgresql://{auth}@{settings_dict['HOST']}:{settings_dict['PORT']}/"
        f"{quote(settings_dict['NAME'], safe='')}"
    )


@dataclass
class ControlPlane:
    directory: str
    env: dict[str, str]
    port: int = 0
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/api/v1/stream"

    def _spawn(self, name: str, cmd: list[str]) -> subprocess.Popen[bytes]:
        log = open(os.path.join(self.directory, f"{name}.log"), "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env}
        )
        self.procs[name] = proc
        return proc

    def start(self) -> ControlPlane:
        self.port = free_port()
        self._spawn(
            "daphne",
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port),
             "controlplane.asgi:application"],
        )  # fmt: skip
        self._spawn("ingest", [sys.executable, "manage.py", "ingest", "--consumer", "e2e"])
        try:
            wait_for_port(self.port, timeout=30)
            deadline = time.monotonic() + 30
            while "ingesting as consumer" not in self.log("ingest"):
                if time.monotonic() > deadline or self.procs["ingest"].poll() is not None:
                    raise TimeoutError
                time.sleep(0.05)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"control plane did not start:\n{self.logs()}") from None
        return self

    def log(self, name: str) -> str:
        path = os.path.join(self.directory, f"{name}.log")
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()

    def logs(self) -> str:
        return "\n".join(f"--- {name} ---\n{self.log(name)[-5000:]}" for name in self.procs)

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def start_control_plane(
    directory: str,
    *,
    database: dict[str, Any],
    redis_url: str,
    secret_key: str,
    fernet_key: str,
    worker: str = "127.0.0.1:9",
) -> ControlPlane:
    env = {
        "DJANGO_SETTINGS_MODULE": "controlplane.settings.runtime",
        "DATABASE_URL": database_url(database),
        "REDIS_URL": redis_url,
        "DJANGO_SECRET_KEY": secret_key,
        "SQLPROXY_SECRET_KEY": fernet_key,
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost",
        "SQLPROXY_STREAM_WORKER": worker,
        "SQLPROXY_STREAM_WORKER_SSLMODE": "disable",
        "SQLPROXY_DEBUG": "0",
        "PYTHONPATH": ROOT,
    }
    os.makedirs(directory, exist_ok=True)
    return ControlPlane(directory, env).start()
