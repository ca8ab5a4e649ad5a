"""The worker process: listening socket, sessions, pools, cancel routing, reload and drain.

This module and the ``session`` package are the only places that own sockets. With
``--workers N`` several processes bind the same port (SO_REUSEPORT); each hands out
BackendKeyData whose pid carries its worker index, so a CancelRequest that the kernel gives to
the wrong process is passed on to the right one over a local (abstract Unix) socket. A worker
fed by the control plane hands a key no process of its own holds to the rest of the fleet
(``cancel_elsewhere``, through Redis), so a cancel that a load balancer sends to another
replica still reaches the right session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Final

import msgspec

from proxyworker import COMPILED, clocks, metrics, sockets
from proxyworker.audit.sink import AuditSink, Writer, file_writer
from proxyworker.config.schema import Database, WorkerConfig
from proxyworker.policy.engine import Policy
from proxyworker.protocol import messages as m
from proxyworker.protocol.scram import ScramVerifier
from proxyworker.protocol.startup import parse_startup
from proxyworker.session import ClientSession
from proxyworker.tasks import spawn
from proxyworker.upstream.connection import ServerConnection, send_cancel
from proxyworker.upstream.pool import Pool

log = logging.getLogger(__name__)

_PID_BITS = 24

HOUSEKEEPING_SECONDS: Final = 10.0
"""How often idle server connections are looked at, at most (more often for a database whose
server_idle_timeout is under twice this)."""

FLEET_CANCELS_PER_SECOND: Final = 100
"""CancelRequests a process hands to the fleet per second at most; more are dropped, so
unknown keys sent in a flood cannot flood every worker through Redis."""


def server_tls_context(config: WorkerConfig) -> ssl.SSLContext | None:
    if config.listen.tls_cert is None or config.listen.tls_key is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(config.listen.tls_cert, config.listen.tls_key)
    return ctx


def _pooling(db: Database) -> Database:
    return msgspec.structs.replace(db, policy=None)


def cancel_socket_name(port: int, index: int) -> str:
    return f"\0sqlproxy-cancel-{port}-{index}"


class Worker:
    def __init__(
        self,
        config: WorkerConfig,
        index: int = 0,
        workers: int = 1,
        audit_writer: Writer | None = None,
    ) -> None:
        """``audit_writer``: where audit events go whatever ``[audit] path`` says (the Redis
        stream of a worker fed by the control plane)."""
        self.index = index
        self.workers = workers
        self.sessions: set[ClientSession] = set()
        self.draining = False
        self.pools: dict[str, Pool] = {}
        self.users: dict[str, ScramVerifier] = {}
        self.config = config
        self.tls: ssl.SSLContext | None = None
        self._by_key: dict[tuple[int, int], ClientSession] = {}
        self.by_backend: dict[int, ClientSession] = {}
        """Session-mode clients by the backend pid of the server connection they hold."""
        self._pid_seq = 0
        self._servers: list[sockets.Listener] = []
        self._all_gone = asyncio.Event()
        self.id = f"{socket.gethostname()}-{index}"
        self.generation = 0
        """Bumped by every apply(); a session picks the new policy up between transactions."""
        self.refusal: str | None = None
        """Set while there is no configuration to enforce (a worker fed by the control plane
        before its first snapshot): every client is refused with it (57P03), fail closed."""
        self._event_seq = 0
        # Ids stay unique across restarts that reuse a pid (pid 1 in a container).
        self._instance = f"{os.getpid()}.{secrets.token_hex(3)}"
        self._audit_writer = audit_writer
        self.port = config.listen.port
        self.cancel_elsewhere: Callable[[int, int], Awaitable[bool]] | None = None
        """Hands a CancelRequest for a key no process here holds to the other workers of the
        fleet (True: handed over); None outside a fleet, where such a key is unknown."""
        self._cancel_window = 0.0
        self._cancels_handed = 0
        self.apply(config)

    # --- configuration ---------------------------------------------------------------------

    def apply(self, config: WorkerConfig) -> None:
        """Use ``config`` for new connections; sessions keep the pool they started with."""
        tls = server_tls_context(config)
        users = {u.name: u.verifier() for u in config.users}
        self.user_databases = {u.name: frozenset(u.databases) for u in config.users if u.databases}
        self.user_roles = {u.name: u.upstream_user for u in config.users if u.upstream_user}
        roles = {u.upstream_user: u.upstream_password for u in config.users if u.upstream_user}
        old = self.pools
        pools: dict[str, Pool] = {}
        refresh = config.guard.catalog_refresh
        for db in config.databases:
            previous = old.get(db.name)
            # A policy change keeps the pool (and its server connections and catalog).
            reuse = previous is not None and _pooling(previous.db) == _pooling(db)
            pools[db.name] = previous if reuse and previous is not None else Pool(db, refresh)
            pools[db.name].roles = roles
        for name, pool in old.items():
            if pools.get(name) is not pool:
                pool.close_idle()
        default = Policy.compile(config.default_policy())
        self.policy = default
        """The top-level policy: ip_rules checked before the client names its database."""
        self.policies = {
            db.name: Policy.compile(db.policy) if db.policy is not None else default
            for db in config.databases
        }
        self.generation += 1
        if not hasattr(self, "audit") or config.audit != self.config.audit:
            path = config.audit.path
            writer = self._audit_writer or (file_writer(path) if path else None)
            self.audit = AuditSink(writer, config.audit.queue_size)
        self.config, self.tls, self.users, self.pools = config, tls, users, pools

    def event_id(self) -> str:
        self._event_seq += 1
        return f"{self.id}-{self._instance}-{self._event_seq}"

    # --- sessions and cancel keys ----------------------------------------------------------

    def register(self, session: ClientSession) -> tuple[int, int]:
        while True:
            self._pid_seq = (self._pid_seq + 1) & ((1 << _PID_BITS) - 1) or 1
            key = ((self.index << _PID_BITS) | self._pid_seq, secrets.randbits(31))
            if key not in self._by_key:
                self._by_key[key] = session
                return key

    def unregister(self, session: ClientSession) -> None:
        self.sessions.discard(session)
        if not self.sessions:
            self._all_gone.set()
        if self._by_key.get(session.key) is session:
            del self._by_key[session.key]
        server = session.server
        if server is not None and self.by_backend.get(server.pid) is session:
            del self.by_backend[server.pid]

    def client_pid(
        self, backend_pid: int, conn: ServerConnection, receiver: ClientSession
    ) -> int | None:
        """The pid a client knows for the backend that sent a notification (None: keep the
        backend's own — its sender is not a session-mode client of this process)."""
        if backend_pid == conn.pid:
            return receiver.key[0]
        sender = self.by_backend.get(backend_pid)
        if sender is None or sender.server is None or sender.server.pid != backend_pid:
            return None
        return sender.key[0]

    async def cancel(self, pid: int, secret: int) -> None:
        """Forward a CancelRequest; returns once the server (or the owning worker process)
        has taken it, so the client's cancel connection closes only then, as with
        PostgreSQL itself. A key no process here holds goes to the fleet, if any."""
        owner = pid >> _PID_BITS
        if owner != self.index and 0 <= owner < self.workers:
            await self._pass_cancel(owner, pid, secret)
            return
        session = self._by_key.get((pid, secret))
        if session is None:
            await self._hand_to_fleet(pid, secret)
        else:
            await self._forward_cancel(session)

    async def cancel_heard(self, pid: int, secret: int) -> None:
        """A CancelRequest that another worker of the fleet could not place: forwarded if this
        process holds the key, else nothing (every worker hears every one)."""
        session = self._by_key.get((pid, secret))
        if session is not None:
            await self._forward_cancel(session)

    async def _forward_cancel(self, session: ClientSession) -> None:
        server = session.server
        # Only while work is in flight (a request, or a batch not synced yet): a cancel must
        # never hit the next client's query on the same server connection.
        busy = bool(session._started) or session._unsynced
        if server is None or session.pool is None or not busy:
            metrics.CANCELS.labels("ignored").inc()
            return
        metrics.CANCELS.labels("forwarded").inc()
        try:
            await send_cancel(session.pool.target, server.pid, server.secret, 5.0)
        except (OSError, TimeoutError) as exc:
            log.warning("cancel not delivered: %s", exc)

    async def _hand_to_fleet(self, pid: int, secret: int) -> None:
        hand = self.cancel_elsewhere
        if hand is None:
            metrics.CANCELS.labels("unknown").inc()
            return
        now = clocks.monotonic()
        if now - self._cancel_window >= 1.0:
            self._cancel_window, self._cancels_handed = now, 0
        if self._cancels_handed >= FLEET_CANCELS_PER_SECOND:
            metrics.CANCELS.labels("dropped").inc()
            return
        self._cancels_handed += 1
        metrics.CANCELS.labels("to_fleet" if await hand(pid, secret) else "undelivered").inc()

    async def _pass_cancel(self, owner: int, pid: int, secret: int) -> None:
        # uvloop cannot name abstract socket paths itself, so sockets are made by hand.
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, cancel_socket_name(self.port, owner))
                await loop.sock_sendall(sock, m.cancel_request(pid, secret))
                async with asyncio.timeout(5):
                    await loop.sock_recv(sock, 1)  # the owner closes once it forwarded it
            except (OSError, TimeoutError) as exc:
                log.warning("cannot pass cancel to worker %d: %s", owner, exc)
                return
        metrics.CANCELS.labels("passed").inc()

    async def _peer_cancel(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, m.MalformedMessage, OSError):
            packet = parse_startup(await reader.readexactly(16))
            pid, secret = getattr(packet, "pid", None), getattr(packet, "secret", None)
            if pid is not None and secret is not None and pid >> _PID_BITS == self.index:
                await self.cancel(pid, secret)
        writer.close()

    # --- serving ---------------------------------------------------------------------------

    async def start(self) -> None:
        listen = self.config.listen
        sock = socket.socket(socket.AF_INET6 if ":" in listen.host else socket.AF_INET)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.workers > 1:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((listen.host, listen.port))
        self.port = sock.getsockname()[1]
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # accepted sockets inherit it
        sock.listen(1024)
        sock.setblocking(False)
        self._servers.append(await sockets.serve(sock, lambda: ClientSession(self)))
        if self.workers > 1:
            peer = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            peer.bind(cancel_socket_name(self.port, self.index))
            peer.listen(64)
            peer.setblocking(False)
            self._servers.append(await asyncio.start_unix_server(self._peer_cancel, sock=peer))
        spawn(self._housekeeping(), name="pool housekeeping")
        spawn(metrics.flush_every(1.0), name="metrics flush")
        log.info(
            "listening",
            extra={
                "host": listen.host,
                "port": self.port,
                "worker": self.index,
                "compiled": COMPILED,
            },
        )

    async def _housekeeping(self) -> None:
        """Close server connections idle longer than their database's server_idle_timeout,
        looking every HOUSEKEEPING_SECONDS or twice per timeout, whichever is more often: a
        connection stays at most that long past its timeout."""
        while not self.draining:
            halves = [pool.db.server_idle_timeout / 2 for pool in self.pools.values()]
            await asyncio.sleep(max(0.05, min([HOUSEKEEPING_SECONDS, *halves])))
            for pool in self.pools.values():
                pool.close_idle(pool.db.server_idle_timeout)

    async def drain(self) -> None:
        """Stop accepting; let transactions in flight finish; then close every client."""
        self.draining = True
        for server in self._servers:
            server.close()
        for session in list(self.sessions):
            if not session._started and (session.server is None or session.server.status == b"I"):
                session.fatal("57P01", "sqlproxy: terminating connection: the worker is stopping")
        self._all_gone.clear()
        if self.sessions:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.listen.shutdown_timeout):
                    await self._all_gone.wait()
        for session in list(self.sessions):
            session.fatal("57P01", "sqlproxy: terminating connection: shutdown timeout reached")
        for pool in self.pools.values():
            pool.close_idle()
        await self.audit.flush()
        metrics.flush()

    async def check_ready(self) -> dict[str, str]:
        """Per database: "ok" or why its upstream cannot be reached."""
        if self.refusal is not None:
            return {"configuration": self.refusal}
        results: dict[str, str] = {}
        for name, pool in self.pools.items():
            try:
                await pool.check()
                results[name] = "ok"
            except Exception as exc:
                results[name] = str(exc) or type(exc).__name__
        return results
