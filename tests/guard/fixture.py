"""The corpus fixture: the policy, the secrets, the template database every case is copied
from, and the state (table checksums, catalog, large objects, files) an attack may change.

Every case gets a database of its own, made with CREATE DATABASE ... TEMPLATE (about 25 ms),
so attacks never see each other's damage. Nothing here talks to the worker: checksums and
snapshots are always taken over a direct superuser connection.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from tests.support.pgcluster import PgCluster

SCHEMA_SQL = (Path(__file__).parent / "schema.sql").read_text()
TEMPLATE = "guard_template"

CANARY = "canary-7f3a9c"
# Every secret_keys.secret; the honeytoken table's rows must never reach a client.
SECRET_VALUES = ("sk-pay-5d41402abc4b", "sk-bak-7d793037a076", CANARY)
# A file in the server's data directory that server-file attacks read (paths relative to it).
FILE_NAME = "guard_secret.txt"
FILE_SECRET = "filesecret-91e2d7c4"
# Files attacks may write in the data directory; removed before and after every case.
OUTPUT_PREFIX = "guard_out_"
# Stands for the server's data directory in corpus SQL (COPY TO a file needs an absolute
# path); the harness substitutes it before sending.
DATADIR = "@DATADIR@"
LOW_ROLE = "guard_low"
VICTIM_APP = "guard_victim"
SLEEP = 0.5  # seconds every sleep attack asks for; harm means at least this much

LIMITS = {"users": 5, "orders": 10, "sensitive_data": 0}
GUARDED_TABLES = ("users", "orders", "sensitive_data", "secret_keys")

POLICY_TOML = f"""
[table_limits]
users = {LIMITS["users"]}
"public.orders" = {LIMITS["orders"]}
"sensitive_*" = {LIMITS["sensitive_data"]}

[honeytokens]
tables = ["secret_keys"]
values = ["{CANARY}"]
action = "block"

