"""Real client drivers run one SQL text and report everything the client received.

`Tap` is a TCP relay in front of the server (the worker or PostgreSQL itself) that keeps every
byte sent back to the client, so "no secret reached the client" is checked on the wire, not
only on what a driver chose to surface (psycopg drops earlier result sets when a later
statement fails). Each driver also reports what it decoded: rows (bytea decoded to bytes),
command tags, COPY data, notices, the error, and ParameterStatus values.

Drivers and protocols:

- ``simple``   psycopg ClientCursor: the whole text as one Query message.
- ``extended`` psycopg with prepare=True: each statement as Parse/Bind/Execute.
- ``asyncpg``  asyncpg fetch(): each statement as Parse/Describe/Bind/Execute.
- ``psql``     the server's own client, the whole text as one Query (``-c``).

The extended drivers send a multi-statement text one statement at a time, inside a
transaction when the text does not manage transactions itself (a simple Query runs as one
implicit transaction, and limits count per transaction). COPY goes through each driver's COPY
API, which psycopg and asyncpg send as a simple Query.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import pglast
import psycopg
from pglast.parser import parse_sql_json

# A session that has not finished within this many seconds is cut off by its tap, so a case
# the worker never answers fails in seconds with a clear message instead of hanging the run.
SESSION_TIMEOUT = 15.0


@dataclass
class Received:
    """What one run of an SQL text delivered to the client."""

    rows: list[tuple[Any, ...]] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    copy_out: bytes = b""
    notices: list[dict[str, str]] = field(default_factory=list)
    error: dict[str, str] | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    wire: bytes = b""
    elapsed: float = 0.0

    def haystack(self) -> str:
        """All of it as text: wire bytes, hex-decoded bytea, decoded values, notices, error."""
        parts = [self.wire.decode("utf-8", "replace"), self.copy_out.decode("utf-8", "replace")]
        for match in re.finditer(rb"\\x((?:[0-9a-fA-F]{2})+)", self.wire + self.copy_out):
            parts.append(bytes.fromhex(match.group(1).decode()).decode("utf-8", "replace"))
        parts += [_text(value) for row in self.rows for value in row]
        parts += [v for notice in self.notices for v in notice.values()]
        parts += list((self.error or {}).values()) + list(self.parameters.values())
        return "\n".join(parts)

    def outcome(self) -> dict[str, Any]:
        """What a benign statement must return identically directly and through the worker."""
        return {
            "rows": [tuple(_comparable(v) for v in row) for row in self.rows],
            "statuses": self.statuses,
            "copy_out": self.copy_out,
            "error": None if self.error is None else self.error.get("sqlstate"),
        }


def _text(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _comparable(value: Any) -> Any:
    # asyncpg and psycopg agree on most types; keep bytes as bytes and the rest as text.
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return value if value is None or isinstance(value, bool | int | str) else str(value)


# -- the tap -------------------------------------------------------------------------------


class Tap:
    """A loopback relay to 127.0.0.1:`target` recording what the server side sends; it cuts
    every connection after SESSION_TIMEOUT seconds (`cut` tells)."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.cut = False
        self._watchdog = threading.Timer(SESSION_TIMEOUT, self._cut)
        self._watchdog.daemon = True
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self._received = bytearray()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, name="tap accept", daemon=True)
        self._accepter.start()
        self._watchdog.start()

    def _cut(self) -> None:
        self.cut = True
        self._shutdown()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()  # the server is gone: the client sees the connection drop
                continue
            self._sockets += [client, server]
            for src, dst, record in ((client, server, False), (server, client, True)):
                thread = threading.Thread(
                    target=self._pump, args=(src, dst, record), name="tap pump", daemon=True
                )
                self._threads.append(thread)
                thread.start()

    def _pump(self, src: socket.socket, dst: socket.socket, record: bool) -> None:
        try:
            while data := src.recv(65536):
                if record:  # before forwarding: whatever the client saw is already recorded
                    with self._lock:
                        self._received += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def received(self) -> bytes:
        with self._lock:
            return bytes(self._received)

    def _shutdown(self) -> None:
        # shutdown() wakes threads blocked in accept()/recv(); close() alone would not.
        for sock in [self.listener, *self._sockets]:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._watchdog.cancel()
        self._shutdown()
        for sock in [self.listener, *self._sockets]:
            sock.close()
        for thread in self._threads:
            thread.join(5)
        self._accepter.join(5)


