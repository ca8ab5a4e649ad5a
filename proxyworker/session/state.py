"""The state of one client session and what every layer of it uses: writing to the client,
ending it with a FATAL error, running a statement of the worker's own on the server.

Every attribute of a session is set in ``SessionState.__init__``, so the whole state is read in
one place; the layers in the other modules (see ``__init__``) only add behaviour. Nothing here
decides anything about a statement.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Final, Literal, NamedTuple, cast

from mypy_extensions import i64

from proxyworker import metrics
from proxyworker.analysis import StatementInfo
from proxyworker.guard.gate import Gate, Verdict
from proxyworker.guard.rewrite import Modes, Statement, forced_dry_run
from proxyworker.prepared import PreparedStatements
from proxyworker.protocol import messages as m
from proxyworker.protocol.framing import CONTINUATION, Framer
from proxyworker.protocol.tracker import PLAIN, Action, Request, ResponseTracker
from proxyworker.reuse import Fifo
from proxyworker.upstream.connection import ServerConnection

if TYPE_CHECKING:
    from proxyworker.server import Worker
    from proxyworker.session.client import ClientSession
    from proxyworker.upstream.pool import Pool


STATUS_IDLE: Final = b"I"
COPY_IN: Final = frozenset({m.COPY_DATA, m.COPY_DONE, m.COPY_FAIL, CONTINUATION})
_INJECTED: Final = m.cstr("_sqlproxy")
_INJECTED_TAIL: Final = (
    m.message(m.BIND, _INJECTED + _INJECTED + b"\x00\x00\x00\x00\x00\x00")
    + m.message(m.CLOSE, b"S" + _INJECTED)
    + m.message(m.EXECUTE, _INJECTED + b"\x00\x00\x00\x00")
    + m.message(m.CLOSE, b"P" + _INJECTED)
)


def _injection(sql: str) -> bytes:
    """Parse, Bind, Close statement, Execute, Close portal — all under the worker's name."""
    return m.parse("_sqlproxy", sql) + _INJECTED_TAIL


class Kept(NamedTuple):
    """A decision to audit, kept until its request is answered; the AuditEvent is made only
    when it is emitted."""

    decision: Literal["allow", "deny", "alert"]
    rule: str | None
    message: str | None
    protocol: Literal["simple", "extended"]
    time: float
    target: str | None
    """The table a lone write names, for the rows its command tag reports."""
    statements: tuple[StatementInfo, ...]
    """What the event's fingerprint and normalized text are made from."""


AuditSlot = tuple[tuple[Kept, ...], bool] | None
"""Per request in flight: its decisions to audit and whether its command tags and rows are
needed; None when nothing is left to audit (``Guarded._audit_slot``)."""


class AuditQueue:
    """Per request in flight (a Query or Sync sent), in order, its ``AuditSlot``. Most
    requests leave nothing to audit: their None is counted, not stored — a run of them is a
    number, kept with the slot after it — and so are the slots that want their request's
    command tags (``tags``)."""

    __slots__ = ("_size", "_slots", "_stored", "_tail", "_taken", "tags")

    def __init__(self) -> None:
        self._slots: Fifo[tuple[i64, tuple[tuple[Kept, ...], bool]]] = Fifo()
        """Each slot with the number of Nones queued before it."""
        # (Counts as i64: compiled, they are then added without checks for big numbers.)
        self._stored: i64 = 0  # len(_slots)
        self._taken: i64 = 0  # of the Nones before the front slot, how many were taken
        self._tail: i64 = 0  # Nones queued after the last slot
        self._size: i64 = 0
        self.tags: i64 = 0
        """How many slots queued want the command tags (and rows) of their request."""

    def __len__(self) -> int:
        return self._size

    def __iter__(self) -> Iterator[AuditSlot]:
        taken = self._taken
        for before, slot in self._slots:
            yield from [None] * (before - taken)
            yield slot
            taken = 0
        yield from [None] * self._tail

    def skip(self, count: i64) -> None:
        """Queue ``count`` requests that leave nothing to audit."""
        self._tail += count
        self._size += count

    def append(self, slot: AuditSlot) -> None:
        if slot is None:
            self.skip(1)
            return
        self._slots.append((self._tail, slot))
        self._stored += 1
        self._tail = 0
        self._size += 1
        if slot[1]:
            self.tags += 1

    def front_wants_tags(self) -> bool:
        """Does the oldest request in flight want its command tags?"""
        if self.tags == 0:
            return False
        before, slot = self._slots[0]  # (tags: a slot is queued)
        return self._taken == before and slot[1]

    def popleft(self) -> AuditSlot:
        """The oldest request's slot, taken; IndexError when none is in flight."""
        if self._size == 0:
            raise IndexError("no request in flight")
        self._size -= 1
        if self._stored == 0:
            self._tail -= 1
            return None
        before, slot = self._slots[0]
        if self._taken < before:
            self._taken += 1
            return None
        self._slots.popleft()
        self._stored -= 1
        self._taken = 0
        if slot[1]:
            self.tags -= 1
        return slot