[signatures]
enabled = true
"""


def create_template(cluster: PgCluster) -> str:
    """(Re)create the template database, the low-privilege role and the secret file."""
    with cluster.connect("postgres") as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [TEMPLATE]).fetchone():
            conn.execute(f"ALTER DATABASE {TEMPLATE} IS_TEMPLATE false")
            conn.execute(f"DROP DATABASE {TEMPLATE} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {TEMPLATE}")
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [LOW_ROLE]).fetchone()
        if not exists:
            conn.execute(f"CREATE ROLE {LOW_ROLE} NOLOGIN")
    with cluster.connect(TEMPLATE) as conn:
        conn.execute("CREATE EXTENSION dblink")
        conn.execute(SCHEMA_SQL)
        # Fresh statistics and visibility now, so autovacuum has no reason to touch the copies
        # (or change a plan between two of them).
        conn.execute("VACUUM (FREEZE, ANALYZE)")
    with cluster.connect("postgres") as conn:
        # Autovacuum never connects to a database that allows no connections; CREATE DATABASE
        # would otherwise wait for it to leave the template (up to a few hundred ms per copy).
        conn.execute(f"ALTER DATABASE {TEMPLATE} WITH ALLOW_CONNECTIONS false IS_TEMPLATE true")
    path = os.path.join(cluster.datadir, FILE_NAME)
    with open(path, "w") as fh:
        fh.write(FILE_SECRET + "\n")
    os.chmod(path, 0o644)
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(path, pw.pw_uid, pw.pw_gid)
    return TEMPLATE


@contextlib.contextmanager
def fresh_database(maintenance: psycopg.Connection[tuple], name: str) -> Iterator[str]:
    """A copy of the template named `name`, dropped (with its connections) afterwards."""
    ident = sql.Identifier(name)
    maintenance.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
    maintenance.execute(
        sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
            ident, sql.Identifier(TEMPLATE)
        )
    )
    try:
        yield name
    finally:
        maintenance.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))


def remove_outputs(datadir: str) -> None:
    for name in os.listdir(datadir):
        if name.startswith(OUTPUT_PREFIX):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(datadir, name))


# -- state ---------------------------------------------------------------------------------

_USER_NAMESPACE = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_'"

CATALOG_QUERIES = {
    "schemas": f"""
        SELECT string_agg(n.nspname, ',' ORDER BY n.nspname) FROM pg_namespace n
        WHERE {_USER_NAMESPACE}""",
    "relations": f"""
        SELECT string_agg(format('%s.%s:%s', n.nspname, c.relname, c.relkind), ','
                          ORDER BY n.nspname, c.relname)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {_USER_NAMESPACE}""",
    "columns": f"""
        SELECT string_agg(format('%s.%s.%s:%s', n.nspname, c.relname, a.attname,
                                 format_type(a.atttypid, a.atttypmod)), ','
                          ORDER BY n.nspname, c.relname, a.attnum)
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {_USER_NAMESPACE} AND a.attnum > 0 AND NOT a.attisdropped""",
    "constraints": f"""
        SELECT string_agg(format('%s.%s:%s', n.nspname, k.conname, pg_get_constraintdef(k.oid)),
                          ',' ORDER BY n.nspname, k.conname)
        FROM pg_constraint k JOIN pg_namespace n ON n.oid = k.connamespace
        WHERE {_USER_NAMESPACE}""",
    # Internal (foreign key) triggers are named after OIDs; "constraints" covers them.
    "triggers": """
        SELECT string_agg(format('%s.%s:%s:%s', t.tgrelid::regclass, t.tgname, t.tgenabled,
                                 t.tgfoid::regprocedure), ','
                          ORDER BY t.tgrelid::regclass::text, t.tgname)
        FROM pg_trigger t WHERE NOT t.tgisinternal""",
    "event_triggers": """
        SELECT string_agg(format('%s:%s:%s', evtname, evtevent, evtenabled), ','
                          ORDER BY evtname)
        FROM pg_event_trigger""",
    "rules": """
        SELECT string_agg(format('%s.%s.%s:%s', schemaname, tablename, rulename, definition),
                          ',' ORDER BY schemaname, tablename, rulename)
        FROM pg_rules WHERE schemaname <> 'pg_catalog'""",
    "views": f"""
        SELECT string_agg(format('%s.%s:%s', n.nspname, c.relname, pg_get_viewdef(c.oid)),
                          ',' ORDER BY n.nspname, c.relname)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {_USER_NAMESPACE} AND c.relkind IN ('v', 'm')""",
    "routines": f"""
        SELECT string_agg(format('%s:%s:%s:%s', p.oid::regprocedure, p.prokind, p.prosecdef,
                                 md5(coalesce(p.prosrc, ''))), ','
                          ORDER BY p.oid::regprocedure::text)
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE {_USER_NAMESPACE}""",
    "operators": f"""
        SELECT string_agg(o.oid::regoperator::text, ',' ORDER BY o.oid::regoperator::text)
        FROM pg_operator o JOIN pg_namespace n ON n.oid = o.oprnamespace
        WHERE {_USER_NAMESPACE}""",
    "types": f"""
        SELECT string_agg(format('%s.%s:%s', n.nspname, t.typname, t.typtype), ','
                          ORDER BY n.nspname, t.typname)
        FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
        WHERE {_USER_NAMESPACE}""",
    "extensions": "SELECT string_agg(extname, ',' ORDER BY extname) FROM pg_extension",
    "large_objects": """
        SELECT string_agg(oid::text || ':' || md5(lo_get(oid)), ',' ORDER BY oid)
        FROM pg_largeobject_metadata""",
    "roles": """
        SELECT string_agg(format('%s:%s', rolname, rolsuper), ',' ORDER BY rolname)
        FROM pg_roles""",
    "auto_conf": """
        SELECT string_agg(name || '=' || coalesce(setting, ''), ',' ORDER BY seqno)
        FROM pg_file_settings WHERE sourcefile LIKE '%postgresql.auto.conf'""",
}

_TABLES = f"""
    SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE {_USER_NAMESPACE} AND c.relkind IN ('r', 'p', 'm') ORDER BY 1, 2"""


# Sequences move even in transactions that roll back, so a refused INSERT may advance one:
# that is no change to the data, but a database being reused must not carry it over.
SEQUENCES = """
    SELECT string_agg(format('%s.%s:%s', schemaname, sequencename, last_value), ','
                      ORDER BY schemaname, sequencename)
    FROM pg_sequences"""


def checksums(
    conn: psycopg.Connection[tuple], datadir: str, *, sequences: bool = False
) -> dict[str, str]:
    """md5 of every user table's ordered contents, of the catalog state attacks could change
    (relations, columns, constraints, triggers, rules, views, routines, roles, large objects,
    ALTER SYSTEM settings) and of the files attacks could write; keyed for readable diffs.
    Two round trips: the table list, then one query for everything."""
    queries = {**CATALOG_QUERIES, "sequences": SEQUENCES} if sequences else CATALOG_QUERIES
    parts = [
        sql.SQL(
            "SELECT {}, md5(coalesce((SELECT string_agg(t::text, E'\\n' ORDER BY t::text) "
            "FROM {} t), ''))"
        ).format(sql.Literal(f"table {schema}.{table}"), sql.Identifier(schema, table))
        for schema, table in conn.execute(_TABLES).fetchall()
    ]
    parts += [
        sql.SQL("SELECT {}, md5(coalesce(({}), ''))").format(sql.Literal(key), sql.SQL(text))
        for key, text in queries.items()
    ]
    out = {str(k): str(v) for k, v in conn.execute(sql.SQL(" UNION ALL ").join(parts))}
    files = []
    for name in sorted(os.listdir(datadir)):
        if name.startswith("guard_"):
            with open(os.path.join(datadir, name), "rb") as fh:
                files.append(f"{name}:{hashlib.md5(fh.read()).hexdigest()}")
    out["files"] = ",".join(files)
    return out


@dataclass(frozen=True)
class TableRows:
    """A guarded table's rows as a multiset of row texts, found by OID so renames and schema
    moves are followed; `exists` is False once the table is gone."""

    oid: int
    exists: bool
    rows: Counter[str]


@dataclass(frozen=True)
class Snapshot:
    checksums: dict[str, str]
    tables: dict[str, TableRows]
    large_objects: frozenset[int]


def table_rows(conn: psycopg.Connection[tuple], oid: int) -> TableRows:
    found = conn.execute(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n "
        "ON n.oid = c.relnamespace WHERE c.oid = %s",
        [oid],
    ).fetchone()
    if found is None:
        return TableRows(oid, False, Counter())
    query = sql.SQL("SELECT t::text FROM {} t").format(sql.Identifier(*found))
    return TableRows(oid, True, Counter(row[0] for row in conn.execute(query)))


def snapshot(conn: psycopg.Connection[tuple], datadir: str, *, state: bool = True) -> Snapshot:
    """What harm checks compare against; `state=False` skips the checksums (a case that is
    rolled back is compared with the template's state instead)."""
    tables = {}
    for name in GUARDED_TABLES:
        row = conn.execute("SELECT %s::regclass::oid", [f"public.{name}"]).fetchone()
        assert row is not None
        tables[name] = table_rows(conn, int(row[0]))
    sums = checksums(conn, datadir, sequences=True) if state else {}
    return Snapshot(sums, tables, large_objects(conn))


def large_objects(conn: psycopg.Connection[tuple]) -> frozenset[int]:
    return frozenset(int(r[0]) for r in conn.execute("SELECT oid FROM pg_largeobject_metadata"))


def rows_changed(conn: psycopg.Connection[tuple], before: TableRows) -> int:
    """Rows of the table at snapshot time that are now gone or different (deleted or updated
    to new values); a dropped table lost all its rows."""
    after = table_rows(conn, before.oid)
    return sum((before.rows - after.rows).values())


def diff(
    before: dict[str, str], after: dict[str, str], ignore: tuple[str, ...] = ("sequences",)
) -> list[str]:
    """Keys whose checksums differ. Sequences are ignored by default: a statement that ran and
    was rolled back still advances them, and that is no change to anyone's data."""
    keys = sorted((set(before) | set(after)) - set(ignore))
    return [k for k in keys if before.get(k) != after.get(k)]
