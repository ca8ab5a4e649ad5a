"""Command line: ``python -m proxyworker --config sqlproxy.toml [--workers N] [--check]``.

One worker process serves by default. With ``--workers N`` this process becomes a supervisor:
it starts N worker processes sharing the port (SO_REUSEPORT), restarts any that crash,
forwards SIGHUP (reload) and SIGTERM (drain) to them, and serves the merged metrics.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile

from proxyworker import __version__, admin, logs, metrics
from proxyworker.config import ConfigError, WorkerConfig, load_file

log = logging.getLogger("proxyworker")


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m proxyworker", description=__doc__)
    parser.add_argument("--config", required=True, help="worker configuration (TOML)")
    parser.add_argument("--workers", type=int, default=1, help="processes sharing the port")
    parser.add_argument("--check", action="store_true", help="validate the config and exit")
    parser.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--version", action="version", version=f"sqlproxy {__version__}")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
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
        return int(uvloop.run(_supervise(args.config, config, args.workers)))
    index = args.worker_index or 0
    uvloop.run(_serve(args.config, config, index, args.workers, args.worker_index is None))
    return 0


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
    await worker.start()
    if admin_on and config.admin.port >= 0:
        await admin.serve(config.admin.host, config.admin.port, worker.check_ready)
    stop = asyncio.Event()

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
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    log.info("draining", extra={"sessions": len(worker.sessions)})
    await worker.drain()


async def _supervise(path: str, config: WorkerConfig, workers: int) -> int:
    from prometheus_client.multiprocess import mark_process_dead

    from proxyworker.server import Worker

    own_dir = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        own_dir = tempfile.mkdtemp(prefix="sqlproxy-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = own_dir
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    children: dict[int, asyncio.subprocess.Process] = {}

    async def run_child(index: int) -> None:
        while not stopping.is_set():
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "proxyworker", "--config", path,
                "--workers", str(workers), "--worker-index", str(index),
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
            children[index] = proc
            code = await proc.wait()
            mark_process_dead(proc.pid)  # type: ignore[no-untyped-call]
            if not stopping.is_set():
                log.error("worker %d exited with %s; restarting", index, code)
                await asyncio.sleep(1)

    def forward(sig: signal.Signals) -> None:
        if sig is signal.SIGHUP:
            try:
                load_file(path)
            except ConfigError as exc:
                log.error("reload refused, keeping the running configuration: %s", exc)
                return
        else:
            stopping.set()
        for proc in children.values():
            if proc.returncode is None:
                proc.send_signal(sig)

    for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, forward, sig if sig is not signal.SIGINT else signal.SIGTERM)
    if config.admin.port >= 0:
        probe = Worker(config)
        await admin.serve(config.admin.host, config.admin.port, probe.check_ready)
    await asyncio.gather(*(run_child(i) for i in range(workers)))
    if own_dir is not None:
        shutil.rmtree(own_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
