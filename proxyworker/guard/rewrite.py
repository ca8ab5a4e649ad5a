"""Rebuilding a simple Query around what the guard must add to it, and mapping the answers back.

A *plan* is the text the server runs instead of the client's query string, plus what the
session must do to the answers so the client sees exactly what its own text would have
produced: which CommandCompletes belong to the guard's statements (dropped, by index: every
statement of a query string answers with exactly one CommandComplete until the first error,
after which the server runs nothing more), which ones get another tag, and where the client's
text sits in the rebuilt one (error positions are moved back).

What a plan adds, statement by statement:

- **limit checks** (``Checks``): the baseline before the first statement of every transaction
  the string runs, the check before every COMMIT and at the end (see ``checks.py``). So a
  string with BEGIN/COMMIT is checked before each of its commits.
- **dry run**: COMMIT becomes ROLLBACK (the client sees COMMIT's tag and a NOTICE); a string
  that writes outside a transaction block ends with a statement that raises, so its implicit
  transaction is rolled back (the session turns that error into the NOTICE).
- **preview**: a top-level DELETE/UPDATE runs as ``WITH ... (<it> RETURNING *) SELECT first 5
  rows, exact count``, rolled back (a savepoint inside a transaction block, the dry-run end
  outside one).
- **the worker's own settings** ``SET/RESET/SHOW sqlproxy.dry_run|preview``: answered by a
  statement that does nothing (``DO``) or selects the value, with the tag renamed.

Pure: no I/O, nothing about sockets or sessions beyond the ``Modes`` passed in.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from proxyworker.analysis import StatementInfo, StatementKind, TransactionOp
from proxyworker.guard.checks import literal

DRY_RUN_SQLSTATE = "SP400"
"""Raised by the statement that ends a dry-run string: its implicit transaction rolls back."""
DRY_RUN_END = (
    "DO $sqlproxy$BEGIN RAISE EXCEPTION USING ERRCODE = 'SP400', "
    "MESSAGE = 'sqlproxy dry run: rolled back'; END$sqlproxy$"
)
NOTHING = "DO $sqlproxy$BEGIN END$sqlproxy$"
"""Answers a statement the worker handles itself, in order behind pipelined requests."""
PREVIEW_ROWS = 5
PREVIEW_SAVEPOINT = "sqlproxy_preview"
SETTINGS = ("sqlproxy.dry_run", "sqlproxy.preview")
"""The worker's own per-session switches (answered by the worker, never sent on)."""

_CHAIN = re.compile(r"(?is)\band\s+chain\b")
_SHOW = re.compile(r'(?is)^\s*show\s+"?(sqlproxy\.[a-z_]+)"?\s*$')
_ENDS = (TransactionOp.COMMIT, TransactionOp.ROLLBACK, TransactionOp.PREPARE_TRANSACTION)
# Tags of statements that change nothing worth listing in a dry-run NOTICE.
_QUIET_TAGS = (
    b"SELECT", b"SHOW", b"FETCH", b"MOVE", b"BEGIN", b"START", b"COMMIT", b"ROLLBACK",
    b"SAVEPOINT", b"RELEASE", b"SET", b"RESET", b"DECLARE", b"CLOSE", b"EXPLAIN", b"LISTEN",
    b"UNLISTEN", b"NOTIFY", b"PREPARE", b"DEALLOCATE", b"DISCARD", b"EXECUTE",
)  # fmt: skip


@dataclass(slots=True)
class Modes:
    """The session's dry-run switches, as the statements sent so far left them."""

    dry_run: bool = False
    preview: bool = False
    forced: bool = False
    """The worker runs with --dry-run / [guard] dry_run: the session cannot switch it off."""
    dry_transaction: bool = False
    """The open transaction block ran something under dry run or preview: its COMMIT must
    roll back even if the switch was turned off since."""

    @property
    def active(self) -> bool:
        return self.dry_run or self.preview or self.forced or self.dry_transaction

    def value(self, name: str) -> bool:
        return self.dry_run or self.forced if name == "sqlproxy.dry_run" else self.preview


@dataclass(frozen=True, slots=True)
class Checks:
    """The limit check's statements (``checks.py``) for a string that needs verification."""

    baseline: str
    check: str
    check_immediate: str
    """With SET CONSTRAINTS ALL IMMEDIATE: right before a commit."""


@dataclass(frozen=True, slots=True)
class ProxySetting:
    """``SET/RESET/SHOW sqlproxy.*``: what the worker answers itself."""

    name: str
    value: bool | None  # None: SHOW
    tag: bytes


