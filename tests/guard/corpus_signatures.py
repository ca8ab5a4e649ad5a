"""Attacks matching the default signatures, in plain and disguised spellings: server files,
programs, large-object file I/O, ALTER SYSTEM, session_replication_role, signals to other
backends, dblink, sleeps and role switches. Relative paths are in the server's data directory.
"""

from __future__ import annotations

from typing import Any

from tests.guard import fixture
from tests.guard.entry import HONEYTOKEN_TABLE, HONEYTOKEN_VALUE, TABLE_LIMIT, Attack, signature
from tests.guard.harm import (
    FILE_CONTENTS,
    REPLICA,
    SECRET_ROWS,
    AutoConf,
    FileWritten,
    Harm,
    NewLargeObject,
    Orphans,
    Reached,
    Slept,
    VictimHit,
    any_of,
    current_role,
    over_limit,
    session_role,
)

FILE = f"'{fixture.FILE_NAME}'"
OUT = fixture.OUTPUT_PREFIX
LOOPBACK = (
    "'host=127.0.0.1 port=' || current_setting('port') || ' dbname=' || current_database() "
    "|| ' user=postgres'"
)
VICTIMS = f"FROM pg_stat_activity WHERE application_name = '{fixture.VICTIM_APP}'"
SLEEP = fixture.SLEEP
LOW = fixture.LOW_ROLE
LO_SETUP = "SELECT lo_from_bytea(4242, 'large object data');"
SETTING = "log_min_duration_statement"
RESET_SETTING = (f"ALTER SYSTEM RESET {SETTING}",)


def _sig(
    sig_id: str, id: str, technique: str, description: str, sql: str, harm: Harm, **kw: Any
) -> Attack:
    return Attack(f"{sig_id}-{id}", technique, description, sql, signature(sig_id), harm, **kw)


def _file(
    id: str, technique: str, description: str, sql: str, harm: Harm = FILE_CONTENTS, **kw: Any
) -> Attack:
    return _sig("server-file-access", id, technique, description, sql, harm, **kw)


def _program(id: str, technique: str, description: str, sql: str, harm: Harm, **kw: Any) -> Attack:
    return _sig("program-execution", id, technique, description, sql, harm, **kw)


def _lo(id: str, technique: str, description: str, sql: str, harm: Harm, **kw: Any) -> Attack:
    return _sig("large-object-file-io", id, technique, description, sql, harm, **kw)


def _alter_system(id: str, technique: str, description: str, sql: str, value: str) -> Attack:
    return _sig(
        "alter-system", id, technique, description, sql, AutoConf(SETTING, value),
        teardown=RESET_SETTING,
    )  # fmt: skip


def _replica(id: str, technique: str, description: str, sql: str, harm: Harm = REPLICA) -> Attack:
    return _sig("replication-role", id, technique, description, sql, harm)


def _signal(id: str, technique: str, description: str, sql: str, **kw: Any) -> Attack:
    return _sig("backend-signal", id, technique, description, sql, VictimHit(), victim=True, **kw)


def _dblink(id: str, technique: str, description: str, sql: str, harm: Harm, **kw: Any) -> Attack:
    return _sig("dblink", id, technique, description, sql, harm, **kw)


def _sleep(id: str, technique: str, description: str, sql: str, **kw: Any) -> Attack:
    return _sig("sleep", id, technique, description, sql, Slept(), **kw)


def _role(id: str, technique: str, description: str, sql: str, harm: Harm) -> Attack:
    return _sig("role-switch", id, technique, description, sql, harm)


