"""The statements the guard has the server run inside the client's transaction.

A limit check is a DO block placed right after the client's statement (appended to a simple
Query, injected before the Sync or Flush of an extended batch). It reads the transaction's own
counters for every limited table and raises when one is over its limit, so the server aborts
the transaction itself: nothing is committed, whatever route the rows were changed by.

Errors the guard raises carry the private SQLSTATE ``SP401``; the session rewrites them to
42501 and strips the PL/pgSQL context before the client sees them. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from proxyworker.guard.catalog import Catalog
from proxyworker.policy.tables import TableLimits

GUARD_SQLSTATE = "SP401"
RATE_SQLSTATE = "SP534"
ROWS_SQLSTATE = "SP402"
"""The NOTICE in which the check reports the rows it measured (the session swallows it)."""
# The private SQLSTATEs the guard raises and what the client sees instead.
CLIENT_SQLSTATE = {GUARD_SQLSTATE: "42501", RATE_SQLSTATE: "53400"}


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@dataclass(frozen=True, slots=True)
class LimitedTable:
    name: str  # schema.name, for messages
    oids: tuple[int, ...]  # the table and its partitions
    limit: int


def limited_tables(
    catalog: Catalog, limits: TableLimits, sticky: dict[int, LimitedTable]
) -> list[LimitedTable]:
    """Resolve policy patterns to tables. A table once limited stays limited under its OID
    (``sticky``), so renaming it does not take it out of the guard's sight."""
    children: dict[int, list[int]] = {}
    for rel in catalog.relations:
        if rel.parent is not None:
            children.setdefault(rel.parent, []).append(rel.oid)

    def with_partitions(oid: int) -> tuple[int, ...]:
        out, todo = [oid], [oid]
        while todo:
            for child in children.get(todo.pop(), ()):
                out.append(child)
                todo.append(child)
        return tuple(out)

    for rel in catalog.tables():
        limit = limits.limit(rel.schema, rel.name, ())
        if limit is not None:
            sticky[rel.oid] = LimitedTable(
                f"{rel.schema}.{rel.name}", with_partitions(rel.oid), limit
            )
    return list(sticky.values())


def raise_sql(
    message: str,
    detail: str | None = None,
    hint: str | None = None,
    sqlstate: str = GUARD_SQLSTATE,
) -> str:
    """A statement that fails with the guard's error (used to deny in order)."""
    parts = [f"ERRCODE = {literal(sqlstate)}", f"MESSAGE = {literal(message)}"]
    if detail:
        parts.append(f"DETAIL = {literal(detail)}")
    if hint:
        parts.append(f"HINT = {literal(hint)}")
    return f"DO $sqlproxy$BEGIN RAISE EXCEPTION USING {', '.join(parts)}; END$sqlproxy$"


_DETAIL = literal("Table %s: %s rows changed in this transaction; the limit is %s.")
_HINT = literal("Change fewer rows per transaction, or ask for a higher limit.")
BASELINE_SETTING = "sqlproxy.baseline"
"""Transaction-local setting holding the counters as they were when the transaction first
needed the guard. PostgreSQL's xact counters also include earlier transactions whose
statistics the backend has not flushed yet, so only the difference is this transaction's."""


def _changed(table: LimitedTable) -> str:
    return " + ".join(
        f"pg_catalog.pg_stat_get_xact_tuples_updated({oid})"
        f" + pg_catalog.pg_stat_get_xact_tuples_deleted({oid})"
        for oid in table.oids
    )


def _storage(table: LimitedTable) -> str:
    """Changes when the table (or a partition) is truncated, rewritten or dropped: those
    empty it without counting a single deleted row."""
    return " + ".join(
        f"COALESCE(pg_catalog.pg_relation_filenode({oid})::bigint, -1)" for oid in table.oids
    )


def baseline_sql(tables: Sequence[LimitedTable]) -> str:
    values = [f"({_changed(t)})" for t in tables] + [f"({_storage(t)})" for t in tables]
    return (
        "DO $sqlproxy$BEGIN IF COALESCE(pg_catalog.current_setting("
        f"{literal(BASELINE_SETTING)}, true), '') = '' THEN PERFORM pg_catalog.set_config("
        f"{literal(BASELINE_SETTING)}, pg_catalog.concat_ws(',', {', '.join(values)}), true); "
        "END IF; END$sqlproxy$"
    )


_EMPTIED = literal("Table %s was truncated, dropped or rewritten: that changes every row.")


def limit_check_sql(
    tables: Sequence[LimitedTable], immediate: bool = False, allowance: int | None = None
) -> str:
    """``immediate``: first fire deferred triggers (autocommit: the commit follows at once,
    and what they change must be counted before it). ``allowance``: the rows the user's
    rows_changed_per_minute budget still allows this transaction (None: no budget).

    It ends by reporting what it measured per table in a NOTICE (``ROWS_SQLSTATE``, DETAIL
    ``schema.table=rows,...``): the session swallows it and audits the rows."""
    lines = [
        "DO $sqlproxy$DECLARE n bigint; t bigint := 0; r text[] := '{}'; "
        "b bigint[] := pg_catalog.string_to_array("
        f"pg_catalog.current_setting({literal(BASELINE_SETTING)}, true), ',')::bigint[]; BEGIN"
    ]
    if immediate:
        lines.append("SET CONSTRAINTS ALL IMMEDIATE;")
    count = len(tables)
    for i, table in enumerate(tables, start=1):
        lines.append(
            f"n := {_changed(table)} - COALESCE(b[{i}], 0); "
            f"IF n > {table.limit} THEN RAISE EXCEPTION USING "
            f"ERRCODE = {literal(GUARD_SQLSTATE)}, "
            f"MESSAGE = {literal('sqlproxy: statement refused by table_limits')}, "
            f"DETAIL = format({_DETAIL}, {literal(table.name)}, n, {table.limit}), "
            f"HINT = {_HINT}; "
            "END IF;"
        )
        lines.append(f"t := t + n; r := r || pg_catalog.concat({literal(table.name + '=')}, n);")
        lines.append(
            f"IF ({_storage(table)}) IS DISTINCT FROM b[{count + i}] THEN RAISE EXCEPTION USING "
            f"ERRCODE = {literal(GUARD_SQLSTATE)}, "
            f"MESSAGE = {literal('sqlproxy: statement refused by table_limits')}, "
            f"DETAIL = format({_EMPTIED}, {literal(table.name)}), HINT = {_HINT}; END IF;"
        )
    if allowance is not None:
        lines.append(
            f"IF t > {max(allowance, 0)} THEN RAISE EXCEPTION USING "
            f"ERRCODE = {literal(RATE_SQLSTATE)}, "
            f"MESSAGE = {literal('sqlproxy: statement refused by rate_limits')}, "
            f"DETAIL = format({_BUDGET}, t, {max(allowance, 0)}), HINT = {_BUDGET_HINT}; END IF;"
        )
    lines.append(
        f"RAISE NOTICE USING ERRCODE = {literal(ROWS_SQLSTATE)}, MESSAGE = 'sqlproxy rows', "
        "DETAIL = pg_catalog.array_to_string(r, ',');"
    )
    lines.append("END$sqlproxy$")
    return "\n".join(lines)


_BUDGET = literal(
    "rows_changed_per_minute: %s rows of limited tables changed in this transaction; "
    "the budget has %s left."
)
_BUDGET_HINT = literal("Wait for the budget to refill, or change fewer rows at a time.")
