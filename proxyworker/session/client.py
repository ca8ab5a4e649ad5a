"""``ClientSession``: the asyncio protocol callbacks of a client connection, the callbacks
its server connection makes (``server_data``, ``server_lost``, ...), and the end of the
connection.
"""

from __future__ import annotations

import asyncio
from typing import cast

from proxyworker import metrics
from proxyworker.policy.network import refused
from proxyworker.session.handshake import Handshake
from proxyworker.session.state import Phase
from proxyworker.tasks import spawn
from proxyworker.upstream.connection import ServerConnection


class ClientSession(Handshake):
    """One client connection (see the package docstring for its layers)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or "local")
        metrics.CLIENT_CONNECTIONS.inc()
        metrics.CLIENTS_ACCEPTED.inc()
        self.worker.sessions.add(self)
        if len(self.worker.sessions) > self.worker.config.listen.max_client_conn:
            metrics.CLIENTS_REFUSED.labels("53300").inc()
            self.fatal("53300", "sqlproxy: too many clients already (listen.max_client_conn)")
            return
        self.address = peer[0] if isinstance(peer, tuple) else ""
        if refused(self.worker.policy.ip_rules, self.address):
            metrics.CLIENTS_REFUSED.labels("ip_rules").inc()
            self.fatal("28000", f"sqlproxy: connection from {self.address} refused by ip_rules")
            return
        spawn(self._handshake(), name=f"handshake {self.peer}")

    def data_received(self, data: bytes) -> None:
        if self.phase is Phase.READY:
            self._client_data(data)
        else:
            self._raw += data
            if self._wakeup is not None and not self._wakeup.done():
                self._wakeup.set_result(None)

    def eof_received(self) -> bool | None:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.phase is Phase.CLOSED:
            return
        self.phase = Phase.CLOSED
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_exception(ConnectionResetError("client disconnected"))
        self._finish()

    def pause_writing(self) -> None:
        # The client reads slower than the server answers: stop reading the server.
        self._client_paused = True
        if self.server is not None and self.server.transport is not None:
            self.server.transport.pause_reading()

    def resume_writing(self) -> None:
        self._client_paused = False
        if self.server is not None and self.server.transport is not None:
            self.server.transport.resume_reading()

    def server_pause_writing(self) -> None:
        self._server_paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def server_resume_writing(self) -> None:
        self._server_paused = False
        if self.transport is not None and not self._acquiring:
            self.transport.resume_reading()

    def server_lost(self, conn: ServerConnection, exc: Exception | None) -> None:
        if conn is not self.server:
            return
        self.server = None
        metrics.ERRORS.labels("server_lost").inc()
        if self._server_fatal:
            self._close_transport()  # the client already has the server's own reason
            return
        reason = f": {exc}" if exc else ""
        self.fatal("08006", f"sqlproxy: server connection was lost{reason}")

    def _finish(self) -> None:
        """The client is gone: return or close the server connection, forget the session."""
        metrics.CLIENT_CONNECTIONS.dec()
        self.worker.unregister(self)
        server, self.server = self.server, None
        if server is None or self.pool is None:
            return
        if self._started or self._unsynced or server.closed:
            # Mid-request: the server is busy with work nobody will read. Do not reuse it.
            server.unlink()
            server.abort()
            return
        reset = None if self.transaction_pooling else self.pool.db.server_reset_query
        spawn(self.pool.reset_and_release(server, reset), name="release server")
