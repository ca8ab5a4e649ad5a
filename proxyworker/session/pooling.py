"""Server connections come and go: linking one to the session, giving it back to the pool
between transactions (transaction mode), and what must follow the client from one server
connection to the next — its session settings, its search_path as the guard resolved names,
its prepared statements under server-side names of their own (``prepared.py``).

Never decides about statements; never writes client bytes except through ``_forward``.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from proxyworker.analysis.names import quote_identifier
from proxyworker.guard.checks import literal
from proxyworker.prepared import PreparedStatements, Renamed
from proxyworker.protocol import messages as m
from proxyworker.protocol.tracker import Action, Expectation, Request
from proxyworker.tasks import spawn
from proxyworker.upstream.connection import ServerConnection, UpstreamError

if TYPE_CHECKING:
    from proxyworker.upstream.pool import Pool

from proxyworker.session.state import (
    CARRIED_SETTINGS,
    STATUS_IDLE,
    Phase,
    SessionState,
    carried_settings,
)

log = logging.getLogger(__name__)


class Pooling(SessionState):
    """Linking, releasing and re-preparing server connections."""

    def _acquire_server(self) -> None:
        assert self.pool is not None and self.transport is not None
        self._acquiring = True
        self.transport.pause_reading()
        spawn(self._acquire(self.pool), name=f"acquire {self.peer}")

    async def _acquire(self, pool: Pool) -> None:
        try:
            server = await pool.acquire(self.params)
        except UpstreamError as exc:
            self._acquiring = False
            self.fatal(exc.sqlstate, f'sqlproxy: database "{self.database}": {exc.message}')
            return
        finally:
            self._acquiring = False
        if self.phase is Phase.CLOSED:
            pool.release(server)
            return
        self._link(server)
        backlog, self._backlog = self._backlog, []
        self._forward(backlog, None)
        if self.transport is not None and not self._server_paused:
            self.transport.resume_reading()

    def _link(self, server: ServerConnection) -> None:
        self.server = server
        if not self.transaction_pooling:
            self.worker.by_backend[server.pid] = self.whole
        else:
            self._carry_settings = True
        if self._tokens:
            server.framer.whole_messages_only()
        server.link(self.whole)
        if self._client_paused and server.transport is not None:
            server.transport.pause_reading()

    def _request_cycle_done(self, server: ServerConnection) -> None:
        """Called when no request is in flight: drain, or give back the server."""
        gate = self.gate
        if (
            gate is not None
            and gate.ddl_pending  # (read here: most cycles call nothing of the gate)
            and server.status == STATUS_IDLE
            and gate.transaction_ended()
        ):
            assert self.pool is not None
            self.pool.catalog.invalidate()
        if self.worker.draining and server.status == STATUS_IDLE and not self._unsynced:
            self.fatal("57P01", "sqlproxy: terminating connection because the worker is stopping")
            return
        if (
            self.transaction_pooling
            and not self._unsynced
            and server.status == STATUS_IDLE
            and self.server is server
        ):
            self._release_server(server)

    def _apply_settings(self, server: ServerConnection) -> None:
        """Transaction mode: make the server's session settings the ones this client set
        (another client may have changed them on this connection, or this client changed
        them on another). Sent ahead of the client's request as a Query of its own, so it is
        in force exactly as a SET the client had sent earlier; its answers are swallowed.
        Nothing to compare, nor any list made, when both carry the same values and no
        search_path is to be set or reset (the common case)."""
        if not server.carried:
            server.carried = carried_settings(server.params)
        path = self._own_search_path()
        same = server.carried == self._carried
        if same and path is None and not server.search_path_changed:
            return
        sets: list[str] = []
        if not same:
            sets = [
                f"SET {name} TO {literal(value)}"
                for name, value in self.settings.items()
                if name in CARRIED_SETTINGS and server.params.get(name) != value
            ]
        if path is not None:
            # search_path is not reported by the server: the guard's view of it is carried,
            # so that names resolve on the server as the guard resolved them.
            sets.append(f"SET search_path TO {', '.join(map(quote_identifier, path))}")
            server.search_path_changed = True
        elif server.search_path_changed:
            sets.append("RESET search_path")
            server.search_path_changed = False
        if sets:
            self.tracker.expect(Request.QUERY, Action.SWALLOW)
            server.write(m.query("; ".join(sets)))

    def _own_search_path(self) -> tuple[str, ...] | None:
        """The search_path the guard follows for this client, when it is not the startup one."""
        gate = self.gate
        if gate is None:
            return None
        path = gate.search_path
        if path is self._startup_path or path == self._startup_path:  # (mostly the same tuple)
            return None
        return path

    def _release_server(self, server: ServerConnection) -> None:
        assert self.pool is not None
        self.server = None
        if self._own_search_path() is not None:
            server.search_path_changed = True
        if self._client_paused and server.transport is not None:
            server.transport.resume_reading()
        if len(server.prepared) > self.pool.max_prepared:
            server.unlink()
            spawn(self.pool.reset_and_release(server, None), name="trim prepared statements")
        else:
            self.pool.release(server)

    def _note_statement_reset(self, view: memoryview, server: ServerConnection) -> None:
        """DISCARD ALL / DEALLOCATE drop server-side statements behind our back."""
        text = bytes(view[5:40]).lower()
        if b"discard" in text or b"deallocate" in text:
            server.prepared.clear()

    def _rename(
        self, kind: int, view: memoryview, server: ServerConnection, statements: PreparedStatements
    ) -> Renamed | None:
        """The message with the client's statement names made server-side ones; None when
        nothing in it is renamed (unnamed statements, Execute, a client with none named)."""
        if kind == m.PARSE:
            return statements.parse(view[5:]) if view[5] else None
        if not statements or kind == m.EXECUTE:
            return None
        body = view[5:]
        if kind == m.BIND:
            renamed = statements.bind(body, server.prepared)
        else:  # Describe or Close
            renamed = statements.describe_or_close(kind, body, server.prepared)
        if renamed.replay:
            # Answered before the message itself: swallowed, the client never sent it.
            self.tracker.expect(Request.PARSE, Action.SWALLOW, renamed.server_name)
        return renamed

    def _parsed(self, conn: ServerConnection, server_name: object, ok: bool) -> None:
        """Transaction mode: the answer to a renamed Parse arrived."""
        assert isinstance(server_name, str) and self._statements is not None
        self._statements.pending.discard(server_name)
        if ok:
            conn.prepared[server_name] = None

    def _skipped(self, skipped: list[Expectation]) -> None:
        for expectation in skipped:
            if expectation.request is Request.PARSE and expectation.tag is not None:
                assert self._statements is not None
                self._statements.pending.discard(str(expectation.tag))
