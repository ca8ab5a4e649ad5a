"""The static path: proving from the catalog that a statement cannot take any limited table
over its limit, so it needs no verification and costs nothing at run time.

Proven safe: a single INSERT, UPDATE or DELETE (no nested statements, no dynamic SQL, only
built-ins that cannot write, no ON CONFLICT DO UPDATE) whose target is a plain table without
triggers (foreign keys are triggers) or rules, reading only tables, and — when the target is
limited — an UPDATE/DELETE whose WHERE pins a unique key (one row at most, limit ≥ 1).
Anything else goes to the verified path. Never allows what verification would refuse.
"""

from __future__ import annotations

from collections.abc import Sequence

from proxyworker.analysis import RelationRef, StatementInfo, StatementKind
from proxyworker.guard.catalog import Catalog, Relation
from proxyworker.guard.checks import LimitedTable
from proxyworker.policy.tables import TableLimits

_DML = (StatementKind.INSERT, StatementKind.UPDATE, StatementKind.DELETE)
_READABLE = ("r", "p", "m")  # views ("v") may call functions: not provable here


def resolve(
    ref: RelationRef, names: dict[tuple[str, str], Relation], path: Sequence[str]
) -> Relation | None:
    if ref.schema is not None:
        return names.get((ref.schema, ref.name))
    for schema in path:
        found = names.get((schema, ref.name))
        if found is not None:
            return found
    return None


def provably_bounded(
    statements: Sequence[StatementInfo],
    catalog: Catalog,
    names: dict[tuple[str, str], Relation],
    limits: TableLimits,
    sticky: dict[int, LimitedTable],
    path: Sequence[str],
) -> bool:
    for info in statements:
        if info.kind not in _DML or info.body or info.dynamic_sql or info.upsert:
            return False
        if any(f.removeprefix("pg_catalog.") not in catalog.safe_functions for f in info.functions):
            return False
        if len(info.writes) != 1:
            return False
        (target_ref,) = info.writes
        target = resolve(target_ref, names, path)
        if target is None or target.kind != "r" or target.triggers or target.rules:
            return False
        if target.runs_code:  # defaults, generated columns, domain checks call functions
            return False
        for ref in info.reads:
            read = resolve(ref, names, path)
            if read is None or read.kind not in _READABLE:
                return False
        limited = target.oid in sticky or limits.limit(target.schema, target.name, ()) is not None
        if limited and info.kind is not StatementKind.INSERT:
            limit = (
                sticky[target.oid].limit
                if target.oid in sticky
                else limits.limit(target.schema, target.name, ())
            )
            if not limit or not any(key <= info.key_columns for key in target.unique_keys):
                return False
    return True
