"""Command line.

    python -m proxyworker --config sqlproxy.toml [--workers N] [--check]
    python -m proxyworker --control-plane REDIS_URL --worker-id ID [--state-dir DIR]
                          [--listen HOST:PORT] [--admin-host HOST] [--admin-port N]
                          [--workers N]
    python -m proxyworker --control-plane-file PATH --worker-id ID ...
    python -m proxyworker --control-plane-env VARIABLE --worker-id ID ...

Standalone (``--config``), the worker enforces a TOML file and SIGHUP reloads it. Fed by the
control plane (``--control-plane``), it enforces the newest snapshot published in Redis, keeps
the last good one in the state directory, and sends audit events and heartbeats up
(``proxyworker/fleet.py``); SIGHUP re-reads the snapshot. ``--control-plane-file`` reads the
Redis URL from a file (a mounted secret) and ``--control-plane-env`` from an environment
variable, so its password is not in the process list (command lines are readable by every
user of the host; a process's environment only by its owner).

One worker process serves by default. With ``--workers N`` this process becomes a supervisor:
it starts N worker processes sharing the port (SO_REUSEPORT), restarts any that crash,
forwards SIGHUP (reload) and SIGTERM (drain) to them, and serves the merged metrics. Fed by the
control plane, each process follows it on its own, as worker ``ID-<index>``, and process 0
replays the audit spools that worker ids no longer running left in the state directory.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable

from proxyworker import __version__, admin, logs, metrics
from proxyworker.config import ConfigError, WorkerConfig, load_file

log = logging.getLogger("proxyworker")

EXIT_STATE_DIR_IN_USE = 3
"""Exit status of a fleet worker process whose audit spool another live process holds: two
workers were given one state directory and worker id. Restarting it cannot help, so the
supervisor stops the other processes and exits with this status too."""


def _address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m proxyworker",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="worker configuration (TOML): standalone")
    source.add_argument(
        "--control-plane", metavar="REDIS_URL", help="follow the control plane through this Redis"
    )
    source.add_argument(
        "--control-plane-file",
        metavar="PATH",
        help="as --control-plane, with the URL read from this file (it may hold a password)",
    )
    source.add_argument(
        "--control-plane-env",
        metavar="VARIABLE",
        help="as --control-plane, with the URL read from this environment variable",
    )
    fleet = parser.add_argument_group("with --control-plane")
    fleet.add_argument("--worker-id", help="this worker's name in the fleet (required)")
    fleet.add_argument(
        "--state-dir",
        default="sqlproxy-state",
        help="last good snapshot and audit spool (default: ./sqlproxy-state)",
    )
    fleet.add_argument(
        "--listen", metavar="HOST:PORT", type=_address, help="instead of the snapshot's [listen]"
    )
    fleet.add_argument("--admin-port", type=int, help="instead of the snapshot's [admin] port")
    fleet.add_argument(
        "--admin-host", metavar="HOST", help="instead of the snapshot's [admin] host"
    )
    fleet.add_argument(
        "--spool-max-mb",
        type=int,
        default=256,
        help="audit spool size cap while Redis is unreachable (default: 256)",
    )
    parser.add_argument("--workers", type=int, default=1, help="processes sharing the port")
    parser.add_argument("--check", action="store_true", help="validate the config and exit")
    parser.add_argument(
        "--dry-run", action="store_true", help="commit nothing: every write runs, then rolls back"
    )
    parser.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--version", action="version", version=f"sqlproxy {__version__}")
    return parser.parse_args(argv)


def _read_url(path: str) -> str:
    """The one line of a file holding a URL (as a secret is mounted: maybe a final newline)."""
    try:
        with open(path, encoding="utf-8") as fh:
            url = fh.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path!r}: {exc}") from None
    if not url or "\n" in url:
        raise ValueError(f"{path!r} must hold one URL, on one line")
    return url


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    if args.dry_run:
        os.environ["SQLPROXY_DRY_RUN"] = "1"  # read by every worker process it starts
    if args.control_plane_file is not None:
        try:
            args.control_plane = _read_url(args.control_plane_file)
        except ValueError as exc:
            print(f"error: --control-plane-file: {exc}", file=sys.stderr)
            return 2
    if args.control_plane_env is not None:
        args.control_plane = os.environ.get(args.control_plane_env, "").strip()
        if not args.control_plane:
            print(
                f"error: --control-plane-env: {args.control_plane_env} is not set",
                file=sys.stderr,
            )
            return 2
    if args.control_plane is not None:
        return _main_fleet(args)
    pinning = (args.worker_id, args.listen, args.admin_port, args.admin_host)
    if any(value is not None for value in pinning):
        print(
            "error: --worker-id, --listen, --admin-port and --admin-host go with --control-plane",
            file=sys.stderr,
        )
        return 2
    try:
        config = load_file(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        print(
            f"{args.config}: ok ({len(config.databases)} database(s), {len(config.users)} user(s))"
        )
        return 0
    if args.workers < 1:
        print("error: --workers must be at least 1", file=sys.stderr)
        return 2
    if args.workers > 1 and config.listen.port == 0:
        print("error: --workers needs a fixed listen.port", file=sys.stderr)
        return 2
    logs.setup(config.logging.level, config.logging.format)
    _raise_file_limit()
    import uvloop

    if args.workers > 1 and args.worker_index is None:
        path = args.config

        def reload_ok() -> bool:
            try:
                load_file(path)
            except ConfigError as exc:
                log.error("reload refused, keeping the running configuration: %s", exc)
                return False
            return True

        async def start_admin() -> None:
            from proxyworker.server import Worker

            if config.admin.port >= 0:
                probe = Worker(config)
                await admin.serve(config.admin.host, config.admin.port, probe.check_ready)

        child = ["--config", path]
        return int(uvloop.run(_supervise(child, args.workers, start_admin, reload_ok)))
    index = args.worker_index or 0
    uvloop.run(_serve(args.config, config, index, args.workers, args.worker_index is None))
    return 0


def _main_fleet(args: argparse.Namespace) -> int:
    if args.check:
        print("error: --check needs --config", file=sys.stderr)
        return 2
    if not args.worker_id:
        print("error: --control-plane needs --worker-id", file=sys.stderr)
        return 2
    if args.workers < 1 or args.spool_max_mb < 1:
        print("error: --workers and --spool-max-mb must be at least 1", file=sys.stderr)
        return 2
    if args.workers > 1 and args.listen is not None and args.listen[1] == 0:
        print("error: --workers needs a fixed listen port", file=sys.stderr)
        return 2
    logs.setup("info", "json")
    _raise_file_limit()
    import uvloop

    if args.workers > 1 and args.worker_index is None:
        # (The URL itself only on the command line it came on: a file or the environment,
        # which the processes inherit, keeps it out of ps.)
        if args.control_plane_file is not None:
            child = ["--control-plane-file", args.control_plane_file]
        elif args.control_plane_env is not None:
            child = ["--control-plane-env", args.control_plane_env]
        else:
            child = ["--control-plane", args.control_plane]
        child += ["--worker-id", args.worker_id]
        child += ["--state-dir", args.state_dir, "--spool-max-mb", str(args.spool_max_mb)]
        if args.listen is not None:
            child += ["--listen", f"[{args.listen[0]}]:{args.listen[1]}"]

        async def start_admin() -> None:
            await _fleet_probe(args)

        return int(uvloop.run(_supervise(child, args.workers, start_admin, lambda: True)))
    index = args.worker_index or 0
    ids = _process_ids(args.worker_id, args.workers, args.worker_index is not None)
    return int(uvloop.run(_serve_fleet(args, ids, index, args.workers, args.worker_index is None)))


def _process_ids(worker_id: str, workers: int, supervised: bool) -> list[str]:
    """The worker ids of a run's processes, by index: ``ID`` for a process on its own,
    ``ID-0`` … ``ID-(N-1)`` for the N processes of a supervisor."""
    if not supervised:
        return [worker_id]
    return [f"{worker_id}-{i}" for i in range(workers)]


def _raise_file_limit() -> None:
    """Each client needs two descriptors (its own and a server's): use all the OS allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d: %s", soft, exc)


async def _serve(path: str, config: WorkerConfig, index: int, workers: int, admin_on: bool) -> None:
    from proxyworker.server import Worker

    loop = asyncio.get_running_loop()
    worker = Worker(config, index, workers)
    # Before listening: a SIGTERM that comes as soon as the port is open drains as any other.
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await worker.start()
    if admin_on and config.admin.port >= 0:
        await admin.serve(config.admin.host, config.admin.port, worker.check_ready)

    def reload() -> None:
        try:
            new = load_file(path)
        except ConfigError as exc:
            metrics.CONFIG_RELOADS.labels("failed").inc()
            log.error("reload failed, keeping the running configuration: %s", exc)
            return
        if (new.listen.host, new.listen.port) != (config.listen.host, config.listen.port):
            log.warning("listen address changes need a restart; keeping the current one")
        worker.apply(new)
        metrics.CONFIG_RELOADS.labels("ok").inc()
        log.info("configuration reloaded", extra={"databases": len(new.databases)})

    loop.add_signal_handler(signal.SIGHUP, reload)
    await stop.wait()
    log.info("draining", extra={"sessions": len(worker.sessions)})
    await worker.drain()


async def _serve_fleet(
    args: argparse.Namespace, ids: list[str], index: int, workers: int, admin_on: bool
) -> int:
    """Serve as process ``index`` of ``ids`` (every process's worker id); the exit status."""
    from proxyworker import fleet
    from proxyworker.audit.spool import Spool, SpoolBusy
    from proxyworker.audit.stream import AuditStream, replay_orphans, spool_path
    from proxyworker.server import Worker
    from proxyworker.tasks import spawn

    loop = asyncio.get_running_loop()
    worker_id = ids[index]
    os.makedirs(args.state_dir, exist_ok=True)
    try:
        spool = Spool(spool_path(args.state_dir, worker_id), args.spool_max_mb << 20)
    except SpoolBusy as exc:
        log.error(
            "another live process runs as this worker id with this state directory (its audit "
            "spool is locked): give each worker its own state directory",
            extra={"worker_id": worker_id, "spool": exc.filename},
        )
        return EXIT_STATE_DIR_IN_USE
    log.info(
        "following the control plane",
        extra={"redis": fleet.redacted(args.control_plane), "worker_id": worker_id},
    )
    client = fleet.connect(args.control_plane)
    store = fleet.SnapshotFile(args.state_dir)
    candidates = await fleet.initial_snapshots(client, store)
    first = candidates[0][0].config if candidates else WorkerConfig()
    pinned = fleet.pin(first, args.listen, args.admin_port, args.admin_host)
    logs.setup(first.logging.level, first.logging.format)
    stream = AuditStream(client, spool)
    # Built with nothing to enforce; the follower swaps the snapshot in, or refuses clients.
    empty = fleet.effective(WorkerConfig(), pinned, warn=False)
    worker = Worker(empty, index, workers, audit_writer=stream.write)
    worker.id = worker_id
    worker.cancel_elsewhere = functools.partial(fleet.cancel_elsewhere, client)
    follower = fleet.ConfigFollower(worker, client, store, pinned, args.listen is not None)
    # Before listening: a SIGTERM that comes as soon as the port is open drains as any other.
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGHUP, follower.poke)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    follower.start_with(candidates)
    await worker.start()
    if admin_on and pinned.admin[1] >= 0:
        await admin.serve(pinned.admin[0], pinned.admin[1], worker.check_ready)
    stream.start()
    following = spawn(follower.run(), name="config follower")
    beating = spawn(fleet.HeartbeatSender(worker, client, follower).run(), name="heartbeats")
    tasks = [following, beating]
    if index == 0:  # one process adopts the spools of worker ids that no longer run
        tasks.append(spawn(replay_orphans(client, args.state_dir, ids), name="orphan spools"))
    await stop.wait()
    log.info("draining", extra={"sessions": len(worker.sessions)})
    await worker.drain()
    await stream.flush(5.0)
    spool.close()
    follower.stop()
    for task in tasks:
        task.cancel()
    _, pending = await asyncio.wait(tasks, timeout=5.0)
    if pending:
        log.warning("stopping without waiting for %s", ", ".join(t.get_name() for t in pending))
    await client.aclose()
    return 0