class SettingRefused(ValueError):
    """A sqlproxy.* statement the worker refuses (unknown name, not on/off, forced mode)."""

    def __init__(self, message: str, sqlstate: str = "22023") -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


def proxy_setting(info: StatementInfo) -> ProxySetting | None:
    """The worker's own setting this statement sets or shows, if it is one."""
    if info.kind is StatementKind.SET and len(info.settings) == 1:
        change = info.settings[0]
        if change.name is None or not change.name.startswith("sqlproxy."):
            return None
        if change.name not in SETTINGS:
            raise SettingRefused(f"unrecognized parameter {change.name}", "42704")
        if change.reset:
            return ProxySetting(change.name, False, b"RESET" if info.command == "RESET" else b"SET")
        word = (change.value or "").strip().lower()
        if word in ("on", "true", "yes", "1"):
            return ProxySetting(change.name, True, b"SET")
        if word in ("off", "false", "no", "0"):
            return ProxySetting(change.name, False, b"SET")
        raise SettingRefused(f"{change.name} takes on or off, not {change.value!r}")
    if info.command == "SHOW" and info.kind is StatementKind.UTILITY:
        found = _SHOW.match(info.text)
        if found is None:
            return None
        name = found.group(1).lower()
        if name not in SETTINGS:
            raise SettingRefused(f"unrecognized parameter {name}", "42704")
        return ProxySetting(name, None, b"SHOW")
    return None


def apply_setting(setting: ProxySetting, modes: Modes) -> str:
    """Apply a SET to ``modes``; returns the statement the server runs in its place."""
    if setting.value is None:
        shown = "on" if modes.value(setting.name) else "off"
        return f"SELECT {literal(shown)}::text AS {_quoted(setting.name)}"
    if setting.name == "sqlproxy.dry_run":
        if modes.forced and not setting.value:
            raise SettingRefused(
                "the worker runs in dry-run mode; it cannot be switched off", "42501"
            )
        modes.dry_run = setting.value
    else:
        modes.preview = setting.value
    return NOTHING


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def previewable(info: StatementInfo) -> bool:
    return info.kind in (StatementKind.UPDATE, StatementKind.DELETE)


def preview_sql(info: StatementInfo) -> str:
    """The first rows a DELETE/UPDATE would change and how many (column sqlproxy_affected)."""
    body = info.text if info.returning else f"{info.text}\nRETURNING *"
    return (
        f"WITH sqlproxy_preview AS ({body}\n) SELECT *, pg_catalog.count(*) OVER () "
        f"AS sqlproxy_affected FROM sqlproxy_preview LIMIT {PREVIEW_ROWS}"
    )


def commit_to_rollback(info: StatementInfo) -> str:
    return "ROLLBACK AND CHAIN" if _CHAIN.search(info.text) else "ROLLBACK"


def is_commit(info: StatementInfo) -> bool:
    return info.transaction_op is TransactionOp.COMMIT and info.command == "COMMIT"


def dry_notice_text(tags: list[bytes]) -> str:
    changed = [t.decode(errors="replace") for t in tags if not t.startswith(_QUIET_TAGS)]
    return (
        f"sqlproxy dry run: {', '.join(changed)} rolled back"
        if changed
        else ("sqlproxy dry run: rolled back")
    )


@dataclass(frozen=True, slots=True)
class QueryPlan:
    sql: str
    drop: frozenset[int] = frozenset()
    """Indexes of the CommandCompletes of the guard's own statements."""
    rename: dict[int, bytes] = field(default_factory=dict)
    """CommandComplete index -> the tag the client sees (COMMIT for a dry-run ROLLBACK)."""
    notice_after: frozenset[int] = frozenset()
    """CommandComplete indexes after which the dry-run NOTICE goes to the client."""
    pieces: tuple[tuple[int, int, int], ...] = ()
    """(start in sql, length, start in the client's text) of each piece of the client's text."""
    hold: bool = False
    """A limit check decides: the answers are withheld until ReadyForQuery."""
    collect: bool = False
    """Dry run: the client's tags are collected for the NOTICE."""
    decide: bool = False
    """The worker opened a transaction block around it (BEGIN first): at its ReadyForQuery
    the session decides between COMMIT and ROLLBACK (a honeytoken value in a RETURNING)."""

    def position(self, sent: int) -> int | None:
        """The client's 1-based error position for one in ``sql`` (None: in the guard's text)."""
        at = sent - 1
        for start, length, client in self.pieces:
            if start <= at < start + length:
                return client + (at - start) + 1
        return None


