"""Server connections of one configured database, shared by its clients.

Connections are keyed by the startup parameters the client sent (application_name, options,
...): a connection is only reused by a client that asked for the same ones, because the server
applied them at startup. ``pool_size`` caps all connections of the database together; when the
cap is reached, a released connection goes directly to the longest-waiting client (or, when its
parameters do not match, is closed to make room for that client's own).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Mapping
from typing import Final

import msgspec

from proxyworker import clocks, metrics
from proxyworker.config.schema import Database, Upstream
from proxyworker.guard.catalog import CatalogCache
from proxyworker.guard.checks import LimitedTable
from proxyworker.protocol import messages as m
from proxyworker.reuse import put
from proxyworker.upstream.connection import (
    ServerConnection,
    UpstreamError,
    client_tls_context,
    connect,
    pool_key,
)

log = logging.getLogger(__name__)

UPSTREAM_ROLE: Final = "\x00upstream_user"
"""A key of a client's parameters that is not sent to the server: the role the connection logs
in as (``[[users]] upstream_user``). Being part of the key, connections of different roles are
never shared."""


class _Waiter:
    __slots__ = ("future", "key")

    def __init__(self, key: str, future: asyncio.Future[ServerConnection | None]) -> None:
        self.key = key
        self.future = future


class _Idle:
    """The idle connections of one key, the one given back last on top. Its list keeps its
    array (``reuse``): in transaction mode it is emptied and refilled every transaction, and a
    list whose last item is popped frees its array, to allocate it again on the next append."""

    __slots__ = ("conns", "count", "key")

    def __init__(self, key: str) -> None:
        self.key = key
        self.conns: list[ServerConnection | None] = []
        """``count`` connections, then stale slots (None)."""
        self.count = 0

    def push(self, conn: ServerConnection) -> None:
        put(self.conns, self.count, conn)
        self.count += 1

    def pop(self) -> ServerConnection | None:
        """The connection given back last; None when there is none."""
        count = self.count
        if not count:
            return None
        count -= 1
        conns = self.conns
        conn = conns[count]
        conns[count] = None
        self.count = count
        return conn

    def pop_oldest(self) -> ServerConnection | None:
        if not self.count:
            return None
        self.count -= 1
        return self.conns.pop(0)  # (the stale slots move down with the rest)

    def keep(self, wanted: Callable[[ServerConnection], bool]) -> list[ServerConnection]:
        """Keep only the connections ``wanted`` says yes to, oldest first as they were; the
        others, returned."""
        conns = self.conns
        dropped: list[ServerConnection] = []
        kept = 0
        for i in range(self.count):
            conn = conns[i]
            assert conn is not None
            if wanted(conn):
                conns[kept] = conn
                kept += 1
            else:
                dropped.append(conn)
        for i in range(kept, self.count):
            conns[i] = None
        self.count = kept
        return dropped


class Pool:
    def __init__(self, db: Database, catalog_refresh: float = 60.0) -> None:
        self.db = db
        self.target: Upstream = db.target()
        self.tls = client_tls_context(self.target)
        self.idle: dict[str, _Idle] = {}
        self._last_idle: _Idle | None = None
        """The ``idle`` entry used last: most pools have clients of one key only, and comparing
        it costs less than a lookup by a long string."""
        self.size = 0  # open or opening connections
        self._waiters: deque[_Waiter] = deque()
        self.max_prepared = db.max_prepared_statements
        self.dead_statements: set[str] = set()
        """Transaction mode: server-side statement names whose clients are gone."""
        self._labels = metrics.pool_labels(db.name)
        self.catalog = CatalogCache(self.target, catalog_refresh, db.connect_timeout * 2)
        self.limited: dict[int, LimitedTable] = {}
        """Tables once found limited, by OID (renaming does not free them)."""
        self.roles: dict[str, str | None] = {}
        """Passwords of the upstream roles users are mapped to (set by the worker)."""

    # --- acquiring -------------------------------------------------------------------------

    async def acquire(self, params: Mapping[str, str]) -> ServerConnection:
        key = pool_key(params)
        started = clocks.perf_counter()
        try:
            while True:
                conn = self._pop_idle(key)
                if conn is not None:
                    return conn
                if self.size < self.db.pool_size or self._evict_other(key):
                    return await self._open(params)
                granted = await self._wait(key)
                if granted is not None:
                    return granted
                if self.size < self.db.pool_size:  # a slot was freed for us
                    return await self._open(params)
        finally:
            self._labels.wait.observe(clocks.perf_counter() - started)

    def acquire_idle(self, key: str) -> ServerConnection | None:
        """An idle connection for these parameters right now, without waiting (the
        transaction-mode fast path: no task, no pause of the client)."""
        if self._waiters:
            return None  # those who wait go first
        return self._pop_idle(key)

    def _idle_of(self, key: str) -> _Idle:
        idle = self._last_idle
        if idle is not None and idle.key == key:  # (interned keys: equal as one object)
            return idle
        found = self.idle.get(key)
        if found is None:
            found = self.idle[key] = _Idle(key)
        self._last_idle = found
        return found

    def _pop_idle(self, key: str) -> ServerConnection | None:
        idle = self._idle_of(key)
        while True:
            conn = idle.pop()
            if conn is None:
                return None
            conn.pooled = False
            self._labels.idle.dec()
            if not conn.closed:
                return conn

    def _evict_other(self, key: str) -> bool:
        """Close the oldest idle connection of other parameters so ``key`` can have a slot."""
        for other, idle in self.idle.items():
            evicted = idle.pop_oldest() if other != key else None
            if evicted is not None:
                evicted.pooled = False
                evicted.close()
                self._labels.idle.dec()
                return True
        return False

    async def _wait(self, key: str) -> ServerConnection | None:
        future: asyncio.Future[ServerConnection | None] = asyncio.get_running_loop().create_future()
        waiter = _Waiter(key, future)
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self.db.pool_timeout):
                return await future
        except BaseException as exc:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            if future.done() and not future.cancelled():
                # Granted just as we timed out or were cancelled: pass it on, do not leak it.
                granted = future.result()
                if granted is not None:
                    self.release(granted)
                else:
                    self._grant_slot()
            if isinstance(exc, TimeoutError):
                raise UpstreamError(
                    "53300",
                    f"no server connection became free within {self.db.pool_timeout:g}s "
                    f"(pool_size {self.db.pool_size}, pool_timeout)",
                ) from None
            raise

    async def _open(self, params: Mapping[str, str]) -> ServerConnection:
        self.size += 1
        self._labels.size.set(self.size)
        try:
            role = params.get(UPSTREAM_ROLE)
            target = self.target
            if role is not None:
                target = msgspec.structs.replace(target, user=role, password=self.roles.get(role))
            conn = await connect(target, params, self.db.connect_timeout, self.tls)
        except BaseException:
            self.size -= 1
            self._labels.size.set(self.size)
            self._labels.errors.inc()
            self._grant_slot()
            raise
        conn.on_close = self._closed
        return conn

    def _closed(self, conn: ServerConnection) -> None:
        self.size -= 1
        self._labels.size.set(self.size)
        self._grant_slot()

    def _grant_slot(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.future.done():
                waiter.future.set_result(None)
                return

    # --- releasing -------------------------------------------------------------------------

    def release(self, conn: ServerConnection) -> None:
        """Take back a connection that is idle (ReadyForQuery 'I', nothing in flight)."""
        conn.unlink()
        if conn.closed:
            return
        while self._waiters:
            waiter = self._waiters[0]
            if waiter.future.done():
                self._waiters.popleft()
                continue
            if waiter.key == conn.key:
                self._waiters.popleft()
                waiter.future.set_result(conn)
                return
            # Parameters differ: closing makes room; _closed() then grants the slot.
            conn.close()
            return
        conn.pooled = True
        self._idle_of(conn.key).push(conn)
        self._labels.idle.inc()

    async def reset_and_release(self, conn: ServerConnection, reset_query: str | None) -> None:
        """Roll back what the client left open, run the reset query, and pool the connection;
        close it instead if it is mid-request or the reset fails."""
        conn.unlink()
        if conn.closed:
            return
        payload = b""
        count = 0
        if conn.status != b"I":
            payload += m.query("ROLLBACK")
            count += 1
        if reset_query:
            payload += m.query(reset_query)
            count += 1
        dead = [name for name in conn.prepared if name in self.dead_statements]
        overflow = len(conn.prepared) - len(dead) - self.max_prepared
        if overflow > 0:
            dead += [n for n in conn.prepared if n not in self.dead_statements][:overflow]
        if dead:
            for name in dead:
                payload += m.message(m.CLOSE, b"S" + m.cstr(name))
                conn.prepared.pop(name, None)
            payload += m.message(m.SYNC)
            count += 1
        if payload:
            try:
                async with asyncio.timeout(self.db.connect_timeout):
                    errors = await conn.run_until_ready(payload, count)
            except (TimeoutError, UpstreamError):
                errors = ["reset timed out or the connection was lost"]
            if errors or conn.status != b"I":
                log.warning("closing server connection after failed reset: %s", errors)
                conn.close()
                return
        self.release(conn)

    # --- housekeeping ----------------------------------------------------------------------

    def close_idle(self, older_than: float | None = None) -> None:
        """Close the idle connections unused for ``older_than`` seconds (None: all), and
        forget the keys left without any (clients that each connected with parameters of
        their own, an application_name with a process id, would otherwise add one for good)."""
        now = clocks.monotonic()
        for idle in self.idle.values():
            closing = idle.keep(
                lambda conn: older_than is not None and now - conn.last_used <= older_than
            )
            for conn in closing:
                self._labels.idle.dec()
                conn.close()
        for key in [key for key, idle in self.idle.items() if not idle.count]:
            del self.idle[key]
        self._last_idle = None  # (it may be one of those forgotten)

    async def check(self) -> None:
        """Readiness: can a fresh connection be made? Raises UpstreamError if not."""
        conn = await connect(self.target, {}, self.db.connect_timeout, self.tls)
        conn.close()
