"""`make run`: the whole stack on one machine, until Ctrl-C.

Starts, in order: the control plane's migrations and demo tenant (``manage.py demo``), the
control plane under daphne, the audit/heartbeat ingest, a Celery worker and beat, and one proxy
worker fed by the control plane over Redis. Prints where to go, then waits; Ctrl-C (or any of
them dying) stops everything it started, newest first. Standard library only: it runs before
anything else is known to work.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = os.path.join(ROOT, ".run")
PY = os.path.join(ROOT, ".venv", "bin", "python")
BIN = os.path.join(ROOT, ".venv", "bin")

HTTP_PORT = int(os.environ.get("SQLPROXY_HTTP_PORT", "8000"))
PROXY_PORT = int(os.environ.get("SQLPROXY_PORT", "6432"))
ADMIN_PORT = int(os.environ.get("SQLPROXY_ADMIN_PORT", "9187"))
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log: str


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings.runtime")
    env.setdefault(
        "DATABASE_URL", "postgresql://sqlproxy_cp:sqlproxy-cp-pw@127.0.0.1:5432/sqlproxy_cp"
    )
    env.setdefault("REDIS_URL", REDIS_URL)
    env.setdefault("SQLPROXY_DEBUG", "1")
    env.setdefault("SQLPROXY_FLEET_LISTEN_HOST", "127.0.0.1")
    env.setdefault("SQLPROXY_FLEET_LISTEN_PORT", str(PROXY_PORT))
    env.setdefault("SQLPROXY_FLEET_ADMIN_PORT", str(ADMIN_PORT))
    env.setdefault("SQLPROXY_STREAM_WORKER", f"127.0.0.1:{PROXY_PORT}")
    # Per user, not per checkout: every checkout's `make run` shares the sqlproxy_cp database,
    # whose upstream credentials only the key that encrypted them can read.
    state = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    os.makedirs(os.path.join(state, "sqlproxy"), mode=0o700, exist_ok=True)
    secrets_file = os.path.join(state, "sqlproxy", "secrets.env")
    earlier = os.path.join(RUN, "secrets.env")  # where checkouts kept them before
    if not os.path.exists(secrets_file) and os.path.exists(earlier):
        shutil.copyfile(earlier, secrets_file)
        os.chmod(secrets_file, 0o600)
    if not os.path.exists(secrets_file):  # stable across runs: encrypted credentials survive
        with open(os.open(secrets_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as fh:
            # A Fernet key: 32 random bytes, url-safe base64.
            fh.write(f"SQLPROXY_SECRET_KEY={base64.urlsafe_b64encode(os.urandom(32)).decode()}\n")
            fh.write(f"DJANGO_SECRET_KEY={os.urandom(32).hex()}\n")
            fh.write(f"SQLPROXY_DEMO_ADMIN_PASSWORD={base64.b32encode(os.urandom(10)).decode()}\n")
    with open(secrets_file) as fh:
        for line in fh:
            key, _, value = line.strip().partition("=")
            env.setdefault(key, value)
    env["PYTHONPATH"] = ROOT
    return env


def start(name: str, args: list[str], env: dict[str, str]) -> Child:
    log = os.path.join(RUN, f"{name}.log")
    out = open(log, "ab")  # noqa: SIM115 - the child keeps it
    proc = subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )
    return Child(name, proc, log)


def wait_for_port(port: int, child: Child, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise SystemExit(f"{child.name} exited; see {child.log}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{child.name} did not open port {port}; see {child.log}")


def stop(children: list[Child]) -> None:
    for child in reversed(children):
        if child.proc.poll() is None:
            os.killpg(child.proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    for child in reversed(children):
        try:
            child.proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(child.proc.pid, signal.SIGKILL)
            child.proc.wait()


def main() -> int:
    # A TERM or HUP (a closed terminal, a supervisor) stops the stack like Ctrl-C does.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: sys.exit(0))
    os.makedirs(RUN, exist_ok=True)
    env = environment()
    subprocess.run(["bash", "scripts/demo-db.sh"], cwd=ROOT, check=True)
    subprocess.run([PY, "manage.py", "migrate", "--no-input", "-v", "0"], cwd=ROOT, env=env,
                   check=True)  # fmt: skip
    setup = subprocess.run([PY, "manage.py", "demo"], cwd=ROOT, env=env, check=True,
                           capture_output=True, text=True)  # fmt: skip
    children: list[Child] = []
    try:
        web = start("controlplane", [os.path.join(BIN, "daphne"), "-b", "127.0.0.1", "-p",
                    str(HTTP_PORT), "controlplane.asgi:application"], env)  # fmt: skip
        children.append(web)
        children.append(start("ingest", [PY, "manage.py", "ingest"], env))
        celery = os.path.join(BIN, "celery")
        children.append(start("celery-worker", [celery, "-A", "controlplane", "worker",
                              "--loglevel", "info", "--concurrency", "2"], env))  # fmt: skip
        children.append(start("celery-beat", [celery, "-A", "controlplane", "beat",
                              "--loglevel", "info", "--schedule",
                              os.path.join(RUN, "celerybeat-schedule")], env))  # fmt: skip
        worker = start("proxyworker", [PY, "-m", "proxyworker", "--control-plane", REDIS_URL,
                       "--worker-id", "local-1", "--state-dir", os.path.join(RUN, "worker"),
                       "--listen", f"127.0.0.1:{PROXY_PORT}", "--admin-port",
                       str(ADMIN_PORT)], env)  # fmt: skip
        children.append(worker)
        wait_for_port(HTTP_PORT, web)
        wait_for_port(PROXY_PORT, worker)
        print(setup.stdout.replace("{HTTP}", f"http://127.0.0.1:{HTTP_PORT}")
              .replace("{PROXY_PORT}", str(PROXY_PORT)))  # fmt: skip
        print(f"Logs in {os.path.relpath(RUN, ROOT)}/. Ctrl-C stops everything.", flush=True)
        while all(c.proc.poll() is None for c in children):
            time.sleep(0.5)
        dead = next(c for c in children if c.proc.poll() is not None)
        print(f"{dead.name} exited ({dead.proc.returncode}); see {dead.log}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        # A second Ctrl-C or TERM (make and timeout signal the whole process group) must not
        # cut the stopping short and leave children running.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        print("stopping...", file=sys.stderr)
        stop(children)


if __name__ == "__main__":
    sys.exit(main())
