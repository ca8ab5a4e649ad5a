"""The mutable accumulator one statement's analysis fills in, and the hook for nested analysis.

`Effects` exists so the walker can add to plain sets while it walks and `StatementInfo` can stay
frozen; it lives only for the duration of one statement's analysis and must never be shared or
cached. `Nested` is how statement handlers ask for a nested statement or a string of SQL to be
analysed without importing the analyser (which imports them).
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar, cast

from .statement import (
    RelationRef,
    SettingChange,
    StatementInfo,
    StatementKind,
    TransactionOp,
)

# A node of pglast's JSON parse tree: {"NodeType": {fields}} or an inline field struct.
Node = dict[str, Any]


class Nested(Protocol):
    def nested_statement(self, node: Node, text: str) -> StatementInfo:
        """Analyse a raw statement node found inside another statement's tree."""
        ...

    def nested_text(self, sql: str, where: str) -> tuple[StatementInfo, ...]:
        """Analyse SQL text found inside a statement (a body or a constant EXECUTE string)."""
        ...


class Effects:
    __slots__ = (
        "body",
        "cascade",
        "cast_types",
        "copy_program",
        "copy_server_file",
        "ddl_routines",
        "ddl_schemas",
        "ddl_targets",
        "drops",
        "dynamic_sql",
        "executes",
        "functions",
        "has_where",
        "key_columns",
        "operators",
        "portal_name",
        "prepared_name",
        "reads",
        "returning",
        "settings",
        "transaction_op",
        "truncates",
        "upsert",
        "writes",
        "writes_without_where",
    )

    def __init__(self) -> None:
        self.reads: set[RelationRef] = set()
        self.writes: set[RelationRef] = set()
        self.writes_without_where: set[RelationRef] = set()
        self.ddl_targets: set[RelationRef] = set()
        self.truncates: set[RelationRef] = set()
        self.drops: set[RelationRef] = set()
        self.functions: set[str] = set()
        self.ddl_routines: set[str] = set()
        self.ddl_schemas: set[str] = set()
        self.settings: list[SettingChange] = []
        self.body: list[StatementInfo] = []
        self.has_where = False
        self.operators: set[str] = set()
        self.cast_types: set[str] = set()
        self.key_columns: frozenset[str] = frozenset()
        self.upsert = False
        self.returning = False
        self.executes = False
        self.copy_program = False
        self.copy_server_file = False
        self.cascade = False
        self.dynamic_sql = False
        self.transaction_op: TransactionOp | None = None
        self.prepared_name: str | None = None
        self.portal_name: str | None = None

    def add_body(self, info: StatementInfo, *, runs_now: bool) -> None:
        """Record a nested statement and merge what it may do into this one.

        Settings are merged only when the nested statement runs as part of this one (a DO
        block, EXPLAIN ANALYZE): a function body changes settings when called, not when created.
        """
        self.body.append(info)
        self.reads |= info.reads
        self.writes |= info.writes
        self.writes_without_where |= info.writes_without_where
        self.ddl_targets |= info.ddl_targets
        self.truncates |= info.truncates
        self.drops |= info.drops
        self.functions |= info.functions
        self.operators |= info.operators
        self.cast_types |= info.cast_types
        self.ddl_routines |= info.ddl_routines
        self.ddl_schemas |= info.ddl_schemas
        self.copy_program |= info.copy_program
        self.copy_server_file |= info.copy_server_file
        self.cascade |= info.cascade
        self.dynamic_sql |= info.dynamic_sql
        if runs_now:
            self.settings.extend(info.settings)

    def freeze(self, kind: StatementKind, command: str, text: str) -> StatementInfo:
        return StatementInfo(
            kind=kind,
            command=command,
            reads=_frozen(self.reads),
            writes=_frozen(self.writes),
            writes_without_where=_frozen(self.writes_without_where),
            ddl_targets=_frozen(self.ddl_targets | self.truncates | self.drops),
            truncates=_frozen(self.truncates),
            drops=_frozen(self.drops),
            functions=_frozen(self.functions),
            operators=_frozen(self.operators),
            cast_types=_frozen(self.cast_types),
            ddl_routines=_frozen(self.ddl_routines),
            ddl_schemas=_frozen(self.ddl_schemas),
            has_where=self.has_where,
            key_columns=self.key_columns,
            upsert=self.upsert,
            returning=self.returning,
            executes=self.executes,
            copy_program=self.copy_program,
            copy_server_file=self.copy_server_file,
            cascade=self.cascade,
            dynamic_sql=self.dynamic_sql,
            settings=tuple(self.settings),
            transaction_op=self.transaction_op,
            prepared_name=self.prepared_name,
            portal_name=self.portal_name,
            body=tuple(self.body),
            text=text,
        )


_T = TypeVar("_T")
_EMPTY: frozenset[Any] = frozenset()


def _frozen(items: set[_T]) -> frozenset[_T]:
    # Most sets are empty; sharing one empty frozenset keeps cached results small.
    return frozenset(items) if items else cast("frozenset[_T]", _EMPTY)
