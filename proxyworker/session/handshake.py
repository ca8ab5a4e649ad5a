"""Before the relay: SSLRequest (TLS), GSSENCRequest (declined), CancelRequest (routed by the
worker), StartupMessage, SCRAM-SHA-256 client authentication, then the first server connection
and the answer that makes the client ready.

Fails with a FATAL error naming the reason; an unknown user gets a full SCRAM exchange so user
names cannot be probed.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Final

from proxyworker import metrics, sockets
from proxyworker.guard.gate import Gate
from proxyworker.policy.network import refused
from proxyworker.prepared import PreparedStatements
from proxyworker.protocol import messages as m
from proxyworker.protocol.scram import MECHANISM, ScramError, ScramServer, make_verifier
from proxyworker.protocol.startup import (
    CancelRequest,
    GSSEncRequest,
    SSLRequest,
    StartupMessage,
    packet_length,
    parse_startup,
)
from proxyworker.session.requests import Requests
from proxyworker.session.state import ClientError, Phase, carried_settings
from proxyworker.upstream.connection import UpstreamError, pool_key
from proxyworker.upstream.pool import UPSTREAM_ROLE

log = logging.getLogger(__name__)


# Startup parameters that describe the connection rather than the session; not forwarded.
_NOT_FORWARDED: Final = frozenset({"user", "database", "replication"})


_AUTH_MAX_MESSAGE: Final = 16384


class Handshake(Requests):
    """Startup and authentication, as a coroutine reading framed packets."""

    async def _wait_input(self) -> None:
        self._wakeup = asyncio.get_running_loop().create_future()
        try:
            await self._wakeup
        finally:
            self._wakeup = None

    async def _read_packet(self) -> bytes:
        while (length := packet_length(self._raw)) is None or len(self._raw) < length:
            await self._wait_input()
        packet, self._raw = self._raw[:length], self._raw[length:]
        return packet

    async def _read_message(self, expected: int) -> bytes:
        while len(self._raw) < 5:
            await self._wait_input()
        kind, length = m.header(self._raw)
        if kind != expected:
            raise ClientError("08P01", f"expected message {chr(expected)!r}, got {chr(kind)!r}")
        if length < 4 or length > _AUTH_MAX_MESSAGE:
            raise ClientError("08P01", f"invalid message length {length}")
        while len(self._raw) < length + 1:
            await self._wait_input()
        body, self._raw = self._raw[5 : length + 1], self._raw[length + 1 :]
        return body

    async def _handshake(self) -> None:
        try:
            startup = await self._startup()
            if startup is not None:
                await self._attach(startup)
        except ClientError as exc:
            metrics.CLIENTS_REFUSED.labels(exc.sqlstate).inc()
            self.fatal(exc.sqlstate, exc.message, exc.detail)
        except m.MalformedMessage as malformed:  # (a name of its own: docs/compiled.md)
            metrics.CLIENTS_REFUSED.labels("08P01").inc()
            self.fatal("08P01", f"sqlproxy: {malformed}")
        except ConnectionResetError:
            pass

    async def _startup(self) -> StartupMessage | None:
        tls_done = False
        while True:
            packet = parse_startup(await self._read_packet())
            if isinstance(packet, StartupMessage):
                return packet
            if isinstance(packet, CancelRequest):
                await self.worker.cancel(packet.pid, packet.secret)
                self._close_transport()
                return None
            if isinstance(packet, GSSEncRequest):
                self._write(b"N")
            elif isinstance(packet, SSLRequest):
                ctx = self.worker.tls
                if ctx is None or tls_done:
                    self._write(b"N")
                    continue
                if self._raw:
                    raise ClientError("08P01", "received unencrypted data after SSL request")
                assert self.transport is not None
                self.transport = await sockets.start_tls(
                    self.transport, self, ctx, server_side=True, before=b"S"
                )
                tls_done = True

    async def _attach(self, startup: StartupMessage) -> None:
        if self.worker.refusal is not None:
            raise ClientError("57P03", self.worker.refusal)
        params = startup.params
        self.user = params["user"]
        self.database = params.get("database") or self.user
        self.application_name = params.get("application_name", "")
        if params.get("replication", "false").lower() not in ("false", "off", "no", "0"):
            raise ClientError("08P01", "sqlproxy: replication connections are not supported")
        protocol_options = sorted(k for k in params if k.startswith("_pq_."))
        if startup.minor > 0 or protocol_options:
            self._write(m.negotiate_protocol_version(0, protocol_options))
        self.params = {
            k: v for k, v in params.items() if k not in _NOT_FORWARDED and not k.startswith("_pq_.")
        }
        self.pool_key = pool_key(self.params)
        self.phase = Phase.AUTHENTICATING
        self.policy = self.worker.policies.get(self.database, self.worker.policy)
        self._tokens = self.policy.honeytoken_values
        if refused(self.policy.ip_rules, self.address, self.user, self.database):
            raise ClientError(
                "28000",
                f'sqlproxy: connection from {self.address} for user "{self.user}" to database '
                f'"{self.database}" refused by ip_rules',
            )
        await self._scram()
        allowed = self.worker.user_databases.get(self.user)
        if allowed is not None and self.database not in allowed:
            raise ClientError(
                "28000",
                f'sqlproxy: user "{self.user}" may not connect to database "{self.database}"',
            )
        role = self.worker.user_roles.get(self.user)
        if role is not None:  # its own server connections, logged in as that role
            self.params[UPSTREAM_ROLE] = role
            self.pool_key = pool_key(self.params)
        pool = self.worker.pools.get(self.database)
        if pool is None:
            raise ClientError("3D000", f'sqlproxy: database "{self.database}" does not exist')
        self.pool = pool
        self.transaction_pooling = pool.db.pool_mode == "transaction"
        policy = self.policy
        gate = Gate(policy, self.user, self.database, sticky=pool.limited)
        if gate.active:
            self.gate = gate
            if policy.uses_catalog:
                gate.catalog = await pool.catalog.get()
        self._labels = metrics.database_labels(self.database)
        try:
            server = await pool.acquire(self.params)
        except UpstreamError as exc:
            raise ClientError(
                exc.sqlstate, f'sqlproxy: database "{self.database}": {exc.message}', exc.detail
            ) from None
        if self.phase is Phase.CLOSED:
            pool.release(server)
            return
        out = [m.auth_ok()]
        # Transaction mode: what the server said at startup; until the client's first request
        # sets them back, a pooled connection may still carry another client's settings.
        reported = server.startup_params if self.transaction_pooling else server.params
        out += [m.parameter_status(k, v) for k, v in reported.items()]
        self.settings = dict(reported)
        self._carried = carried_settings(self.settings)
        self._readable = False
        if self.gate is not None:
            self._startup_path = self.gate.search_path
        self.key = self.worker.register(self.whole)
        if self.transaction_pooling:
            self._statements = PreparedStatements(self.key[0])
        out.append(m.backend_key_data(*self.key))
        out.append(m.ready_for_query(server.status))
        if self.transaction_pooling:
            pool.release(server)
        else:
            self._link(server)
        self._write(b"".join(out))
        self.phase = Phase.READY
        if self._raw:
            data, self._raw = self._raw, b""
            self._client_data(data)

    async def _scram(self) -> None:
        user = self.worker.users.get(self.user)
        # An unknown user still gets a full exchange, so user names cannot be probed.
        verifier = user if user is not None else make_verifier(secrets.token_hex(16))
        self._write(m.auth_request(m.AUTH_SASL, m.cstr(MECHANISM) + b"\x00"))
        body = await self._read_message(m.PASSWORD)
        mechanism, pos = m.read_cstr(body, 0)
        if mechanism != MECHANISM:
            raise ClientError("28000", f"sqlproxy: unsupported SASL mechanism {mechanism!r}")
        length = m.read_i32(body, pos)
        scram = ScramServer(verifier)
        failed = ClientError("28P01", f'password authentication failed for user "{self.user}"')
        try:
            server_first = scram.first(bytes(body[pos + 4 : pos + 4 + length]))
            self._write(m.auth_request(m.AUTH_SASL_CONTINUE, server_first))
            server_final = scram.final(await self._read_message(m.PASSWORD))
        except ScramError as exc:
            failed.detail = str(exc)
            raise failed from None
        if user is None:
            raise failed
        self._write(m.auth_request(m.AUTH_SASL_FINAL, server_final))
