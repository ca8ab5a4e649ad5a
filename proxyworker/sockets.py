"""The worker's plain sockets on one C epoll instance (``proxyworker/_reactor.c``).

uvloop takes the interpreter lock back for every callback it makes — twice per read — and
wraps each in a context run; a relay pays that four times per simple transaction. The worker
therefore puts its plain (non-TLS) client and server sockets on a ``Reactor``: one epoll
instance that uvloop watches as a single descriptor, and whose ready sockets are all served
under one hold of the lock. Its transports keep asyncio's semantics for every call the
session makes (write, writelines, pause/resume, close, abort, connection_lost through
``call_soon``), so the protocols do not know which kind they have.

TLS stays on uvloop: ``start_tls`` hands a socket over before its first encrypted byte. Where
the extension is not built (``make clean-build``), everything runs on uvloop's transports.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import weakref
from collections.abc import Callable
from typing import Protocol, cast


def _write(transport: asyncio.BaseTransport, data: bytes) -> None:
    """``transport.write(data)`` (``write``, where the reactor is not built)."""
    cast(asyncio.WriteTransport, transport).write(data)


try:
    from proxyworker._reactor import Reactor, Transport, write
except ImportError:  # not built: uvloop's transports only
    Reactor = Transport = None  # type: ignore[assignment,misc]
    write = _write

__all__ = ["Listener", "connect", "serve", "start_tls", "write"]


class Listener(Protocol):
    def close(self) -> None: ...


ACCEPT_RETRY_SECONDS = 1.0
"""After accept fails for want of resources (EMFILE...), the pause before trying again."""

_current: tuple[weakref.ref[asyncio.AbstractEventLoop], Reactor] | None = None
"""The reactor of the loop that last asked for one. (Only that: a reactor refers to its loop,
so a table of them would keep every loop alive. A loop whose reactor was replaced keeps
serving the transports it has; it gets a new reactor if it asks again.)"""


def _reactor(loop: asyncio.AbstractEventLoop) -> Reactor:
    """The running loop's reactor, made and registered with the loop on first use."""
    global _current
    if _current is not None and _current[0]() is loop:
        return _current[1]
    reactor = Reactor(loop)
    loop.add_reader(reactor.fileno(), reactor.poll)
    _current = (weakref.ref(loop), reactor)
    return reactor


class _Acceptor:
    """Accepts on a listening socket the loop watches; each connection gets a transport."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        factory: Callable[[], asyncio.Protocol],
    ) -> None:
        self.loop = loop
        self.sock = sock
        self.factory = factory
        self.reactor = _reactor(loop)
        loop.add_reader(sock.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(64):
            try:
                conn, peer = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # e.g. EMFILE: leave it queued, say why, try again later
                self.loop.call_exception_handler(
                    {"message": "accept failed", "exception": exc, "socket": self.sock}
                )
                self.loop.remove_reader(self.sock.fileno())
                self.loop.call_later(ACCEPT_RETRY_SECONDS, self._resume)
                return
            conn.setblocking(False)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            extra = {"peername": peer, "sockname": conn.getsockname()}
            protocol = self.factory()
            transport = self.reactor.transport(conn.detach(), protocol, extra)
            protocol.connection_made(transport)

    def _resume(self) -> None:
        if self.sock.fileno() >= 0:
            self.loop.add_reader(self.sock.fileno(), self._accept)

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()


async def serve(sock: socket.socket, factory: Callable[[], asyncio.Protocol]) -> Listener:
    """Accept connections on the listening, non-blocking ``sock`` for protocols made by
    ``factory``."""
    loop = asyncio.get_running_loop()
    if Reactor is None:
        return await loop.create_server(factory, sock=sock, backlog=1024)
    return _Acceptor(loop, sock, factory)


async def connect(host: str, port: int, protocol: asyncio.Protocol, tls: bool) -> None:
    """Connect to ``host``:``port`` for ``protocol`` (its connection_made is called). With
    ``tls`` the connection will be upgraded, so it starts on uvloop's transport."""
    loop = asyncio.get_running_loop()
    if Reactor is None or tls:
        await loop.create_connection(lambda: protocol, host, port)
        return
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    error: OSError | None = None
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await loop.sock_connect(sock, address)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        except BaseException:
            sock.close()
            raise
        extra = {"peername": sock.getpeername(), "sockname": sock.getsockname()}
        transport = _reactor(loop).transport(sock.detach(), protocol, extra)
        protocol.connection_made(transport)
        return
    raise error or OSError(f"cannot resolve {host}")


class _Handover(asyncio.Protocol):
    """Holds a socket on uvloop between the reactor and start_tls: reads nothing."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        cast(asyncio.Transport, transport).pause_reading()


async def start_tls(
    transport: asyncio.Transport,
    protocol: asyncio.Protocol,
    ctx: ssl.SSLContext,
    *,
    server_side: bool = False,
    server_hostname: str | None = None,
    before: bytes = b"",
) -> asyncio.Transport:
    """``loop.start_tls`` for a transport of either kind. ``before`` is written (in clear)
    just before the handshake: the server's 'S' to an SSLRequest, sent only once the socket is
    on uvloop, so that no byte of the client's TLS handshake can reach the reactor."""
    loop = asyncio.get_running_loop()
    if Transport is not None and isinstance(transport, Transport):
        fd = transport.detach()
        sock = socket.socket(fileno=fd)
        try:
            if server_side:
                transport, _ = await loop.connect_accepted_socket(_Handover, sock=sock)
            else:
                transport, _ = await loop.create_connection(_Handover, sock=sock)
        except BaseException:
            with contextlib.suppress(OSError):
                sock.close()
            raise
    if before:
        transport.write(before)
    new = await loop.start_tls(
        transport, protocol, ctx, server_side=server_side, server_hostname=server_hostname
    )
    assert new is not None
    return new