# -- statements ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Statement:
    text: str
    kind: str  # the parse tree's node type: SelectStmt, CopyStmt, TransactionStmt ...
    copy: str | None  # "out" for COPY ... TO STDOUT, "in" for COPY ... FROM STDIN

    @property
    def transaction_control(self) -> bool:
        return self.kind == "TransactionStmt"


def statements(text: str) -> list[Statement]:
    out = []
    for piece in pglast.split(text):
        [(kind, fields)] = json.loads(parse_sql_json(piece))["stmts"][0]["stmt"].items()
        copy = None
        if kind == "CopyStmt" and "filename" not in fields and not fields.get("is_program"):
            copy = "in" if fields.get("is_from") else "out"
        out.append(Statement(piece, kind, copy))
    return out


def needs_wrapper(stmts: Sequence[Statement]) -> bool:
    """A multi-statement text sent piecewise must stay one transaction, as a Query would be."""
    return len(stmts) > 1 and not any(s.transaction_control for s in stmts)


# -- sessions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """Who the client logs in as, and to which database (the port is the tap's)."""

    dbname: str
    user: str
    password: str | None

    def dsn(self, port: int) -> str:
        password = f" password={self.password}" if self.password else ""
        return (
            f"host=127.0.0.1 port={port} dbname={self.dbname} user={self.user}"
            f"{password} sslmode=disable connect_timeout=10"
        )


class Session:
    """One client connection through a tap. `run` sends an SQL text; `query` runs a follow-up
    statement on the same connection (after rolling back a failed transaction, as a real
    client must); `alive` checks the connection still answers."""

    def __init__(self, tap: Tap) -> None:
        self.tap = tap

    def run(self, text: str, copy_data: bytes | None = None) -> Received:
        received = Received()
        offset = len(self.tap.received())  # earlier traffic on this session is not the text's
        started = time.monotonic()
        try:
            self._run(text, copy_data, received)
        except Exception:
            if not self.tap.cut:
                raise
        finally:
            received.elapsed = time.monotonic() - started
            if self.tap.cut:
                received.error = _cut_off()
            else:
                received.parameters = self._parameters()
            received.wire = self.tap.received()[offset:]
        return received

    def _run(self, text: str, copy_data: bytes | None, received: Received) -> None:
        raise NotImplementedError

    def _parameters(self) -> dict[str, str]:
        return {}

    def query(self, text: str) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def alive(self) -> bool:
        return [tuple(r) for r in self.query("SELECT 1")] == [(1,)]

    def close(self) -> None:
        self.tap.close()


def _cut_off() -> dict[str, str]:
    message = f"no answer within {SESSION_TIMEOUT:.0f}s: the test cut the connection"
    return {"sqlstate": "", "severity": "", "message": message, "detail": "", "hint": ""}


def _diag(diag: psycopg.errors.Diagnostic) -> dict[str, str]:
    fields = {
        "sqlstate": diag.sqlstate,
        "severity": diag.severity,
        "message": diag.message_primary,
        "detail": diag.message_detail,
        "hint": diag.message_hint,
        "context": diag.context,
        "internal_query": diag.internal_query,
    }
    return {key: value or "" for key, value in fields.items()}


