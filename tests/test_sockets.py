"""The reactor's transports (``proxyworker/_reactor.c`` through ``proxyworker/sockets.py``)
over real sockets on uvloop: what asyncio's transports promise a protocol, kept.

Each test connects a protocol through ``sockets.serve`` / ``sockets.connect`` and plays the
other end with a plain socket, so every byte crosses the kernel.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
import resource
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import uvloop

from proxyworker import sockets
from proxyworker.tasks import spawn
from tests.support.certs import Certificates

pytestmark = pytest.mark.skipif(sockets.Reactor is None, reason="needs `make build`")


def on_uvloop(test: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Run an async test on uvloop, the worker's loop (pytest-asyncio's is asyncio's)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        uvloop.run(test(*args, **kwargs))

    return run


class Recorder(asyncio.Protocol):
    """Records every callback, in order, with what it carried."""

    def __init__(self, eof_keeps_open: bool = False, fail_on: bytes | None = None) -> None:
        self.transport: Any = None
        self.events: list[tuple[str, Any]] = []
        self.data = bytearray()
        self.eof_keeps_open = eof_keeps_open
        self.fail_on = fail_on
        self.lost = asyncio.get_running_loop().create_future()
        self.got: asyncio.Event = asyncio.Event()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.events.append(("made", None))

    def data_received(self, data: bytes) -> None:
        if self.fail_on is not None and self.fail_on in data:
            raise ValueError("protocol bug")
        self.data += data
        self.events.append(("data", len(data)))
        self.got.set()

    def eof_received(self) -> bool:
        self.events.append(("eof", None))
        return self.eof_keeps_open

    def pause_writing(self) -> None:
        self.events.append(("pause_writing", self.transport.get_write_buffer_size()))

    def resume_writing(self) -> None:
        self.events.append(("resume_writing", self.transport.get_write_buffer_size()))

    def connection_lost(self, exc: Exception | None) -> None:
        self.events.append(("lost", exc))
        self.lost.set_result(exc)

    async def wait_for(self, size: int) -> None:
        while len(self.data) < size:
            self.got.clear()
            await asyncio.wait_for(self.got.wait(), 5)

    def names(self) -> list[str]:
        return [name for name, _ in self.events]


Pair = tuple[Recorder, socket.socket]


async def listen(**kwargs: Any) -> tuple[sockets.Listener, socket.socket, list[Recorder]]:
    """A listening socket served by ``sockets.serve``, and the protocols it made (kwargs
    for each Recorder), in order."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    made: list[Recorder] = []

    def factory() -> Recorder:
        made.append(Recorder(**kwargs))
        return made[-1]

    return await sockets.serve(listener, factory), listener, made


@contextlib.asynccontextmanager
async def accepted(**kwargs: Any) -> AsyncIterator[Pair]:
    """A protocol on a transport the reactor accepted, and the peer's blocking socket."""
    server, listener, protocols = await listen(**kwargs)
    peer = socket.create_connection(listener.getsockname())
    try:
        for _ in range(200):
            if protocols:
                break
            await asyncio.sleep(0.01)
        assert protocols, "the reactor did not accept the connection"
        yield protocols[0], peer
    finally:
        peer.close()
        server.close()


async def recv_exactly(peer: socket.socket, size: int) -> bytes:
    """Read ``size`` bytes in a thread, the loop running meanwhile."""

    def read() -> bytes:
        peer.settimeout(10)
        chunks = bytearray()
        while len(chunks) < size:
            chunk = peer.recv(size - len(chunks))
            if not chunk:
                break
            chunks += chunk
        return bytes(chunks)

    return await asyncio.to_thread(read)


@on_uvloop
async def test_bytes_cross_both_ways_and_the_peer_is_known() -> None:
    async with accepted() as (proto, peer):
        assert proto.transport.get_extra_info("peername") == peer.getsockname()
        assert proto.transport.get_extra_info("missing", "default") == "default"
        peer.sendall(b"hello")
        await proto.wait_for(5)
        assert bytes(proto.data) == b"hello"
        proto.transport.write(b"world")
        proto.transport.write(memoryview(b"--and more--")[2:-2])
        assert await recv_exactly(peer, 13) == b"worldand more"


@on_uvloop
async def test_write_writes_on_a_reactor_transport_and_on_any_other() -> None:
    async with accepted() as (proto, peer):
        assert type(proto.transport) is sockets.Transport
        sockets.write(proto.transport, b"reactor")
        assert await recv_exactly(peer, 7) == b"reactor"
        with pytest.raises(TypeError, match="2 arguments"):
            sockets.write(proto.transport)  # type: ignore[call-arg]
    # uvloop's own transport (as a TLS session has): its write method is called.
    loop = asyncio.get_running_loop()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        transport, _ = await loop.create_connection(Recorder, *listener.getsockname())
        other, _ = await loop.sock_accept(listener)
        with other:
            other.setblocking(True)
            assert type(transport) is not sockets.Transport
            sockets.write(transport, b"uvloop")
            assert await recv_exactly(other, 6) == b"uvloop"
            transport.close()


