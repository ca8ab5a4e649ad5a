"""The worker's own CPU per pgbench transaction, without sockets: a ``ClientSession`` linked to a
server connection whose transports only count bytes, fed pgbench's requests and a recorded
answer to each. What is left out is uvloop's share (reading, writing, dispatching callbacks).

Run: ``.venv/bin/python bench/relay.py`` (``--profile`` prints a cProfile of the same loop;
``--guard`` and ``--workload`` pick one case, as ``bench/instructions.sh`` does under valgrind).
Each case is timed best of ``--repeat`` over ``--count`` transactions, with the guard off (no
policy) and on (the bench's guard-on policy: default signatures and a row limit on
pgbench_accounts, with a hand-made catalog of pgbench's tables, as ``decide.py``).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import decide

from proxyworker import metrics
from proxyworker.config.loader import loads
from proxyworker.guard.gate import Gate
from proxyworker.prepared import PreparedStatements
from proxyworker.protocol import messages as m
from proxyworker.server import Worker
from proxyworker.session import ClientSession, Phase
from proxyworker.session.state import carried_settings
from proxyworker.upstream.connection import ServerConnection

_CONFIG = """\
[listen]
host = "127.0.0.1"
port = 1

[[users]]
name = "bench"
password = "bench-secret"

[[databases]]
name = "bench"
upstream = "postgresql://bench:pw@127.0.0.1:5432/bench?sslmode=disable"
pool_mode = "{mode}"
"""
_GUARD = "\n[signatures]\nenabled = true\n\n[table_limits]\npgbench_accounts = 100\n"
_NO_GUARD = "\n[signatures]\nenabled = false\n"


class _Transport:
    """Counts what is written; never pauses, never closes."""

    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes | memoryview) -> None:
        self.written += len(data)

    def writelines(self, chunks: list[bytes | memoryview]) -> None:
        for chunk in chunks:
            self.written += len(chunk)

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...


def _session(guard: bool, mode: str) -> tuple[ClientSession, ServerConnection]:
    worker = Worker(loads(_CONFIG.format(mode=mode) + (_GUARD if guard else _NO_GUARD)))
    session = ClientSession(worker)
    session.transport = _Transport()  # type: ignore[assignment]
    session.phase = Phase.READY
    session.user = session.database = "bench"
    session.pool = pool = worker.pools["bench"]
    session.policy = policy = worker.policies["bench"]
    session._labels = metrics.database_labels("bench")
    pool.catalog.use(decide.pgbench_catalog())  # (outside an event loop: never expires)
    gate = Gate(policy, "bench", "bench", sticky=pool.limited, catalog=pool.catalog.current)
    if gate.active:
        session.gate = gate
        session._startup_path = gate.search_path  # (as the handshake sets it)
    server = ServerConnection(pool.target, session.pool_key)
    server.transport = _Transport()  # type: ignore[assignment]
    if mode == "transaction":
        # As the handshake leaves it: the server pooled, taken again by each transaction.
        session.transaction_pooling = True
        session.settings = dict(server.params)
        session._carried = carried_settings(session.settings)  # (as the handshake sets it)
        session._statements = PreparedStatements(1)
        pool.size = 1
        pool.release(server)
    else:
        session._link(server)
    return session, server


def _row(value: bytes) -> bytes:
    return m.message(m.DATA_ROW, b"\x00\x01" + m.i32(len(value)) + value)


_ROW_DESCRIPTION = m.message(
    m.ROW_DESCRIPTION,
    b"\x00\x01" + m.cstr("abalance") + m.i32(16417) + b"\x00\x03" + m.i32(23) + b"\x00\x04"
    b"\xff\xff\xff\xff\x00\x00",
)
_IDLE = m.ready_for_query(b"I")
_IN_BLOCK = m.ready_for_query(b"T")


def simple(rng: random.Random) -> list[tuple[bytes, bytes]]:
    aid = rng.randint(1, 10**6)
    sql = f"SELECT abalance FROM pgbench_accounts WHERE aid = {aid};"
    answer = _ROW_DESCRIPTION + _row(b"0") + m.message(m.COMMAND_COMPLETE, b"SELECT 1\x00") + _IDLE
    return [(m.query(sql), answer)]


def extended(rng: random.Random) -> list[tuple[bytes, bytes]]:
    aid = str(rng.randint(1, 10**6)).encode()
    request = (
        m.parse("", "SELECT abalance FROM pgbench_accounts WHERE aid = $1")
        + m.message(m.BIND, b"\x00\x00\x00\x00\x00\x01" + m.i32(len(aid)) + aid + b"\x00\x00")
        + m.message(m.DESCRIBE, b"P\x00")
        + m.message(m.EXECUTE, b"\x00" + m.i32(0))
        + m.message(m.SYNC)
    )
    answer = (
        m.message(m.PARSE_COMPLETE)
        + m.message(m.BIND_COMPLETE)
        + _ROW_DESCRIPTION
        + _row(b"0")
        + m.message(m.COMMAND_COMPLETE, b"SELECT 1\x00")
        + _IDLE
    )
    return [(request, answer)]


def tpcb(rng: random.Random) -> list[tuple[bytes, bytes]]:
    texts = decide.tpcb(rng)
    out = []
    for i, text in enumerate(texts):
        tag = text.split(b" ", 1)[0].rstrip(b";")
        tag = {b"INSERT": b"INSERT 0 1", b"UPDATE": b"UPDATE 1", b"SELECT": b"SELECT 1"}.get(
            tag, b"COMMIT" if tag == b"END" else tag
        )
        rows = _ROW_DESCRIPTION + _row(b"0") if text.startswith(b"SELECT") else b""
        status = _IDLE if i == len(texts) - 1 else _IN_BLOCK
        complete = m.message(m.COMMAND_COMPLETE, tag + b"\x00")
        out.append((m.query(text.decode()), rows + complete + status))
    return out


WORKLOADS: dict[str, Callable[[random.Random], list[tuple[bytes, bytes]]]] = {
    "select-only, simple": simple,
    "select-only, extended": extended,
    "TPC-B, simple": tpcb,
}


def run(guard: bool, mode: str, transactions: list[list[tuple[bytes, bytes]]]) -> float:
    session, server = _session(guard, mode)
    client_data, server_data = session.data_received, session.server_data
    for request, answer in transactions[0]:
        client_data(request)
        server_data(server, answer)
    start = time.perf_counter()
    for transaction in transactions:
        for request, answer in transaction:
            client_data(request)
            server_data(server, answer)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=20_000, help="transactions per timing")
    parser.add_argument("--repeat", type=int, default=5, help="timings; the best is shown")
    parser.add_argument("--profile", choices=("off", "on"), help="cProfile with the guard so")
    parser.add_argument("--guard", choices=("off", "on"), help="time only with the guard so")
    parser.add_argument("--workload", help="only the workloads whose name contains this")
    parser.add_argument("--pool-mode", choices=("session", "transaction"), default="session")
    parser.add_argument(
        "--build-only",
        action="store_true",
        help="make the requests and answers, relay nothing (instructions.sh subtracts this)",
    )
    args = parser.parse_args()
    rng = random.Random(1)
    print(f"{'workload':24} {'guard off µs/tx':>16} {'guard on µs/tx':>15}")
    for name, make in WORKLOADS.items():
        if args.workload and args.workload not in name:
            continue
        transactions = [make(rng) for _ in range(args.count)]
        if args.build_only:
            continue
        if args.profile:
            profiler = cProfile.Profile()
            profiler.runcall(run, args.profile == "on", args.pool_mode, transactions)
            print(name)
            pstats.Stats(profiler).sort_stats("tottime").print_stats(14)
            continue
        times = {}
        for guard in ("off", "on"):
            if args.guard in (None, guard):
                best = min(
                    run(guard == "on", args.pool_mode, transactions) for _ in range(args.repeat)
                )
                times[guard] = f"{best / args.count * 1e6:.2f}"
        print(f"{name:24} {times.get('off', '-'):>16} {times.get('on', '-'):>15}")


if __name__ == "__main__":
    main()
