"""One connection to an upstream PostgreSQL server.

Connecting (TCP, optional TLS with verify-full, StartupMessage, trust/password/md5/SCRAM) is a
coroutine that reads framed messages the protocol object queues. Once the connection is
linked to a client session, every byte received goes straight to that session, which owns the
relay; the connection itself never writes to a client.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final, cast

from proxyworker import clocks, sockets
from proxyworker.config.schema import Upstream
from proxyworker.protocol import messages as m
from proxyworker.protocol import tracker
from proxyworker.protocol.framing import Framer
from proxyworker.protocol.scram import MECHANISM, ScramClient, ScramError, md5_password

if TYPE_CHECKING:
    from collections.abc import Callable

    # (Named, not a Protocol: compiled, the relay's calls to it are direct.)
    from proxyworker.session.client import ClientSession

SERVER_MAX_MESSAGE: Final = 1 << 30  # the server's own limit for a single message


class UpstreamError(Exception):
    """The upstream could not be reached or refused us; carries what the client should see."""

    def __init__(self, sqlstate: str, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.message = message
        self.detail = detail


def pool_key(params: Mapping[str, str]) -> str:
    """The startup parameters that decide which clients may share a server connection, as
    one string: the pool looks it up every transaction, and a string keeps its hash. Interned:
    the keys of a session and of its connections are then one object, and compare at once."""
    return sys.intern(repr(sorted(params.items())))


class ServerConnection(asyncio.Protocol):
    def __init__(self, target: Upstream, key: str) -> None:
        self.target = target
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.framer = Framer(
            SERVER_MAX_MESSAGE, frozenset({m.DATA_ROW, m.COPY_DATA}), whole=tracker.ANSWERS
        )
        self.params: dict[str, str] = {}
        self.carried = 0
        """``params`` as ``carried_settings`` numbers them, kept by the session that uses it;
        0 until then, and whenever ``params`` change."""
        self.startup_params: dict[str, str] = {}
        """The settings the server reported at startup: what a new client is told (a pooled
        connection may carry another client's changes until they are set back)."""
        self.pid = 0
        self.secret = 0
        self.status = b"I"
        self.closed = False
        self.linked: ClientSession | None = None
        self.created = clocks.monotonic()
        self.last_used = self.created
        # Transaction pooling: server-side statement names this backend has prepared (LRU order).
        self.prepared: dict[str, None] = {}
        self.search_path_changed = False
        """Transaction pooling: a client left a search_path of its own set on this backend."""
        self.pooled = False
        """Idle in a pool: anything the server sends now is read by the connection itself."""
        self._inbox: list[bytes] = []
        self._raw = b""
        self._wakeup: asyncio.Future[None] | None = None
        self._lost: Exception | None = None
        self.on_close: Callable[[ServerConnection], None] | None = None

    # --- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if self.linked is not None:
            self.linked.server_data(self, data)
            return
        self._raw += data
        if self.pooled:
            self._read_while_pooled()
        self._wake()

    def _read_while_pooled(self) -> None:
        """An idle server may report a changed setting, or say it is going away (FATAL
        before closing, e.g. pg_terminate_backend): never hand that to the next client."""
        try:
            msgs = self.framer.feed(self._raw)
        except m.MalformedMessage:
            self.abort()
            return
        self._raw = b""
        for kind, view in msgs:
            if kind == m.PARAMETER_STATUS:
                name, value = m.parse_parameter_status(view[5:])
                self.params[name] = value
                self.carried = 0
            elif kind == m.ERROR_RESPONSE:
                self.abort()
                return

    def eof_received(self) -> bool | None:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._lost = exc or ConnectionResetError("server closed the connection")
        self._wake()
        if self.linked is not None:
            self.linked.server_lost(self, exc)
        if self.on_close is not None:
            self.on_close(self)

    def pause_writing(self) -> None:
        if self.linked is not None:
            self.linked.server_pause_writing()

    def resume_writing(self) -> None:
        if self.linked is not None:
            self.linked.server_resume_writing()

    # --- unlinked reading (handshake, reset) ------------------------------------------------

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def _wait(self) -> None:
        if self._lost is not None:
            raise UpstreamError("08006", f"server closed the connection: {self._lost}")
        self._wakeup = asyncio.get_running_loop().create_future()
        try:
            await self._wakeup
        finally:
            self._wakeup = None

    async def _read_byte(self) -> int:
        while not self._raw:
            await self._wait()
        byte, self._raw = self._raw[0], self._raw[1:]
        return byte

    async def read_message(self) -> tuple[int, bytes]:
        """Next whole message while not linked to a client: (type, body)."""
        while True:
            if self._inbox:
                raw = self._inbox.pop(0)
                return raw[0], raw[5:]
            if self._raw:
                data, self._raw = self._raw, b""
                self._inbox.extend(bytes(view) for _, view in self.framer.feed(data))
                continue
            await self._wait()

    def write(self, data: bytes | memoryview) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def link(self, target: ClientSession) -> None:
        """Hand all further traffic to ``target``; anything already read is replayed to it."""
        assert not self._inbox, "unlinking left unread messages"
        self.linked = target
        if self._raw:
            data, self._raw = self._raw, b""
            target.server_data(self, data)

    def unlink(self) -> None:
        self.linked = None
        self.last_used = clocks.monotonic()

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            with contextlib.suppress(Exception):
                self.transport.write(m.terminate())
            self.transport.close()
        self.closed = True

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()
        self.closed = True

    async def run_until_ready(self, payload: bytes, ready_count: int = 1) -> list[str]:
        """Send ``payload`` while unlinked and consume responses up to ``ready_count``
        ReadyForQuery messages. Returns the error messages seen (empty on success)."""
        self.write(payload)
        errors: list[str] = []
        while ready_count:
            kind, body = await self.read_message()
            if kind == m.ERROR_RESPONSE:
                fields = m.parse_fields(body)
                errors.append(f"{fields.get('C', '')}: {fields.get('M', '')}")
            elif kind == m.PARAMETER_STATUS:
                name, value = m.parse_parameter_status(body)
                self.params[name] = value
                self.carried = 0
            elif kind == m.READY_FOR_QUERY:
                self.status = body[:1]
                ready_count -= 1
        return errors


def client_tls_context(target: Upstream) -> ssl.SSLContext | None:
    if target.sslmode == "disable":
        return None
    if target.sslmode in ("verify-ca", "verify-full"):
        ctx = ssl.create_default_context(cafile=target.sslrootcert)
        ctx.check_hostname = target.sslmode == "verify-full"
        return ctx
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def connect(
    target: Upstream,
    params: Mapping[str, str],
    timeout: float,
    tls: ssl.SSLContext | None,
) -> ServerConnection:
    """Open, secure and authenticate a server connection; UpstreamError on any failure."""
    conn = ServerConnection(target, pool_key(params))
    try:
        async with asyncio.timeout(timeout):
            await _handshake(conn, target, params, tls)
    except TimeoutError:
        conn.abort()
        raise UpstreamError(
            "08006",
            f"timed out after {timeout:g}s connecting to {target.host}:{target.port}",
        ) from None
    except UpstreamError:
        conn.abort()
        raise
    except (OSError, ssl.SSLError, ScramError, m.MalformedMessage) as exc:
        conn.abort()
        raise UpstreamError(
            "08006", f"cannot connect to {target.host}:{target.port}: {exc}"
        ) from None
    return conn


async def _handshake(
    conn: ServerConnection,
    target: Upstream,
    params: Mapping[str, str],
    tls: ssl.SSLContext | None,
) -> None:
    await sockets.connect(target.host, target.port, conn, tls=tls is not None)
    if tls is not None:
        conn.write(m.ssl_request())
        answer = await conn._read_byte()
        if answer == ord("S"):
            assert conn.transport is not None
            conn.transport = await sockets.start_tls(
                conn.transport,
                conn,
                tls,
                server_hostname=target.host if tls.check_hostname else None,
            )
        elif target.sslmode != "prefer":
            raise UpstreamError("08006", f"server {target.host} does not accept TLS")
    # Keys starting with NUL are the worker's own (a client cannot send one): not for the server.
    sent = {k: v for k, v in params.items() if not k.startswith("\x00")}
    startup = {"user": target.user, "database": target.dbname, **sent}
    conn.write(m.startup_message(startup))
    scram: ScramClient | None = None
    while True:
        kind, body = await conn.read_message()
        if kind == m.AUTHENTICATION:
            code = m.read_i32(body, 0)
            if code == m.AUTH_OK:
                continue
            password = target.password
            if password is None:
                raise UpstreamError(
                    "28P01", f"server requires a password for {target.user!r}; none configured"
                )
            if code == m.AUTH_CLEARTEXT:
                conn.write(m.password_message(password.encode() + b"\x00"))
            elif code == m.AUTH_MD5:
                conn.write(m.password_message(md5_password(target.user, password, body[4:8])))
            elif code == m.AUTH_SASL:
                mechanisms = body[4:].split(b"\x00")
                if MECHANISM.encode() not in mechanisms:
                    raise UpstreamError("28000", f"server offers no {MECHANISM}")
                scram = ScramClient(password)
                conn.write(m.sasl_initial_response(MECHANISM, scram.first()))
            elif code == m.AUTH_SASL_CONTINUE and scram is not None:
                conn.write(m.password_message(scram.final(body[4:])))
            elif code == m.AUTH_SASL_FINAL and scram is not None:
                scram.verify(body[4:])
            else:
                raise UpstreamError("28000", f"unsupported authentication request {code}")
        elif kind == m.ERROR_RESPONSE:
            fields = m.parse_fields(body)
            raise UpstreamError(fields.get("C", "08006"), fields.get("M", "server error"))
        elif kind == m.PARAMETER_STATUS:
            name, value = m.parse_parameter_status(body)
            conn.params[name] = value
        elif kind == m.BACKEND_KEY_DATA:
            conn.pid, conn.secret = m.read_i32(body, 0), m.read_i32(body, 4)
        elif kind == m.READY_FOR_QUERY:
            conn.status = body[:1]
            conn.startup_params = dict(conn.params)
            return
        # NoticeResponse and NegotiateProtocolVersion need no action here.


async def send_cancel(target: Upstream, pid: int, secret: int, timeout: float) -> None:
    """Ask ``target`` to cancel the query running on backend ``pid`` (fire and forget)."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(target.host, target.port)
        try:
            writer.write(m.cancel_request(pid, secret))
            await writer.drain()
            await reader.read()  # the server closes the connection once it has signalled
        finally:
            writer.close()
