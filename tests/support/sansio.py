"""A ``ClientSession`` linked to a server connection without sockets, as ``bench/relay.py``:
both transports record what is written. For tests of the session's own logic."""

from __future__ import annotations

from typing import Any

from proxyworker import metrics
from proxyworker.config.events import AuditEvent
from proxyworker.config.loader import loads
from proxyworker.prepared import PreparedStatements
from proxyworker.server import Worker
from proxyworker.session import ClientSession, Phase
from proxyworker.upstream.connection import ServerConnection


class RecordingTransport:
    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | memoryview) -> None:
        self.chunks.append(bytes(data))

    def writelines(self, chunks: list[bytes | memoryview]) -> None:
        self.chunks.append(b"".join(bytes(c) for c in chunks))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def pause_reading(self) -> None: ...
    def resume_reading(self) -> None: ...

    def take(self) -> bytes:
        out, self.chunks = b"".join(self.chunks), []
        return out


def session(
    config: str, database: str = "app"
) -> tuple[ClientSession, ServerConnection, list[AuditEvent]]:
    """A ready session of user "app" on ``database``, its server connection and the audit
    events it emits. In session mode the server is linked; in transaction mode it waits in
    the pool, as the handshake leaves it, for the session's first request."""
    worker = Worker(loads(config))
    events: list[AuditEvent] = []
    worker.audit.emit = events.append  # type: ignore[method-assign]
    client = ClientSession(worker)
    client.transport = RecordingTransport()  # type: ignore[assignment]
    client.phase = Phase.READY
    client.user, client.database = "app", database
    client.pool = pool = worker.pools[database]
    client.policy = worker.policies[database]
    client._labels = metrics.database_labels(database)
    server = ServerConnection(pool.db.upstream, client.pool_key)
    server.transport = RecordingTransport()  # type: ignore[assignment]
    if pool.db.pool_mode == "transaction":
        client.transaction_pooling = True
        client.settings = dict(server.params)
        client._statements = PreparedStatements(1)
        pool.release(server)
    else:
        client._link(server)
    return client, server, events


def sent(server: ServerConnection) -> bytes:
    """What was written to the server since the last call."""
    transport: Any = server.transport
    return bytes(transport.take())


def sent_to_client(client: ClientSession) -> bytes:
    """What was written to the client since the last call."""
    transport: Any = client.transport
    return bytes(transport.take())
