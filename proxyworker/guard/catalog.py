"""What the guard needs to know about an upstream database, loaded from its own catalog.

- which functions of pg_catalog cannot change data (immutable or stable, minus those that run
  or read SQL given as text), so a read calling only those needs no verification;
- every table (with its partitions), so policy table patterns resolve to OIDs the counter
  check can name.

Loaded with psycopg (catalog queries only), refreshed periodically and after DDL passes
through. Until it is loaded, statements that would need it are denied (fail closed).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import TypeVar

import psycopg

from proxyworker.analysis import AnalysisError, analyze
from proxyworker.config.schema import Upstream

log = logging.getLogger(__name__)
_K = TypeVar("_K")
_Rel = tuple[str, str]

# Built-ins that are stable but read or run SQL named in a string argument.
_RUNS_TEXT = frozenset(
    {
        "query_to_xml", "query_to_xmlschema", "query_to_xml_and_xmlschema",
        "table_to_xml", "table_to_xmlschema", "table_to_xml_and_xmlschema",
        "schema_to_xml", "schema_to_xmlschema", "schema_to_xml_and_xmlschema",
        "database_to_xml", "database_to_xmlschema", "database_to_xml_and_xmlschema",
        "cursor_to_xml", "cursor_to_xmlschema", "ts_stat", "set_config",
    }
)  # fmt: skip
# Volatile built-ins that still cannot change table rows.
_HARMLESS_VOLATILE = frozenset(
    {
        "random", "random_normal", "setseed", "clock_timestamp", "timeofday",
        "gen_random_uuid", "txid_current", "pg_current_xact_id", "pg_notify",
        "pg_advisory_lock", "pg_advisory_xact_lock", "pg_advisory_unlock",
        "pg_advisory_lock_shared", "pg_advisory_xact_lock_shared", "pg_advisory_unlock_shared",
        "pg_try_advisory_lock", "pg_try_advisory_xact_lock", "pg_advisory_unlock_all",
        "pg_backend_pid", "pg_relation_size", "pg_total_relation_size", "pg_table_size",
        "pg_indexes_size", "pg_database_size", "pg_stat_get_xact_tuples_updated",
    }
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Relation:
    oid: int
    schema: str
    name: str
    kind: str  # pg_class.relkind
    parent: int | None  # partitioned table this one is a partition of
    triggers: bool = True  # relhastriggers (foreign keys are triggers too)
    rules: bool = True  # relhasrules
    unique_keys: tuple[frozenset[str], ...] = ()
    runs_code: bool = True
    """Writing a row may call functions: defaults (other than nextval), generated columns,
    columns of a domain type (its CHECK runs)."""
    """Column sets of valid, non-partial unique indexes on plain columns."""


@dataclass(frozen=True, slots=True)
class Catalog:
    safe_functions: frozenset[str]
    relations: tuple[Relation, ...]
    loaded_at: float = field(default_factory=time.monotonic)
    user_operators: frozenset[str] = frozenset()
    """Operators outside pg_catalog (name and schema.name): each calls a user function."""
    domains: frozenset[str] = frozenset()
    """Domain types (name and schema.name): a cast to one runs its CHECK constraints."""
    calls: dict[str, frozenset[str]] = field(default_factory=dict)
    """User functions and views (name and schema.name) -> every function they call, through
    other user functions too: what a signature must see behind a call or a read. COPY ...
    PROGRAM and COPY to or from a server file in their bodies appear as ``COPY_PROGRAM`` and
    ``COPY_SERVER_FILE``."""
    behind: dict[tuple[str, str], frozenset[tuple[str, str]]] = field(default_factory=dict)
    """Views, materialized views and inheritance parents (schema, name) -> every relation
    whose rows they show, through each other: what a honeytoken table must be seen behind."""

    def tables(self) -> list[Relation]:
        return [r for r in self.relations if r.kind in ("r", "p")]

    def by_name(self) -> dict[tuple[str, str], Relation]:
        return {(r.schema, r.name): r for r in self.relations}


_FUNCTIONS = """
SELECT DISTINCT p.proname, p.provolatile
FROM pg_catalog.pg_proc p
WHERE p.pronamespace = 'pg_catalog'::regnamespace
"""
_RELATIONS = """
SELECT c.oid::int8, n.nspname, c.relname, c.relkind::text, i.inhparent::int8,
       c.relhastriggers, c.relhasrules
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_catalog.pg_inherits i ON i.inhrelid = c.oid
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%'
"""


_UNIQUE_KEYS = """
SELECT x.indrelid::int8, array_agg(a.attname::text ORDER BY a.attnum)
FROM pg_catalog.pg_index x
JOIN pg_catalog.pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = ANY (x.indkey)
WHERE x.indisunique AND x.indisvalid AND x.indpred IS NULL AND x.indexprs IS NULL
GROUP BY x.indexrelid, x.indrelid
"""


_RUNS_CODE = r"""
SELECT DISTINCT a.attrelid::int8
FROM pg_catalog.pg_attribute a
JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
WHERE a.attnum > 0 AND NOT a.attisdropped
  AND (a.attgenerated <> '' OR t.typtype = 'd'
       OR (d.oid IS NOT NULL
           AND pg_catalog.pg_get_expr(d.adbin, d.adrelid) !~ '^nextval\('))