class PsycopgSession(Session):
    def __init__(self, tap: Tap, endpoint: Endpoint, *, extended: bool) -> None:
        super().__init__(tap)
        self.extended = extended
        factory = psycopg.Cursor if extended else psycopg.ClientCursor
        self.conn = psycopg.connect(
            endpoint.dsn(tap.port),
            autocommit=True,
            cursor_factory=factory,
        )
        self._received: Received | None = None
        self.conn.add_notice_handler(self._notice)

    def _notice(self, diag: psycopg.errors.Diagnostic) -> None:
        if self._received is not None:
            self._received.notices.append(_diag(diag))

    def _run(self, text: str, copy_data: bytes | None, received: Received) -> None:
        self._received = received
        stmts = statements(text)
        try:
            if not self.extended and not any(s.copy for s in stmts):
                self._execute(text, received, prepare=False)
            elif needs_wrapper(stmts):
                with self.conn.transaction():
                    for stmt in stmts:
                        self._statement(stmt, copy_data, received)
            else:
                for stmt in stmts:
                    self._statement(stmt, copy_data, received)
        except psycopg.Error as exc:
            received.error = _diag(exc.diag)

    def _statement(self, stmt: Statement, copy_data: bytes | None, received: Received) -> None:
        if stmt.copy is None:
            self._execute(stmt.text, received, prepare=self.extended)
            return
        with self.conn.cursor() as cur:
            with cur.copy(stmt.text) as copy:
                if stmt.copy == "in":
                    copy.write(copy_data or b"")
                else:
                    received.copy_out += b"".join(bytes(chunk) for chunk in copy)
            received.statuses.append(cur.statusmessage or "")

    def _execute(self, text: str, received: Received, *, prepare: bool) -> None:
        with self.conn.cursor() as cur:
            cur.execute(text, prepare=prepare)
            while True:
                if cur.description is not None:
                    received.rows += [tuple(r) for r in cur.fetchall()]
                received.statuses.append(cur.statusmessage or "")
                if not cur.nextset():
                    break

    def _parameters(self) -> dict[str, str]:
        names = ("application_name", "session_authorization", "search_path", "is_superuser")
        return {n: self.conn.info.parameter_status(n) or "" for n in names}

    def _recover(self) -> None:
        if self.conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            self.conn.execute("ROLLBACK")

    def query(self, text: str) -> list[tuple[Any, ...]]:
        self._recover()
        return [tuple(r) for r in self.conn.execute(text).fetchall()]

    def close(self) -> None:
        try:
            self.conn.close()
        finally:
            super().close()


def _pg_message(exc: Any) -> dict[str, str]:
    """Fields of an asyncpg error or log message, named as _diag() names psycopg's."""
    names = ("sqlstate", "severity", "message", "detail", "hint", "context", "internal_query")
    return {name: str(getattr(exc, name, "") or "") for name in names}


class AsyncpgSession(Session):
    def __init__(self, tap: Tap, endpoint: Endpoint) -> None:
        super().__init__(tap)
        self.loop = asyncio.new_event_loop()
        self._received: Received | None = None
        self.conn: asyncpg.Connection = self.loop.run_until_complete(
            asyncpg.connect(
                host="127.0.0.1",
                port=tap.port,
                user=endpoint.user,
                password=endpoint.password,
                database=endpoint.dbname,
                ssl=False,
                timeout=10,
            )
        )
        self.conn.add_log_listener(self._notice)

    def _notice(self, conn: Any, message: Any) -> None:
        if self._received is not None:
            self._received.notices.append(_pg_message(message))

    def _wait(self, coro: Any) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coro, 60))

    def _run(self, text: str, copy_data: bytes | None, received: Received) -> None:
        self._received = received
        try:
            self._wait(self._run_async(statements(text), copy_data, received))
        except asyncpg.PostgresError as exc:
            received.error = _pg_message(exc)

    async def _run_async(
        self, stmts: list[Statement], copy_data: bytes | None, received: Received
    ) -> None:
        if needs_wrapper(stmts):
            async with self.conn.transaction():
                for stmt in stmts:
                    await self._statement(stmt, copy_data, received)
        else:
            for stmt in stmts:
                await self._statement(stmt, copy_data, received)

    async def _statement(
        self, stmt: Statement, copy_data: bytes | None, received: Received
    ) -> None:
        # asyncpg's public COPY helpers build their own COPY statement; the private ones run
        # the statement as written, which is the point here.
        if stmt.copy == "out":
            chunks: list[bytes] = []

            async def sink(data: bytes) -> None:
                chunks.append(bytes(data))

            status = await self.conn._copy_out(stmt.text, sink, None)
            received.copy_out += b"".join(chunks)
            received.statuses.append(str(status))
        elif stmt.copy == "in":

            async def source() -> Any:
                yield copy_data or b""

            received.statuses.append(str(await self.conn._copy_in(stmt.text, source(), None)))
        else:
            received.rows += [tuple(r) for r in await self.conn.fetch(stmt.text)]

    def _parameters(self) -> dict[str, str]:
        settings = self.conn.get_settings()
        names = ("application_name", "session_authorization", "search_path", "is_superuser")
        return {n: str(getattr(settings, n, "") or "") for n in names}

    def query(self, text: str) -> list[tuple[Any, ...]]:
        async def go() -> list[tuple[Any, ...]]:
            if self.conn.is_in_transaction():
                await self.conn.execute("ROLLBACK")
            return [tuple(r) for r in await self.conn.fetch(text)]

        return list(self._wait(go()))

    def close(self) -> None:
        try:
            self._wait(self.conn.close(timeout=5))
        except Exception:
            self.conn.terminate()
        finally:
            self.loop.close()
            super().close()


