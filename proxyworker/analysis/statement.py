"""The vocabulary of statement analysis: what one SQL statement would do, as plain values.

`StatementInfo` is what the policy engine, the guard and the audit trail read. Everything here
is an immutable value with no behaviour beyond small conveniences, so it can be cached, shared
between sessions and compared in tests. This module must never parse SQL, look at a catalog or
know about sessions: names are reported exactly as written (folded the way the server folds
them), and resolving them against a search_path is the caller's job.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from dataclasses import dataclass

_NO_RELATIONS: frozenset[RelationRef] = frozenset()
_NO_NAMES: frozenset[str] = frozenset()


class AnalysisError(Exception):
    """The statement text cannot be analysed; the caller must deny it (fail closed).

    `message` is the parser's own message when the parser rejected the text; `position` is the
    0-based character offset in the analysed text the parser pointed at, when it did (the wire
    protocol's ErrorResponse `P` field is 1-based).
    """

    def __init__(self, message: str, position: int | None = None) -> None:
        super().__init__(message, position)
        self.message = message
        self.position = position

    def __str__(self) -> str:
        if self.position is None:
            return self.message
        return f"{self.message} (at character {self.position + 1})"


class StatementKind(enum.Enum):
    SELECT = "select"
    INSERT = "insert"
    UPDATE = "update"
    DELETE = "delete"
    MERGE = "merge"
    COPY = "copy"
    DDL = "ddl"  # changes the catalog: CREATE/ALTER/DROP/RENAME/GRANT/TRUNCATE, SELECT INTO
    UTILITY = "utility"  # VACUUM, LOCK, SHOW, LISTEN, DISCARD, REFRESH MATERIALIZED VIEW ...
    TRANSACTION = "transaction"
    SET = "set"
    DO = "do"
    CALL = "call"
    EXPLAIN = "explain"
    PREPARE = "prepare"
    EXECUTE = "execute"
    DEALLOCATE = "deallocate"
    DECLARE = "declare"
    FETCH = "fetch"  # FETCH and MOVE
    CLOSE = "close"
    OTHER = "other"


class TransactionOp(enum.Enum):
    BEGIN = "begin"  # BEGIN, START TRANSACTION
    COMMIT = "commit"  # COMMIT, END
    ROLLBACK = "rollback"  # ROLLBACK, ABORT
    SAVEPOINT = "savepoint"
    RELEASE = "release"
    ROLLBACK_TO = "rollback_to"
    PREPARE_TRANSACTION = "prepare_transaction"
    COMMIT_PREPARED = "commit_prepared"
    ROLLBACK_PREPARED = "rollback_prepared"


@dataclass(frozen=True, slots=True)
class RelationRef:
    """A relation name as the server's parser sees it, before search_path resolution.

    Folded like the server folds identifiers: unquoted names lower-cased, quoted names kept,
    U&"..." escapes decoded, truncated to 63 bytes on a UTF-8 character boundary. `schema` is
    None when the statement did not qualify the name.
    """

    schema: str | None
    name: str

    def __str__(self) -> str:
        return self.name if self.schema is None else f"{self.schema}.{self.name}"


@dataclass(frozen=True, slots=True)
class SettingChange:
    """A run-time parameter change made by SET, RESET, DISCARD ALL or set_config().

    `name` is ASCII-lower-cased (parameter names are case-insensitive); None means every
    parameter (RESET ALL, DISCARD ALL) or, when `exact` is False, a name that is not a constant.
    `value` is the text the server stores (for SET search_path = a, "B" that is `a, "B"`) and is
    None when `reset` is True or the value is not a constant.
    """

    name: str | None
    value: str | None
    is_local: bool = False
    reset: bool = False
    exact: bool = True


@dataclass(frozen=True, slots=True)
class StatementInfo:
    """What one statement would do if the server ran it.

    Effects of statements nested in this one (`body`) are merged into the sets and risk flags
    here, so a policy that only reads the top level errs towards seeing too much. `has_where`,
    `returning` and `executes` describe this statement itself; walk `statements()` to inspect
    nested ones. The row targets of INSERT/UPDATE/DELETE/MERGE/COPY FROM appear in `writes`
    only; a policy that cares about any access to a relation checks `reads | writes`.
    """

    kind: StatementKind
    command: str
    # Relations whose rows may be read, other than as the target of a write.
    reads: frozenset[RelationRef] = _NO_RELATIONS
    # Relations whose rows may be inserted, updated or deleted: DML at any depth (CTEs, rule
    # actions, bodies), MERGE targets, SELECT INTO / CREATE TABLE AS targets, COPY FROM targets.
    writes: frozenset[RelationRef] = _NO_RELATIONS
    # Targets of an UPDATE or DELETE that has no WHERE clause, at any depth.
    writes_without_where: frozenset[RelationRef] = _NO_RELATIONS
    # Relations a DDL or utility command acts on directly: created, altered, renamed (old and
    # new name), dropped, truncated, locked, vacuumed, granted on, referenced by a foreign key.
    # Always a superset of `truncates` and `drops`.
    ddl_targets: frozenset[RelationRef] = _NO_RELATIONS
    truncates: frozenset[RelationRef] = _NO_RELATIONS
    drops: frozenset[RelationRef] = _NO_RELATIONS
    # Every function or procedure called, named as written ("pg_catalog.pg_read_file" or
    # "pg_read_file"), folded like identifiers; trigger functions named by CREATE TRIGGER too.
    functions: frozenset[str] = _NO_NAMES
    # Operators used (a user-defined one calls a function) and types cast to (a cast to a
    # domain runs its CHECK constraints), named as written.
    operators: frozenset[str] = _NO_NAMES
    cast_types: frozenset[str] = _NO_NAMES
    # Functions and procedures created, replaced, altered, renamed, dropped or granted on.
    ddl_routines: frozenset[str] = _NO_NAMES
    # Schemas created, renamed (old and new name), dropped, re-owned or granted on, including
    # GRANT ... ON ALL TABLES IN SCHEMA: each reaches every relation in the schema.
    ddl_schemas: frozenset[str] = _NO_NAMES
    has_where: bool = False  # UPDATE/DELETE: the statement itself has a WHERE clause
    # UPDATE/DELETE: columns its WHERE pins with `column = constant or $n` in a top-level AND
    # (a unique key among them bounds the statement to one row).
    key_columns: frozenset[str] = _NO_NAMES
    upsert: bool = False  # INSERT ... ON CONFLICT DO UPDATE
    returning: bool = False  # INSERT/UPDATE/DELETE/MERGE: the statement itself has RETURNING
    executes: bool = False  # EXPLAIN: ANALYZE makes the explained statement really run
    copy_program: bool = False  # COPY ... PROGRAM runs a shell command on the server
    copy_server_file: bool = False  # COPY reads or writes a file on the server
    cascade: bool = False  # DROP ... CASCADE / TRUNCATE ... CASCADE reach other objects
    # Code will run that cannot be analysed statically: PL/pgSQL EXECUTE of a non-constant
    # string, or a function/DO body in a language other than sql and plpgsql.
    dynamic_sql: bool = False
    settings: tuple[SettingChange, ...] = ()
    transaction_op: TransactionOp | None = None
    # PREPARE/EXECUTE/DEALLOCATE name; also set for EXPLAIN EXECUTE and CREATE TABLE AS EXECUTE.
    # None with command "DEALLOCATE ALL" means every prepared statement.
    prepared_name: str | None = None
    # DECLARE/FETCH/MOVE/CLOSE cursor name; None with command "CLOSE CURSOR ALL" means all.
    portal_name: str | None = None
    # Statements in their own right nested in this one: what EXPLAIN, PREPARE or DECLARE wraps,
    # CREATE RULE actions, and the SQL of function, procedure and DO bodies (PL/pgSQL
    # expressions appear as SELECTs).
    body: tuple[StatementInfo, ...] = ()
    # The statement's own source text; "" for statements nested inside another's tree.
    text: str = ""

    @property
    def fingerprint(self) -> str:
        """pglast fingerprint of the text (computed on demand: only audit needs it)."""
        from .normalize import fingerprint

        return fingerprint(self.text) if self.text else ""

    @property
    def normalized(self) -> str:
        """The text with every literal replaced by $n and comments removed (on demand)."""
        from .normalize import normalize

        return normalize(self.text) if self.text else ""

    @property
    def set_name(self) -> str | None:
        """Name of the last parameter this statement changes, if any."""
        return self.settings[-1].name if self.settings else None

    @property
    def set_value(self) -> str | None:
        """Value of the last parameter change, None if reset, unknown or absent."""
        return self.settings[-1].value if self.settings else None

    def statements(self) -> Iterator[StatementInfo]:
        """This statement and every statement nested in it, depth first."""
        pending = [self]
        while pending:
            info = pending.pop()
            yield info
            pending.extend(reversed(info.body))