"""


_USER_OPERATORS = """
SELECT DISTINCT n.nspname, o.oprname FROM pg_catalog.pg_operator o
JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
"""
_DOMAINS = """
SELECT n.nspname, t.typname FROM pg_catalog.pg_type t
JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
WHERE t.typtype = 'd' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
"""


_CODE = """
SELECT n.nspname, p.proname, pg_catalog.pg_get_functiondef(p.oid)
FROM pg_catalog.pg_proc p
JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
JOIN pg_catalog.pg_language l ON l.oid = p.prolang
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND p.prokind IN ('f', 'p')
  AND l.lanname IN ('sql', 'plpgsql')
UNION ALL
SELECT n.nspname, c.relname, pg_catalog.pg_get_viewdef(c.oid)
FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('v', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
"""


_BEHIND = """
SELECT DISTINCT vn.nspname, v.relname, bn.nspname, b.relname
FROM pg_catalog.pg_rewrite r
JOIN pg_catalog.pg_class v ON v.oid = r.ev_class
JOIN pg_catalog.pg_namespace vn ON vn.oid = v.relnamespace
JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = r.oid
     AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.refobjid <> v.oid
JOIN pg_catalog.pg_class b ON b.oid = d.refobjid
JOIN pg_catalog.pg_namespace bn ON bn.oid = b.relnamespace
WHERE v.relkind IN ('v', 'm')
UNION
SELECT pn.nspname, p.relname, cn.nspname, c.relname
FROM pg_catalog.pg_inherits i
JOIN pg_catalog.pg_class p ON p.oid = i.inhparent
JOIN pg_catalog.pg_namespace pn ON pn.oid = p.relnamespace
JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
JOIN pg_catalog.pg_namespace cn ON cn.oid = c.relnamespace
"""
COPY_PROGRAM = "\x00copy_program"
COPY_SERVER_FILE = "\x00copy_server_file"


def _closure(direct: dict[_K, set[_K]]) -> dict[_K, frozenset[_K]]:
    """Each key with everything it reaches through the others."""
    out: dict[_K, frozenset[_K]] = {}
    for key, reached in direct.items():
        seen, todo = set(reached), list(reached)
        while todo:
            for more in direct.get(todo.pop(), ()):
                if more not in seen:
                    seen.add(more)
                    todo.append(more)
        out[key] = frozenset(seen)
    return out


def _behind(rows: list[tuple[str, str, str, str]]) -> dict[_Rel, frozenset[_Rel]]:
    direct: dict[_Rel, set[_Rel]] = {}
    for schema, name, base_schema, base in rows:
        direct.setdefault((schema, name), set()).add((base_schema, base))
    return _closure(direct)


def _calls(rows: list[tuple[str, str, str]]) -> dict[str, frozenset[str]]:
    """What each user function and view calls, closed over calls to each other."""
    direct: dict[str, set[str]] = {}
    for schema, name, text in rows:
        try:
            infos = analyze(text)
        except AnalysisError:
            called = {"\x00unanalysable"}  # never matches a safe built-in: verified
        else:
            called = {f for info in infos for f in info.functions}
            if any(info.copy_program for info in infos):
                called.add(COPY_PROGRAM)
            if any(info.copy_server_file for info in infos):
                called.add(COPY_SERVER_FILE)
        for key in (name, f"{schema}.{name}"):
            direct.setdefault(key, set()).update(called)
    for _ in range(8):  # nesting deeper than this is rare; each pass adds a level
        grew = False
        for called in direct.values():
            extra = set().union(*(direct.get(f, set()) for f in called)) - called
            if extra:
                called |= extra
                grew = True
        if not grew:
            break
    return {key: frozenset(v) for key, v in direct.items()}


def _names(rows: list[tuple[str, str]]) -> frozenset[str]:
    return frozenset(name for schema, n in rows for name in (n, f"{schema}.{n}"))


def conninfo(target: Upstream) -> str:
    params = {
        "host": target.host,
        "port": str(target.port),
        "user": target.user,
        "dbname": target.dbname,
        "sslmode": target.sslmode,
        "application_name": "sqlproxy-catalog",
    }
    if target.password is not None:
        params["password"] = target.password
    if target.sslrootcert:
        params["sslrootcert"] = target.sslrootcert
    return psycopg.conninfo.make_conninfo(**params)


async def load(target: Upstream, timeout: float) -> Catalog:
    async with asyncio.timeout(timeout):
        conn = await psycopg.AsyncConnection.connect(conninfo(target), autocommit=True)
        async with conn:
            functions = await (await conn.execute(_FUNCTIONS)).fetchall()
            relations = await (await conn.execute(_RELATIONS)).fetchall()
            unique = await (await conn.execute(_UNIQUE_KEYS)).fetchall()
            runs_code = {int(r[0]) for r in await (await conn.execute(_RUNS_CODE)).fetchall()}
            operators = await (await conn.execute(_USER_OPERATORS)).fetchall()
            domains = await (await conn.execute(_DOMAINS)).fetchall()
            code = await (await conn.execute(_CODE)).fetchall()
            behind = await (await conn.execute(_BEHIND)).fetchall()
    keys: dict[int, list[frozenset[str]]] = {}
    for relid, columns in unique:
        keys.setdefault(int(relid), []).append(frozenset(columns))
    safe = {name for name, vol in functions if vol in ("i", "s") and name not in _RUNS_TEXT}
    safe |= _HARMLESS_VOLATILE
    return Catalog(
        user_operators=_names(operators),
        domains=_names(domains),
        calls=_calls(code),
        behind=_behind(behind),
        safe_functions=frozenset(safe),
        relations=tuple(
            Relation(
                int(o),
                s,
                n,
                k,
                int(p) if p else None,
                trig,
                rules,
                tuple(keys.get(int(o), ())),
                int(o) in runs_code,
            )
            for o, s, n, k, p, trig, rules in relations
        ),
    )


class CatalogCache:
    """One per upstream database; ``get`` never blocks on a refresh once loaded."""

    def __init__(self, target: Upstream, refresh_every: float, timeout: float) -> None:
        self._target = target
        self._refresh_every = refresh_every
        self._timeout = timeout
        self.current: Catalog | None = None
        self._loading: asyncio.Task[Catalog] | None = None
        self.error: str | None = None
        self._stale = True
        """No catalog yet, or refresh_every has passed since it was loaded (a timer sets it:
        ``snapshot`` runs for every guarded chunk, and reading a clock there cost more than
        the rest of it)."""
        self._stale_timer: asyncio.TimerHandle | None = None

    async def get(self) -> Catalog | None:
        current = self.current
        if current is not None and not self._stale:
            return current
        if current is not None:
            self._start_refresh()
            return current
        self._start_refresh()
        assert self._loading is not None
        try:
            return await asyncio.shield(self._loading)
        except Exception:
            return None

    def snapshot(self) -> Catalog | None:
        """The loaded catalog, without waiting; a stale one starts a background refresh."""
        if self._stale:
            self._start_refresh()
        return self.current

    def invalidate(self) -> None:
        """DDL passed through: reload before the next decision that needs it."""
        if self.current is not None:
            self.current = dataclasses.replace(self.current, loaded_at=0.0)
        self._stale = True
        self._start_refresh()

    def _start_refresh(self) -> None:
        if self._loading is not None and not self._loading.done():
            return
        from proxyworker.tasks import spawn

        self._loading = spawn(self._load(), name=f"catalog {self._target.dbname}")

    async def _load(self) -> Catalog:
        try:
            catalog = await load(self._target, self._timeout)
        except (OSError, psycopg.Error, TimeoutError) as exc:
            self.error = str(exc) or type(exc).__name__
            log.warning("catalog load failed for %s: %s", self._target.dbname, self.error)
            raise
        self.use(catalog)
        return catalog

    def use(self, catalog: Catalog) -> None:
        """Use ``catalog`` until ``refresh_every`` seconds from now (a catalog installed
        outside an event loop, by a sans-io test, never expires)."""
        self.current, self.error, self._stale = catalog, None, False
        if self._stale_timer is not None:
            self._stale_timer.cancel()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._stale_timer = loop.call_later(self._refresh_every, self._expired)

    def _expired(self) -> None:
        self._stale = True