@on_uvloop
async def test_accept_out_of_descriptors_reports_and_tries_again_later() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: reported.append(context))
    server, listener, made = await listen()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    spare: list[int] = []
    peer: socket.socket | None = None
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max_fd() + 20, hard))
        with contextlib.suppress(OSError):  # every descriptor taken...
            while True:
                spare.append(os.dup(0))
        os.close(spare.pop())  # ...but one, for the peer: none is left to accept with
        peer = socket.create_connection(listener.getsockname())
        await asyncio.sleep(0.3)
        assert [c["message"] for c in reported] == ["accept failed"]  # once, not in a loop
        assert reported[0]["exception"].errno == errno.EMFILE
        assert made == []
    finally:
        for fd in spare:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        for _ in range(300):  # within ACCEPT_RETRY_SECONDS, and then some
            if made:
                break
            await asyncio.sleep(0.01)
        assert peer is not None and len(made) == 1
        assert made[0].transport.get_extra_info("peername") == peer.getsockname()
    finally:
        if peer is not None:
            peer.close()
        server.close()
        loop.set_exception_handler(None)


def max_fd() -> int:
    return max(int(name) for name in os.listdir("/proc/self/fd"))


@on_uvloop
async def test_connect_reaches_a_listener(unused_tcp_port: int) -> None:
    listener = socket.create_server(("127.0.0.1", unused_tcp_port))
    proto = Recorder()
    await sockets.connect("127.0.0.1", unused_tcp_port, proto, tls=False)
    conn, _ = listener.accept()
    try:
        assert isinstance(proto.transport, sockets.Transport)
        assert proto.transport.get_extra_info("peername") == ("127.0.0.1", unused_tcp_port)
        proto.transport.write(b"ping")
        assert await recv_exactly(conn, 4) == b"ping"
    finally:
        conn.close()
        listener.close()
        proto.transport.abort()


@on_uvloop
async def test_connect_to_nothing_raises_what_the_kernel_said(unused_tcp_port: int) -> None:
    with pytest.raises(ConnectionRefusedError):
        await sockets.connect("127.0.0.1", unused_tcp_port, Recorder(), tls=False)


@on_uvloop
async def test_a_peer_that_does_not_read_gets_everything_in_order_with_flow_control() -> None:
    async with accepted() as (proto, peer):
        transport = proto.transport
        transport.set_write_buffer_limits(high=64 * 1024, low=16 * 1024)
        payload = os.urandom(8 * 1024 * 1024)  # far more than the socket buffers hold
        pieces = [payload[i : i + 1000] for i in range(0, 4 * 1024 * 1024, 1000)]
        transport.writelines(pieces)  # several gathered sends of 64 pieces each
        transport.write(payload[len(b"".join(pieces)) :])
        assert transport.get_write_buffer_size() > 64 * 1024
        assert proto.names()[-1] == "pause_writing"
        assert await recv_exactly(peer, len(payload)) == payload
        await asyncio.sleep(0.05)
        assert transport.get_write_buffer_size() == 0
        assert proto.names()[-2:] == ["pause_writing", "resume_writing"]
        assert proto.events[-1][1] <= 16 * 1024  # resumed at or under the low mark


@on_uvloop
async def test_close_sends_what_is_buffered_first_then_connection_lost() -> None:
    async with accepted() as (proto, peer):
        payload = os.urandom(4 * 1024 * 1024)
        proto.transport.write(payload)
        proto.transport.close()
        assert proto.transport.is_closing()
        assert "lost" not in proto.names()  # never from inside close()
        assert await recv_exactly(peer, len(payload) + 1) == payload  # then EOF
        assert await asyncio.wait_for(proto.lost, 5) is None
        proto.transport.write(b"after close")  # ignored, as asyncio does
        assert proto.names().count("lost") == 1


@on_uvloop
async def test_abort_drops_the_buffer_and_reports_soon() -> None:
    async with accepted() as (proto, peer):
        proto.transport.write(os.urandom(4 * 1024 * 1024))
        proto.transport.abort()
        assert "lost" not in proto.names()
        assert await asyncio.wait_for(proto.lost, 5) is None
        assert proto.transport.fileno() == -1
        received = await recv_exactly(peer, 8 * 1024 * 1024)
        assert len(received) < 4 * 1024 * 1024


@on_uvloop
async def test_peer_eof_closes_unless_the_protocol_keeps_it_open() -> None:
    async with accepted() as (proto, peer):
        peer.sendall(b"last words")
        peer.shutdown(socket.SHUT_WR)
        assert await asyncio.wait_for(proto.lost, 5) is None
        assert proto.names() == ["made", "data", "eof", "lost"]
    async with accepted(eof_keeps_open=True) as (proto, peer):
        peer.shutdown(socket.SHUT_WR)
        await asyncio.sleep(0.1)
        assert proto.names() == ["made", "eof"]
        proto.transport.write(b"still here")
        assert await recv_exactly(peer, 10) == b"still here"
        proto.transport.close()
        assert await asyncio.wait_for(proto.lost, 5) is None