class PsqlSession(Session):
    """psql has no API: `run_script` runs the text, a ROLLBACK, then each follow-up query in
    one psql process, framing each part's stdout and stderr with markers."""

    MARK = "guard-mark"

    def __init__(self, tap: Tap, endpoint: Endpoint) -> None:
        super().__init__(tap)
        self.endpoint = endpoint

    def run_script(
        self, text: str, copy_data: bytes | None, followups: Sequence[str]
    ) -> tuple[Received, list[list[tuple[str, ...]]], list[dict[str, str] | None]]:
        """Received for the text; then rows and error of each follow-up (and a final
        SELECT 1 as the last one)."""
        args = ["-c", text]
        for query in ["ROLLBACK", *followups, "SELECT 1"]:
            args += ["-c", f"\\echo {self.MARK}", "-c", f"\\warn {self.MARK}", "-c", query]
        env = {**os.environ, "PGSSLMODE": "disable"}
        if self.endpoint.password:
            env["PGPASSWORD"] = self.endpoint.password
        started = time.monotonic()
        proc = subprocess.run(
            [
                "psql", "-X", "-q", "-At", "-v", "VERBOSITY=verbose", "-h", "127.0.0.1",
                "-p", str(self.tap.port), "-U", self.endpoint.user, "-d", self.endpoint.dbname,
                *args,
            ],
            input=copy_data or b"", capture_output=True, timeout=SESSION_TIMEOUT + 30, env=env,
        )  # fmt: skip
        received = Received(elapsed=time.monotonic() - started)
        if self.tap.cut:
            received.error = _cut_off()
            received.wire = self.tap.received()
            return received, [[] for _ in [*followups, 1]], [None for _ in [*followups, 1]]
        marker = re.compile(rf"^{self.MARK}\n", flags=re.M)
        out = marker.split(proc.stdout.decode("utf-8", "replace"))
        err = marker.split(proc.stderr.decode("utf-8", "replace"))
        assert len(out) == len(err) == len(followups) + 3, (proc.stdout, proc.stderr)
        received.rows = _psql_rows(out[0])
        received.error, received.notices = _parse_psql_stderr(err[0])
        received.wire = self.tap.received()
        results = [_psql_rows(part) for part in out[2:]]
        errors = [_parse_psql_stderr(part)[0] for part in err[2:]]
        return received, results, errors


def _psql_rows(text: str) -> list[tuple[str, ...]]:
    return [tuple(line.split("|")) for line in text.splitlines()]


_PSQL_MESSAGE = re.compile(
    r"^(ERROR|FATAL|PANIC|WARNING|NOTICE|INFO|LOG|DEBUG):  (?:([0-9A-Z]{5}): )?(.*)$"
)


def _parse_psql_stderr(stderr: str) -> tuple[dict[str, str] | None, list[dict[str, str]]]:
    """psql -v VERBOSITY=verbose: 'ERROR:  42501: message' then DETAIL:/HINT:/CONTEXT: lines;
    the first error is the one returned."""
    messages: list[dict[str, str]] = []
    for line in stderr.splitlines():
        found = _PSQL_MESSAGE.match(line)
        if found:
            severity, code, text = found.groups()
            messages.append({"severity": severity, "sqlstate": code or "", "message": text})
        elif messages and ":  " in line:
            key, _, value = line.partition(":  ")
            messages[-1][key.strip().lower()] = value
        elif messages:
            messages[-1]["message"] += "\n" + line
    errors = [m for m in messages if m["severity"] in ("ERROR", "FATAL", "PANIC")]
    notices = [m for m in messages if m["severity"] not in ("ERROR", "FATAL", "PANIC")]
    return (errors[0] if errors else None), notices


def open_session(driver: str, target: int, endpoint: Endpoint) -> Session:
    """A session of `driver` logged in as `endpoint` on port `target`, through a new tap."""
    tap = Tap(target)
    try:
        if driver in ("simple", "extended"):
            return PsycopgSession(tap, endpoint, extended=driver == "extended")
        if driver == "asyncpg":
            return AsyncpgSession(tap, endpoint)
        if driver == "psql":
            return PsqlSession(tap, endpoint)
    except BaseException:
        tap.close()
        raise
    tap.close()
    raise ValueError(f"unknown driver {driver!r}")