# Session settings the server reports (ParameterStatus) that a client may change. In transaction
# mode a client's values are set again on whichever server connection serves it next.
CARRIED_SETTINGS: Final = (
    "application_name",
    "client_encoding",
    "DateStyle",
    "default_transaction_read_only",
    "IntervalStyle",
    "standard_conforming_strings",
    "TimeZone",
)
_CARRIED_NUMBERS: Final[dict[tuple[str | None, ...], int]] = {}
_NEXT_NUMBER: Final = itertools.count(1)


def carried_settings(params: Mapping[str, str]) -> int:
    """A number for the values ``params`` give the carried settings (absent ones too): equal
    numbers, equal values. A client's and its server's are compared by it every transaction
    (``Pooling._apply_settings``). Numbers are never reused; the table of those handed out
    starts again when it is full (equal values may then get a new number: still correct)."""
    values = tuple(params.get(name) for name in CARRIED_SETTINGS)
    number = _CARRIED_NUMBERS.get(values)
    if number is None:
        if len(_CARRIED_NUMBERS) >= 4096:
            _CARRIED_NUMBERS.clear()
        number = _CARRIED_NUMBERS[values] = next(_NEXT_NUMBER)
    return number


class Phase(enum.Enum):
    STARTUP = "startup"
    AUTHENTICATING = "authenticating"
    READY = "ready"
    CLOSED = "closed"