@dataclass(slots=True)
class _Builder:
    client: str
    parts: list[str] = field(default_factory=list)
    pieces: list[tuple[int, int, int]] = field(default_factory=list)
    drop: set[int] = field(default_factory=set)
    rename: dict[int, bytes] = field(default_factory=dict)
    notice_after: set[int] = field(default_factory=set)
    size: int = 0
    completes: int = 0

    def guard(self, sql: str, tag: bytes | None = None, notice: bool = False) -> None:
        """A statement of the worker's; ``tag``: the client sees its answer under this tag."""
        if tag is None:
            self.drop.add(self.completes)
        else:
            self.rename[self.completes] = tag
        if notice:
            self.notice_after.add(self.completes)
        self._add(sql)

    def client_text(self, start: int, text: str) -> None:
        self.pieces.append((self.size, len(text), start))
        self._add(text)

    def _add(self, sql: str) -> None:
        self.parts.append(sql)
        self.size += len(sql) + 2  # "\n;" between statements: ends a trailing -- comment
        self.completes += 1

    def sql(self) -> str:
        return "\n;".join(self.parts)


def plan_query(
    sql: str,
    statements: tuple[StatementInfo, ...],
    status: bytes,
    checks: Checks | None,
    modes: Modes,
    writes: tuple[bool, ...],
    decide: bool = False,
) -> QueryPlan | None:
    """The plan for a simple Query, or None to forward the client's bytes untouched.

    ``status``: the server's transaction status before it; ``writes``: per statement, whether
    it may change rows; ``decide``: when it may write outside a transaction block, open one
    so the session can still roll it back after seeing the answers. Applies the sqlproxy.*
    settings it meets to ``modes`` (raising SettingRefused for a refused one). Statuses are
    followed statically: after an error the server runs nothing more of the string, so a
    statement only runs in the status the ones before it left."""
    settings = [proxy_setting(info) for info in statements]
    decide = (
        decide
        and status == b"I"
        and not modes.active
        and any(writes)
        and not any(i.kind is StatementKind.TRANSACTION for i in statements)
        and not any(settings)
    )
    if checks is None and not modes.active and not any(settings) and not decide:
        return None
    b = _Builder(sql)
    if decide:
        b.guard("BEGIN")
        status = b"T"
    cursor = 0
    in_block = status != b"I"  # inside a transaction block (T, or E: failed)
    failed = status == b"E"
    need_baseline = checks is not None
    since_boundary = False  # a statement ran in this transaction segment
    wrote = False  # ... one that may write, outside a block (dry run must roll it back)
    dry_block = modes.dry_transaction
    collect = modes.active
    for info, setting, may_write in zip(statements, settings, writes, strict=True):
        start = sql.find(info.text, cursor)
        if start < 0:  # cannot happen: texts are slices of sql, in order
            start = cursor
        cursor = start + len(info.text)
        op = info.transaction_op if info.kind is StatementKind.TRANSACTION else None
        if setting is not None:
            b.guard(apply_setting(setting, modes), tag=setting.tag)
            collect = collect or modes.active
            continue
        dry = modes.dry_run or modes.forced or modes.preview
        if op is None:
            if checks is not None and need_baseline:
                b.guard(checks.baseline)
                need_baseline = False
            since_boundary = True
            if dry and in_block:
                dry_block = True
            if dry and previewable(info) and modes.preview:
                if in_block and not failed:
                    b.guard(f"SAVEPOINT {PREVIEW_SAVEPOINT}")
                    b.client_text(start, preview_sql(info))
                    b.guard(f"ROLLBACK TO SAVEPOINT {PREVIEW_SAVEPOINT}")
                    b.guard(f"RELEASE SAVEPOINT {PREVIEW_SAVEPOINT}")
                else:
                    b.client_text(start, preview_sql(info))
                    wrote = True
                continue
            if dry and may_write and not in_block:
                wrote = True
            b.client_text(start, info.text)
            continue
        # Transaction control.
        commits = op is TransactionOp.PREPARE_TRANSACTION or is_commit(info)
        if commits and not failed and since_boundary and checks is not None:
            b.guard(checks.check_immediate)
        if op is TransactionOp.PREPARE_TRANSACTION and (dry or dry_block):
            raise SettingRefused("PREPARE TRANSACTION would keep a dry-run transaction", "42501")
        if is_commit(info) and not failed and (dry or dry_block or wrote):
            # COMMIT (or END) rolls back; the client sees COMMIT and what was rolled back.
            b.guard(commit_to_rollback(info), tag=b"COMMIT", notice=True)
            wrote = False
        else:
            b.client_text(start, info.text)
        chain = op in _ENDS and bool(_CHAIN.search(info.text))
        if op is TransactionOp.BEGIN:
            in_block = True
        elif op in _ENDS:
            in_block, failed, dry_block = chain, False, dry_block and chain
            wrote = False
        elif op is TransactionOp.ROLLBACK_TO:
            failed = False
        if op is TransactionOp.BEGIN or op in _ENDS:
            need_baseline = checks is not None
            since_boundary = False
    if checks is not None and since_boundary and not failed:
        b.guard(checks.check if in_block and not decide else checks.check_immediate)
    if wrote:
        b.guard(DRY_RUN_END)  # its error becomes the NOTICE
    modes.dry_transaction = dry_block if in_block else False
    return QueryPlan(
        sql=b.sql(),
        drop=frozenset(b.drop),
        rename=b.rename,
        notice_after=frozenset(b.notice_after),
        pieces=tuple(b.pieces),
        hold=checks is not None,
        collect=collect,
        decide=decide,
    )