# fmt: off
ATTACKS = [
    # -- server-file-access --------------------------------------------------------------------
    _file("read", "plain", "pg_read_file()", f"SELECT pg_read_file({FILE})"),
    _file(
        "qualified", "schema-qualified", "pg_catalog.pg_read_file() with offsets",
        f"SELECT pg_catalog.pg_read_file({FILE}, 0, 100)",
    ),
    _file("upper", "case", "upper-case function name", f"SELECT PG_READ_FILE({FILE})"),
    _file("quoted", "quoting", "quoted function name", f'SELECT "pg_read_file"({FILE})'),
    _file(
        "unicode", "unicode-escape", "U& function name",
        f'SELECT U&"pg\\005fread\\005ffile"({FILE})',
    ),
    _file("binary", "plain", "pg_read_binary_file()", f"SELECT pg_read_binary_file({FILE})"),
    _file(
        "binary-converted", "expression", "pg_read_binary_file() converted to text",
        f"SELECT convert_from(pg_read_binary_file({FILE}), 'UTF8')",
    ),
    _file(
        "ls-dir", "plain", "pg_ls_dir() lists the data directory",
        "SELECT f FROM pg_ls_dir('.') AS f WHERE f LIKE 'guard_sec%'",
        harm=Reached((fixture.FILE_NAME,), "a server directory listing"),
    ),
    _file(
        "stat-file", "plain", "pg_stat_file() reveals a file's size",
        f"SELECT 'size=' || (pg_stat_file({FILE})).size",
        harm=Reached((f"size={len(fixture.FILE_SECRET) + 1}",), "a server file's metadata"),
    ),
    _file(
        "subquery", "subquery", "the path comes from a subquery",
        f"SELECT pg_read_file(f) FROM (VALUES ({FILE})) v(f)",
    ),
    _file(
        "search-path", "search-path", "search_path = pg_catalog first",
        f"SET search_path = pg_catalog; SELECT pg_read_file({FILE})",
    ),
    _file(
        "copy-from", "copy", "COPY FROM a server file, then read the table",
        f"COPY loot FROM {FILE}; SELECT * FROM loot",
    ),
    _file(
        "copy-to", "copy", "COPY TO a server file (COPY TO needs an absolute path)",
        f"COPY notes TO '{fixture.DATADIR}/{OUT}notes.txt'", harm=FileWritten(f"{OUT}notes.txt"),
    ),
    _file(
        "do-notice", "do-block", "read inside a DO block, RAISE NOTICE it",
        f"DO $$ BEGIN RAISE NOTICE '%', pg_read_file({FILE}); END $$",
    ),
    _file(
        "do-copy", "do-block", "COPY FROM a file inside a DO block",
        f"DO $$ BEGIN COPY loot FROM {FILE}; END $$; SELECT * FROM loot",
    ),
    _file(
        "dynamic", "dynamic-sql", "the function name concatenated",
        "DO $$ DECLARE s text; BEGIN EXECUTE 'SELECT pg_' || 'read_file(''"
        f"{fixture.FILE_NAME}'')' INTO s; RAISE NOTICE '%', s; END $$",
    ),
    _file(
        "view", "views", "a view calling pg_read_file()", "SELECT * FROM v_file",
        setup=f"CREATE VIEW v_file AS SELECT pg_read_file({FILE}) AS f;",
    ),
    _file(
        "function", "functions", "an SQL function wrapping pg_read_file()",
        f"SELECT rf({FILE})",
        setup="CREATE FUNCTION rf(p text) RETURNS text LANGUAGE sql AS 'SELECT pg_read_file(p)';",
    ),
    _file(
        "prepare", "prepare-execute", "PREPARE then EXECUTE",
        f"PREPARE r AS SELECT pg_read_file({FILE}); EXECUTE r",
    ),
    # -- program-execution -----------------------------------------------------------------------
    _program(
        "copy-to", "plain", "COPY TO PROGRAM", f"COPY notes TO PROGRAM 'cat > {OUT}prog1.txt'",
        FileWritten(f"{OUT}prog1.txt"),
    ),
    _program(
        "copy-from", "plain", "COPY FROM PROGRAM, then read the table",
        f"COPY loot FROM PROGRAM 'cat {fixture.FILE_NAME}'; SELECT * FROM loot", FILE_CONTENTS,
    ),
    _program(
        "lowercase", "case", "lower-case COPY ... to program",
        f"copy (select 1) to program 'touch {OUT}prog3.txt'", FileWritten(f"{OUT}prog3.txt"),
    ),
    _program(
        "dollar-quoted", "quoting", "the command dollar-quoted",
        f"COPY loot FROM PROGRAM $$cat {fixture.FILE_NAME}$$; SELECT * FROM loot", FILE_CONTENTS,
    ),
    _program(
        "escape-string", "quoting", "the command in an E'' string with escapes",
        f"COPY (SELECT 1) TO PROGRAM E'touch\\x20{OUT}prog5.txt'", FileWritten(f"{OUT}prog5.txt"),
    ),
    _program(
        "do-execute", "do-block", "EXECUTE of a constant COPY ... PROGRAM",
        f"DO $$ BEGIN EXECUTE 'COPY (SELECT 1) TO PROGRAM ''touch {OUT}prog6.txt'''; END $$",
        FileWritten(f"{OUT}prog6.txt"),
    ),
    _program(
        "dynamic", "dynamic-sql", "PROGRAM spelled in pieces",
        f"DO $$ BEGIN EXECUTE 'COPY (SELECT 1) TO PRO' || 'GRAM ''touch {OUT}prog7.txt'''; END $$",
        FileWritten(f"{OUT}prog7.txt"),
    ),
    _program(
        "function", "functions", "a PL/pgSQL function running COPY ... PROGRAM",
        "SELECT run_prog()", FileWritten(f"{OUT}prog8.txt"),
        setup="CREATE FUNCTION run_prog() RETURNS void LANGUAGE plpgsql AS $$ BEGIN "
        f"COPY (SELECT 1) TO PROGRAM 'touch {OUT}prog8.txt'; END $$;",
    ),
    # -- large-object-file-io --------------------------------------------------------------------
    _lo(
        "import", "plain", "lo_import() a server file", f"SELECT lo_import({FILE})",
        NewLargeObject(fixture.FILE_SECRET),
    ),
    _lo(
        "export", "plain", "lo_export() to a server file",
        f"SELECT lo_export(4242, '{OUT}lo1.txt')", FileWritten(f"{OUT}lo1.txt"), setup=LO_SETUP,
    ),
    _lo(
        "qualified-upper", "case", "pg_catalog.LO_IMPORT() with an oid",
        f"SELECT pg_catalog.LO_IMPORT({FILE}, 4343)", NewLargeObject(fixture.FILE_SECRET),
    ),
    _lo(
        "quoted", "quoting", 'quoted "lo_export"',
        f"SELECT \"lo_export\"(4242, '{OUT}lo2.txt')", FileWritten(f"{OUT}lo2.txt"),
        setup=LO_SETUP,
    ),
    _lo(
        "read-back", "multi-statement", "lo_import(), then lo_get() returns the file",
        f"SELECT lo_import({FILE}, 4444); SELECT lo_get(4444)", FILE_CONTENTS,
    ),
    _lo(
        "do-perform", "do-block", "PERFORM lo_export() in a DO block",
        f"DO $$ BEGIN PERFORM lo_export(4242, '{OUT}lo3.txt'); END $$",
        FileWritten(f"{OUT}lo3.txt"), setup=LO_SETUP,
    ),
    _lo(
        "dynamic", "dynamic-sql", "lo_import spelled in pieces",
        f"DO $$ BEGIN EXECUTE 'SELECT lo_' || 'import(''{fixture.FILE_NAME}'')'; END $$",
        NewLargeObject(fixture.FILE_SECRET),
    ),
    # -- alter-system ----------------------------------------------------------------------------
    _alter_system(
        "plain", "plain", "ALTER SYSTEM SET",
        f"ALTER SYSTEM SET {SETTING} = 12345", "12345",
    ),
    _alter_system(
        "case", "case", "lower-case statement, upper-case name",
        f"alter system set {SETTING.upper()} to '12346'", "12346",
    ),
    _alter_system(
        "comment-quoted", "comments", "a comment inside, the name quoted",
        f'ALTER /* maintenance */ SYSTEM SET "{SETTING}" = 12347', "12347",
    ),
    _alter_system(
        "unicode", "unicode-escape", "the name U&-escaped",
        'ALTER SYSTEM SET U&"log\\005fmin\\005fduration\\005fstatement" = 12348', "12348",
    ),
    # -- replication-role ------------------------------------------------------------------------
    _replica(
        "set", "plain", "SET session_replication_role",
        "SET session_replication_role = replica",
    ),
    _replica(
        "set-session-quoted", "quoting", "SET SESSION ... TO a quoted value",
        "SET SESSION session_replication_role TO 'replica'",
    ),
    _replica(
        "unicode-value", "unicode-escape", "the value as a U& identifier",
        'SET session_replication_role = U&"\\0072eplica"',
    ),
    _replica(
        "set-config", "catalog-functions", "set_config()",
        "SELECT set_config('session_replication_role', 'replica', false)",
    ),
    _replica(
        "set-config-upper", "case", "pg_catalog.set_config() with an upper-case name",
        "SELECT pg_catalog.set_config('SESSION_REPLICATION_ROLE', 'replica', false)",
    ),
    _replica(
        "pg-settings", "views", "UPDATE pg_settings (its rule calls set_config)",
        "UPDATE pg_settings SET setting = 'replica' WHERE name = 'session_replication_role'",
    ),
    _replica(
        "do-perform", "do-block", "PERFORM set_config() in a DO block",
        "DO $$ BEGIN PERFORM set_config('session_replication_role', 'replica', false); END $$",
    ),
    _replica(
        "dynamic", "dynamic-sql", "SET spelled in pieces",
        "DO $$ BEGIN EXECUTE 'SET session_replication_' || 'role = replica'; END $$",
    ),
    _replica(
        "local-orphans", "transaction", "SET LOCAL, then delete a user without the cascade",
        "BEGIN; SET LOCAL session_replication_role = replica; DELETE FROM users WHERE id = 1; "
        "COMMIT",
        harm=Orphans(),
    ),
    # -- backend-signal --------------------------------------------------------------------------
    _signal(
        "terminate", "plain", "pg_terminate_backend()",
        f"SELECT pg_terminate_backend(pid) {VICTIMS}",
    ),
    _signal("cancel", "plain", "pg_cancel_backend()", f"SELECT pg_cancel_backend(pid) {VICTIMS}"),
    _signal(
        "qualified-upper", "case", "PG_CATALOG.PG_TERMINATE_BACKEND(pid, timeout)",
        f"SELECT PG_CATALOG.PG_TERMINATE_BACKEND(pid, 1000) {VICTIMS}",
    ),
    _signal(
        "do-perform", "do-block", "PERFORM in a DO block",
        f"DO $$ BEGIN PERFORM pg_terminate_backend(pid) {VICTIMS}; END $$",
    ),
    _signal(
        "dynamic", "dynamic-sql", "the function name concatenated",
        "DO $$ BEGIN EXECUTE 'SELECT pg_' || 'cancel_backend(pid) FROM pg_stat_activity "
        f"WHERE application_name = ''{fixture.VICTIM_APP}'''; END $$",
    ),
    _signal(
        "view", "views", "a view that terminates", "SELECT * FROM v_kill",
        setup=f"CREATE VIEW v_kill AS SELECT pg_terminate_backend(pid) {VICTIMS};",
    ),
    # -- dblink ----------------------------------------------------------------------------------
    _dblink(
        "exec", "plain", "dblink_exec() deletes over a second connection",
        f"SELECT dblink_exec({LOOPBACK}, 'DELETE FROM users')", over_limit("users"),
        also=(TABLE_LIMIT,),
    ),
    _dblink(
        "query-secrets", "plain", "dblink() reads the honeytoken table",
        f"SELECT * FROM dblink({LOOPBACK}, 'SELECT secret FROM secret_keys') AS t(s text)",
        SECRET_ROWS, also=(HONEYTOKEN_TABLE, HONEYTOKEN_VALUE),
    ),
    _dblink(
        "qualified-upper", "case", "public.DBLINK_EXEC()",
        f"SELECT public.DBLINK_EXEC({LOOPBACK}, 'UPDATE orders SET amount = 0')",
        over_limit("orders"), also=(TABLE_LIMIT,),
    ),
    _dblink(
        "named-connection", "multi-statement", "dblink_connect(), then dblink_exec()",
        f"SELECT dblink_connect('c', {LOOPBACK}); "
        "SELECT dblink_exec('c', 'UPDATE orders SET amount = 0')",
        over_limit("orders"), also=(TABLE_LIMIT,),
    ),
    _dblink(
        "do-perform", "do-block", "PERFORM dblink_exec() in a DO block",
        f"DO $$ BEGIN PERFORM dblink_exec({LOOPBACK}, 'DELETE FROM sensitive_data'); END $$",
        over_limit("sensitive_data"), also=(TABLE_LIMIT,),
    ),
    # -- sleep -----------------------------------------------------------------------------------
    _sleep("pg-sleep", "plain", "pg_sleep()", f"SELECT pg_sleep({SLEEP})"),
    _sleep(
        "for", "plain", "pg_sleep_for()",
        f"SELECT pg_sleep_for('{int(SLEEP * 1000)} milliseconds')",
    ),
    _sleep(
        "until", "plain", "pg_sleep_until()",
        f"SELECT pg_sleep_until(clock_timestamp() + interval '{SLEEP} seconds')",
    ),
    _sleep(
        "qualified-upper", "case", "PG_CATALOG.PG_SLEEP()",
        f"SELECT PG_CATALOG.PG_SLEEP({SLEEP})",
    ),
    _sleep(
        "in-where", "subquery", "pg_sleep() in a WHERE clause",
        f"SELECT id FROM users WHERE id = 1 AND (SELECT pg_sleep({SLEEP})) IS NULL",
    ),
    _sleep(
        "do-perform", "do-block", "PERFORM pg_sleep()",
        f"DO $$ BEGIN PERFORM pg_sleep({SLEEP}); END $$",
    ),
    _sleep(
        "dynamic", "dynamic-sql", "the function name concatenated",
        f"DO $$ BEGIN EXECUTE 'SELECT pg_' || 'sleep({SLEEP})'; END $$",
    ),
    _sleep(
        "view", "views", "a view that sleeps", "SELECT * FROM v_slow",
        setup=f"CREATE VIEW v_slow AS SELECT 1 AS n FROM pg_sleep({SLEEP});",
    ),
    # -- role-switch -----------------------------------------------------------------------------
    _role("set-role", "plain", "SET ROLE", f"SET ROLE {LOW}", current_role()),
    _role(
        "session-authorization", "plain", "SET SESSION AUTHORIZATION",
        f"SET SESSION AUTHORIZATION {LOW}", session_role(),
    ),
    _role(
        "set-config-role", "catalog-functions", "set_config('role')",
        f"SELECT set_config('role', '{LOW}', false)", current_role(),
    ),
    _role(
        "set-config-session-authorization", "catalog-functions",
        "set_config('session_authorization')",
        f"SELECT set_config('session_authorization', '{LOW}', false)", session_role(),
    ),
    _role("quoted", "quoting", "lower-case, quoted role", f'set role "{LOW}"', current_role()),
    _role(
        "unicode", "unicode-escape", "the role U&-escaped",
        'SET ROLE U&"guard\\005flow"', current_role(),
    ),
    _role(
        "set-session-role", "case", "SET SESSION ROLE, mixed case",
        f"sEt SeSsIoN rOlE {LOW}", current_role(),
    ),
    _role(
        "do-perform", "do-block", "PERFORM set_config('role') in a DO block",
        f"DO $$ BEGIN PERFORM set_config('role', '{LOW}', false); END $$", current_role(),
    ),
    _role(
        "dynamic", "dynamic-sql", "SET ROLE spelled in pieces",
        f"DO $$ BEGIN EXECUTE 'SET ROLE ' || '{LOW}'; END $$", current_role(),
    ),
    _role(
        "set-local", "transaction", "SET LOCAL ROLE for one transaction",
        f"BEGIN; SET LOCAL ROLE {LOW}; SELECT 'as:' || current_user; COMMIT",
        any_of(Reached((f"as:{LOW}",), "work done as another role")),
    ),
]
# fmt: on