@on_uvloop
async def test_a_reset_is_connection_lost_with_the_error() -> None:
    async with accepted() as (proto, peer):
        peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer.close()
        exc = await asyncio.wait_for(proto.lost, 5)
        assert isinstance(exc, ConnectionResetError)


@on_uvloop
async def test_a_failing_data_received_is_reported_and_closes_the_transport() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: reported.append(context))
    try:
        async with accepted(fail_on=b"boom") as (proto, peer):
            peer.sendall(b"boom")
            exc = await asyncio.wait_for(proto.lost, 5)
            assert isinstance(exc, ValueError)
            assert [c["message"] for c in reported] == ["protocol.data_received() failed"]
            assert reported[0]["exception"] is exc
            assert await recv_exactly(peer, 1) == b""  # the peer sees the close
    finally:
        loop.set_exception_handler(None)


@on_uvloop
async def test_paused_reading_delivers_nothing_until_resumed() -> None:
    async with accepted() as (proto, peer):
        proto.transport.pause_reading()
        assert not proto.transport.is_reading()
        peer.sendall(b"held back")
        peer.shutdown(socket.SHUT_WR)  # a hang-up while paused must not spin or be lost
        await asyncio.sleep(0.2)
        assert proto.names() == ["made"]
        proto.transport.resume_reading()
        assert await asyncio.wait_for(proto.lost, 5) is None
        assert bytes(proto.data) == b"held back"
        assert proto.names() == ["made", "data", "eof", "lost"]


class Handing(Recorder):
    """Gives its transport to ``successor`` from inside its first data_received."""

    def __init__(self, successor: Recorder) -> None:
        super().__init__()
        self.successor: Recorder | None = successor

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.successor is not None:
            self.transport.set_protocol(self.successor)
            self.successor.transport, self.successor = self.transport, None


@on_uvloop
async def test_a_protocol_can_hand_its_transport_to_another(unused_tcp_port: int) -> None:
    listener = socket.create_server(("127.0.0.1", unused_tcp_port))
    successor = Recorder()
    proto = Handing(successor)
    await sockets.connect("127.0.0.1", unused_tcp_port, proto, tls=False)
    conn, _ = listener.accept()
    try:
        conn.sendall(b"first")
        await proto.wait_for(5)
        assert proto.transport.get_protocol() is successor
        conn.sendall(b"second")
        await successor.wait_for(6)
        conn.close()
        assert await asyncio.wait_for(successor.lost, 5) is None
        assert (bytes(proto.data), bytes(successor.data)) == (b"first", b"second")
        assert proto.names() == ["made", "data"]
    finally:
        listener.close()


@on_uvloop
async def test_detach_hands_the_socket_over_without_connection_lost() -> None:
    async with accepted() as (proto, peer):
        proto.transport.write(b"x")
        fd = proto.transport.detach()
        with socket.socket(fileno=fd) as sock:
            sock.setblocking(True)
            peer.sendall(b"to the new owner")
            assert sock.recv(100) == b"to the new owner"
        await asyncio.sleep(0.05)
        assert proto.names() == ["made"]
        assert await recv_exactly(peer, 1) == b"x"


@on_uvloop
async def test_start_tls_moves_a_reactor_socket_to_uvloop(
    certs: Certificates, tmp_path: Path
) -> None:
    files = certs.write(str(tmp_path))
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(files["cert"], files["key"])
    client_ctx = ssl.create_default_context(cafile=files["ca"])
    async with accepted() as (proto, peer):
        peer.sendall(b"upgrade?")
        await proto.wait_for(8)

        def handshake() -> bytes:
            peer.settimeout(10)
            assert peer.recv(1) == b"S"  # sent in clear, before the handshake
            with client_ctx.wrap_socket(peer, server_hostname="localhost") as tls:
                tls.sendall(b"secret")
                return tls.recv(100)

        client = spawn(asyncio.to_thread(handshake), name="tls client")
        proto.transport = await sockets.start_tls(
            proto.transport, proto, server_ctx, server_side=True, before=b"S"
        )
        await proto.wait_for(8 + 6)
        assert bytes(proto.data) == b"upgrade?secret"
        proto.transport.write(b"over tls")
        assert await client == b"over tls"
        proto.transport.close()


@on_uvloop
async def test_without_the_extension_everything_runs_on_uvloop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sockets, "Reactor", None)
    monkeypatch.setattr(sockets, "Transport", None)
    server, listener, made = await listen()
    proto = Recorder()
    await sockets.connect(*listener.getsockname(), proto, tls=False)
    try:
        assert type(proto.transport).__module__.startswith("uvloop")
        proto.transport.write(b"plain uvloop")
        for _ in range(200):
            if made and len(made[0].data) == 12:
                break
            await asyncio.sleep(0.01)
        assert bytes(made[0].data) == b"plain uvloop"
    finally:
        proto.transport.close()
        server.close()