async def _fleet_probe(args: argparse.Namespace) -> None:
    """The supervisor's /readyz: a worker that never listens follows the control plane too."""
    from proxyworker import fleet
    from proxyworker.server import Worker
    from proxyworker.tasks import spawn

    client = fleet.connect(args.control_plane)
    candidates = await fleet.initial_snapshots(client, fleet.SnapshotFile(args.state_dir))
    first = candidates[0][0].config if candidates else WorkerConfig()
    pinned = fleet.pin(first, args.listen, args.admin_port, args.admin_host)
    if pinned.admin[1] < 0:
        await client.aclose()
        return
    probe = Worker(fleet.effective(WorkerConfig(), pinned, warn=False))
    follower = fleet.ConfigFollower(probe, client, None, pinned, listen_overridden=True)
    follower.start_with(candidates)
    spawn(follower.run(), name="config follower")
    await admin.serve(pinned.admin[0], pinned.admin[1], probe.check_ready)


async def _supervise(
    child_args: list[str],
    workers: int,
    start_admin: Callable[[], Awaitable[None]],
    reload_ok: Callable[[], bool],
) -> int:
    from prometheus_client.multiprocess import mark_process_dead

    own_dir = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        own_dir = tempfile.mkdtemp(prefix="sqlproxy-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = own_dir
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    children: dict[int, asyncio.subprocess.Process] = {}
    status = 0

    async def run_child(index: int) -> None:
        nonlocal status
        while not stopping.is_set():
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "proxyworker", *child_args,
                "--workers", str(workers), "--worker-index", str(index),
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
            children[index] = proc
            if stopping.is_set():  # told to stop while it was being started
                proc.terminate()
            code = await proc.wait()
            mark_process_dead(proc.pid)  # type: ignore[no-untyped-call]
            if code == EXIT_STATE_DIR_IN_USE:
                status = code
                if not stopping.is_set():
                    log.error("worker %d cannot run (state directory in use); stopping", index)
                    forward(signal.SIGTERM)
            elif not stopping.is_set():
                log.error("worker %d exited with %s; restarting", index, code)
                await asyncio.sleep(1)

    def forward(sig: signal.Signals) -> None:
        if sig is signal.SIGHUP:
            if not reload_ok():
                return
        else:
            stopping.set()
        for proc in children.values():
            if proc.returncode is None:
                proc.send_signal(sig)

    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, forward, sig if sig is not signal.SIGINT else signal.SIGTERM)
    await start_admin()
    await asyncio.gather(*(run_child(i) for i in range(workers)))
    if own_dir is not None:
        shutil.rmtree(own_dir, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
