"""Transaction pooling: a client's named prepared statements on whichever server it gets.

A client statement gets a server-side name unique to the client (``_sqlp<pid>_<n>``), so two
clients sharing a server connection never collide. Bind, Describe and Close are renamed on the
way. When the client lands on a server connection that has not prepared the statement yet, the
client's Parse is replayed just before first use (and its ParseComplete swallowed: the caller
records it as a SWALLOW expectation). Sans-io: this only builds bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from proxyworker.protocol import messages as m


@dataclass(frozen=True, slots=True)
class Renamed:
    message: bytes | None
    """The renamed message, or None to forward the original bytes."""
    replay: bytes = b""
    """A Parse to send first (its answer must be swallowed)."""
    server_name: str = ""


class PreparedStatements:
    __slots__ = ("_owner", "_seq", "_statements", "pending")

    def __init__(self, owner: int) -> None:
        self._owner = owner
        self._seq = 0
        self._statements: dict[str, tuple[str, bytes]] = {}  # client name -> (server name, Parse)
        self.pending: set[str] = set()
        """Server names whose Parse is on its way and not answered yet."""

    def __len__(self) -> int:
        """Named statements the client has."""
        return len(self._statements)

    def server_names(self) -> list[str]:
        return [name for name, _ in self._statements.values()]

    def parse(self, body: memoryview) -> Renamed:
        parsed = m.parse_parse(body)
        if not parsed.name:
            return Renamed(None)
        self._seq += 1
        server_name = f"_sqlp{self._owner}_{self._seq}"
        parse = m.parse(server_name, parsed.sql, parsed.param_types)
        self._statements[parsed.name] = (server_name, parse)
        self.pending.add(server_name)
        return Renamed(parse, b"", server_name)

    def bind(self, body: memoryview, prepared: dict[str, None]) -> Renamed:
        portal, name, rest = m.split_bind(body)
        if not name or name not in self._statements:
            return Renamed(None)
        server_name, replay = self._use(name, prepared)
        bind = m.message(m.BIND, m.cstr(portal) + m.cstr(server_name) + bytes(body[rest:]))
        return Renamed(bind, replay, server_name)

    def describe_or_close(self, kind: int, body: memoryview, prepared: dict[str, None]) -> Renamed:
        target, name = m.parse_target(body)
        if target != ord("S") or not name or name not in self._statements:
            return Renamed(None)
        if kind == m.CLOSE:
            server_name, _ = self._statements.pop(name)
            prepared.pop(server_name, None)
            return Renamed(m.message(m.CLOSE, b"S" + m.cstr(server_name)))
        server_name, replay = self._use(name, prepared)
        return Renamed(m.message(m.DESCRIBE, b"S" + m.cstr(server_name)), replay, server_name)

    def _use(self, name: str, prepared: dict[str, None]) -> tuple[str, bytes]:
        server_name, parse = self._statements[name]
        if server_name in prepared:
            prepared[server_name] = prepared.pop(server_name)  # least recently used goes first
            return server_name, b""
        if server_name in self.pending:
            return server_name, b""
        self.pending.add(server_name)
        return server_name, parse
