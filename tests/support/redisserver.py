"""A private redis-server for the test suite: its own port and directory, no persistence.

Tests can stop and start it again on the same port to simulate an outage: ``stop()`` loses
the data (as a Redis without persistence would), ``stop(save=True)`` keeps it for the next
``start()``. The machine's own Redis is never touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field

import redis

from tests.support.net import free_port, wait_for_port


@dataclass
class RedisServer:
    port: int
    dir: str
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def dump(self) -> str:
        return os.path.join(self.dir, "dump.rdb")

    def start(self) -> None:
        """Start it (nothing to do when it runs)."""
        if self.process is not None and self.process.poll() is None:
            return
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not found: run `make install`")
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.dir,
                "--daemonize",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)
        deadline = time.monotonic() + 10
        while True:
            try:
                redis.Redis.from_url(self.url).ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self, *, save: bool = False) -> None:
        if self.process is not None and save:
            # One command: a write acknowledged between a SAVE and the SIGTERM below would be
            # lost (with no save points, a SIGTERM'd Redis does not save).
            with self.client() as client:
                client.shutdown(save=True)
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
        if not save and os.path.exists(self.dump):
            os.remove(self.dump)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_connect_timeout=1, socket_timeout=5)

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def start_redis() -> RedisServer:
    server = RedisServer(port=free_port(), dir=tempfile.mkdtemp(prefix="sqlproxy-redis-"))
    server.start()
    return server