class ClientError(Exception):
    """End the handshake with a FATAL ErrorResponse."""

    def __init__(self, sqlstate: str, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate, self.message, self.detail = sqlstate, message, detail


class SessionState(asyncio.Protocol):
    """Everything a session holds, and the I/O helpers every layer shares."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.phase = Phase.STARTUP
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.address = ""
        self.user = ""
        self.database = ""
        self.application_name = ""
        self.params: dict[str, str] = {}
        self.pool_key = ""
        self.key: tuple[int, int] = (0, 0)
        self.pool: Pool | None = None
        self.server: ServerConnection | None = None
        self.transaction_pooling = False
        self._labels: metrics.DatabaseLabels | None = None
        # handshake input
        self._raw = b""
        self._wakeup: asyncio.Future[None] | None = None
        # relay state
        self.framer = Framer(
            worker.config.listen.max_message_size, frozenset({m.COPY_DATA}), whole=PLAIN
        )
        self._started: Fifo[float] = Fifo()  # when each request in flight was sent
        self._unsynced = False
        self._backlog: list[tuple[int, memoryview]] = []
        self._acquiring = False
        self._client_paused = False
        self._server_paused = False
        self.tracker = ResponseTracker()
        self.gate: Gate | None = None
        self._held: list[memoryview] | None = None  # answers withheld until a check decides
        self._held_bytes = 0
        self._checked_statements: set[str] = set()  # extended: statements needing the check
        # Extended: the verdict of each prepared statement whose every execution is audited
        # (checked, alerting or sampled), and those parsed in the request being sent (their
        # Parse's event stands for the first execution when it is in the same request).
        self._audited_statements: dict[str, Verdict] = {}
        self._parsed_now: set[str] = set()
        self._check_pending = False
        # Dry run and preview (rewrite.py): the switches, the tags rolled back so far, the
        # CommandComplete count of the planned Query being answered, per extended-protocol
        # statement what it was rewritten to and per portal the tag its Execute reports.
        self.modes = Modes(forced=forced_dry_run(worker.config.guard.dry_run))
        self._dry_tags: list[bytes] = []
        self._completes = 0
        self._rewritten: dict[str, Statement] = {}
        self._portal_tags: dict[str, tuple[bytes, bool]] = {}
        self._dry_end_pending = False
        self._preview_open = False  # a preview's savepoint awaits its Execute
        self._bare_gate: Gate | None = None
        self._dry_parsed: set[str] = set()  # statements parsed while a switch was on
        # Honeytoken values with writes outside a transaction block: the worker opens one and
        # decides COMMIT or ROLLBACK once it has seen the answers (rewrite.QueryPlan.decide).
        self._writing: set[str] = set()  # extended: statements that may write
        self._decide_pending = False  # extended: BEGIN sent in this batch, decide at its Sync
        self._deciding = False  # client messages wait until COMMIT/ROLLBACK has been sent
        # Rows changed: per limited table as the check measured them in the open transaction
        # (cumulative), what the request being answered changed (measured; by command tags).
        self._txn_rows: dict[str, int] = {}
        self._request_rows: dict[str, int] = {}
        self._tag_rows = 0
        self.policy = worker.policy
        self._generation = worker.generation
        self._sample_allowed = worker.config.audit.sample_allowed
        """``[audit] sample_allowed`` as of ``_generation`` (configuration follows a session
        between transactions: ``Guarded._follow_config``)."""
        self._forwarded = False  # any request sent yet
        self.settings: dict[str, str] = {}
        """Session settings as this client last saw them reported (ParameterStatus)."""
        self._carried = 0
        """``settings`` as ``carried_settings`` numbers them (kept with ``settings``)."""
        self._readable = False
        """The guard found ``settings`` let it read statement text (``Guarded._text_refusal``);
        cleared whenever ``settings`` change, so they are looked at again."""
        # The last Parse message and what parse_parse made of it, with its text's UTF-8 bytes
        # (Guarded._parse_of; the first is no message, so no message equals it or begins so).
        self._parse_message = b"-"
        self._parse_read: tuple[m.ParseMessage, bytes] = (m.ParseMessage("", "", b""), b"")
        self._plain_names: list[str] = []  # (Guarded._remembered_plain's scratch)
        self._startup_path: tuple[str, ...] = ()
        self._carry_settings = False  # transaction mode: a server was just linked
        self._tokens = worker.policy.honeytoken_values
        self._unit_events: list[Kept] = []  # decisions of the request being sent
        # Per request in flight, what its answer leaves to audit (Guarded._audit_slot).
        self._audit_pending = AuditQueue()
        self._last_tag = b""
        self._guard_refusal: str | None = None  # a refusal raised by the server-side check
        self._server_fatal = False
        self._carry = False  # the server framer held part of a message after the last chunk
        self._poisoned = b""  # the refusal to send at ReadyForQuery, once a value was seen
        self._statements: PreparedStatements | None = None  # transaction mode only

    @property
    def whole(self) -> ClientSession:
        """This session as a whole (the worker and server connections take a ClientSession)."""
        return cast("ClientSession", self)

    def _forward(self, msgs: list[tuple[int, memoryview]], whole: bytes | None) -> None:
        """Send client messages to the linked server (``requests.py``)."""
        raise NotImplementedError

    def _inject(self, sql: str, action: Action) -> bytes:
        """Run ``sql`` in the extended protocol under a statement and portal name of the
        worker's own (the client's unnamed ones stay as they are); only its Execute's answer
        gets ``action``, the rest is swallowed."""
        expect = self.tracker.expect
        for request in (Request.PARSE, Request.BIND, Request.CLOSE):
            expect(request, Action.SWALLOW)
        expect(Request.EXECUTE, action)
        expect(Request.CLOSE, Action.SWALLOW)
        return _injection(sql)

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _close_transport(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def fatal(self, sqlstate: str, message: str, detail: str | None = None) -> None:
        """Send a FATAL error and close the client connection."""
        self._write(m.error_response(sqlstate, message, severity="FATAL", detail=detail))
        self._close_transport()