FINISH = QueryPlan("", drop=frozenset({0}))
"""The COMMIT or ROLLBACK the session sends after a decided plan: its CommandComplete is the
worker's; an error (a deferred constraint failing at COMMIT) and ReadyForQuery go out."""
DECIDE = QueryPlan("", decide=True)
"""The Sync of an extended-protocol batch the worker put in a block (BEGIN at its Bind)."""


@dataclass(frozen=True, slots=True)
class Statement:
    """What an extended-protocol statement (one Parse) becomes under the worker's switches."""

    sql: str | None
    """The text its Parse carries instead (None: the client's own)."""
    tag: tuple[bytes, bool] | None = None
    """The tag its Execute's CommandComplete shows, and whether the dry-run NOTICE follows."""
    writes: bool = False
    """It may change rows under dry run or preview: what it did must be rolled back (the
    batch's implicit transaction at the Sync, or the savepoint of a preview in a block)."""
    preview: bool = False


def plan_statement(
    statements: tuple[StatementInfo, ...], status: bytes, modes: Modes, writes: tuple[bool, ...]
) -> Statement | None:
    """The extended-protocol counterpart of ``plan_query`` for the one statement of a Parse;
    None when it goes through as it is."""
    if len(statements) != 1:
        return None
    (info,) = statements
    setting = proxy_setting(info)
    if setting is not None:
        return Statement(apply_setting(setting, modes), (setting.tag, False))
    dry = modes.dry_run or modes.forced or modes.preview
    if info.kind is StatementKind.TRANSACTION:
        if info.transaction_op is TransactionOp.PREPARE_TRANSACTION and (
            dry or modes.dry_transaction
        ):
            raise SettingRefused("PREPARE TRANSACTION would keep a dry-run transaction", "42501")
        if is_commit(info) and status != b"E" and (dry or modes.dry_transaction):
            return Statement(commit_to_rollback(info), (b"COMMIT", True))
        return None
    if dry and modes.preview and previewable(info):
        return Statement(preview_sql(info), writes=True, preview=True)
    if dry and writes[0]:
        return Statement(None, writes=True)
    return None


def notice(message: str) -> bytes:
    """A NoticeResponse from the worker (severity NOTICE, SQLSTATE 00000)."""
    body = b"SNOTICE\x00VNOTICE\x00C00000\x00M" + message.encode() + b"\x00\x00"
    return _message(b"N", body)


def _message(kind: bytes, body: bytes) -> bytes:
    return kind + (len(body) + 4).to_bytes(4, "big") + body


def dry_notice(tags: list[bytes]) -> bytes:
    """The NOTICE that tells the client what its dry run rolled back (and forgets the tags)."""
    text = dry_notice_text(tags)
    tags.clear()
    return notice(text)


def forced_dry_run(configured: bool) -> bool:
    """``[guard] dry_run``, or ``python -m proxyworker --dry-run`` (which the command line
    passes to every worker process in the environment, as SQLPROXY_DRY_RUN=1)."""
    return configured or os.environ.get("SQLPROXY_DRY_RUN") == "1"
