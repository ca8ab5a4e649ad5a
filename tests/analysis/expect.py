"""Helpers shared by the analysis tests: compact relation spelling and exact comparison."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from proxyworker.analysis import (
    RelationRef,
    SettingChange,
    StatementInfo,
    StatementKind,
    analyze,
)

FLAGS = (
    "has_where",
    "returning",
    "executes",
    "copy_program",
    "copy_server_file",
    "cascade",
    "dynamic_sql",
)
RELATION_SETS = ("reads", "writes", "writes_without_where", "ddl_targets", "truncates", "drops")


def rel(spelling: str | RelationRef) -> RelationRef:
    """'schema.name' or 'name' -> RelationRef (for names with dots, pass a RelationRef)."""
    if isinstance(spelling, RelationRef):
        return spelling
    schema, _, name = spelling.rpartition(".")
    return RelationRef(schema or None, name)


def rels(spellings: Iterable[str | RelationRef]) -> frozenset[RelationRef]:
    return frozenset(rel(s) for s in spellings)


def one(sql: str) -> StatementInfo:
    infos = analyze(sql)
    assert len(infos) == 1, f"expected one statement, got {len(infos)}"
    return infos[0]


def effects(info: StatementInfo) -> dict[str, object]:
    """Everything a policy reads from a statement, except texts and bodies."""
    return {
        **{name: getattr(info, name) for name in RELATION_SETS},
        "functions": info.functions,
        "ddl_routines": info.ddl_routines,
        "ddl_schemas": info.ddl_schemas,
        "settings": info.settings,
        **{name: getattr(info, name) for name in FLAGS},
    }


Spelling = str | RelationRef


@dataclass(frozen=True)
class Case:
    """One statement and everything it must report; whatever is not listed must be empty."""

    sql: str
    kind: StatementKind
    command: str
    reads: tuple[Spelling, ...] = ()
    writes: tuple[Spelling, ...] = ()
    unbounded: tuple[Spelling, ...] = ()  # writes_without_where
    ddl: tuple[Spelling, ...] = ()  # ddl_targets besides truncates and drops
    truncates: tuple[Spelling, ...] = ()
    drops: tuple[Spelling, ...] = ()
    functions: tuple[str, ...] = ()
    routines: tuple[str, ...] = ()
    schemas: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    settings: tuple[SettingChange, ...] = ()

    def expected(self) -> dict[str, object]:
        return {
            "reads": rels(self.reads),
            "writes": rels(self.writes),
            "writes_without_where": rels(self.unbounded),
            "ddl_targets": rels(self.ddl + self.truncates + self.drops),
            "truncates": rels(self.truncates),
            "drops": rels(self.drops),
            "functions": frozenset(self.functions),
            "ddl_routines": frozenset(self.routines),
            "ddl_schemas": frozenset(self.schemas),
            "settings": self.settings,
            **{flag: flag in self.flags for flag in FLAGS},
        }


def check(case: Case) -> None:
    info = one(case.sql)
    assert (info.kind, info.command) == (case.kind, case.command)
    assert effects(info) == case.expected()


def case_id(case: Case) -> str:
    return " ".join(case.sql.split())[:60]
