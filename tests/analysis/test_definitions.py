"""Table-driven definitions and code: DDL, functions and procedures, DO blocks and CALL, with
every effect compared exactly (anything not listed must be empty)."""

from __future__ import annotations

import pytest

from proxyworker.analysis import SettingChange, StatementKind
from tests.analysis.expect import Case, case_id, check

K = StatementKind

CODE = [
    Case(
        "DO $$BEGIN DELETE FROM users; END$$",
        K.DO,
        "DO",
        writes=("users",),
        unbounded=("users",),
    ),
    Case(
        "DO $$ BEGIN EXECUTE 'DROP TABLE audit'; END $$",
        K.DO,
        "DO",
        drops=("audit",),
    ),
    Case(
        "DO $$ DECLARE t text := 'users'; BEGIN EXECUTE 'TRUNCATE ' || quote_ident(t); END $$",
        K.DO,
        "DO",
        functions=("quote_ident",),
        flags=("dynamic_sql",),
    ),
    Case(
        "DO $$ DECLARE n int := (SELECT count(*) FROM users); BEGIN PERFORM pg_sleep(n); END $$",
        K.DO,
        "DO",
        reads=("users",),
        functions=("count", "pg_sleep"),
    ),
    # A DO block runs now, so the settings it changes are the session's.
    Case(
        "DO $$ BEGIN PERFORM set_config('search_path', 'evil', false); END $$",
        K.DO,
        "DO",
        functions=("set_config",),
        settings=(SettingChange("search_path", "evil"),),
    ),
    Case(
        "DO $$ DECLARE r record; BEGIN"
        " IF (SELECT true FROM flags) THEN UPDATE t SET x = 1 WHERE id = 2;"
        " ELSE FOR r IN SELECT * FROM src LOOP INSERT INTO dst VALUES (r.id); END LOOP;"
        " END IF; END $$",
        K.DO,
        "DO",
        reads=("flags", "src"),
        writes=("t", "dst"),
    ),
    Case("DO LANGUAGE plpython3u $$ import os $$", K.DO, "DO", flags=("dynamic_sql",)),
    Case(
        "CALL transfer(1, 2, (SELECT sum(x) FROM t))",
        K.CALL,
        "CALL",
        reads=("t",),
        functions=("transfer", "sum"),
    ),
    Case(
        "CREATE FUNCTION purge() RETURNS void LANGUAGE sql AS 'DELETE FROM users'",
        K.DDL,
        "CREATE FUNCTION",
        writes=("users",),
        unbounded=("users",),
        routines=("purge",),
    ),
    Case(
        "CREATE OR REPLACE FUNCTION app.f() RETURNS int LANGUAGE sql"
        " BEGIN ATOMIC DELETE FROM users WHERE id = 1; SELECT 1; END",
        K.DDL,
        "CREATE FUNCTION",
        writes=("users",),
        routines=("app.f",),
    ),
    Case(
        "CREATE FUNCTION f() RETURNS bigint RETURN (SELECT count(*) FROM secret)",
        K.DDL,
        "CREATE FUNCTION",
        reads=("secret",),
        functions=("count",),
        routines=("f",),
    ),
    # Creating a function does not change the session's settings; calling it later might.
    Case(
        "CREATE FUNCTION f() RETURNS text LANGUAGE sql"
        " AS $$ SELECT set_config('search_path', 'x', false) $$",
        K.DDL,
        "CREATE FUNCTION",
        functions=("set_config",),
        routines=("f",),
    ),
    Case(
        "CREATE PROCEDURE p() LANGUAGE plpgsql AS $$ BEGIN UPDATE t SET x = 1; COMMIT; END $$",
        K.DDL,
        "CREATE PROCEDURE",
        writes=("t",),
        unbounded=("t",),
        routines=("p",),
    ),
    Case(
        "CREATE FUNCTION trg() RETURNS trigger LANGUAGE plpgsql"
        " AS $$ BEGIN INSERT INTO audit VALUES (NEW.id); RETURN NEW; END $$",
        K.DDL,
        "CREATE FUNCTION",
        writes=("audit",),
        routines=("trg",),
    ),
    Case(
        "CREATE FUNCTION f() RETURNS int LANGUAGE c AS 'mylib', 'f'",
        K.DDL,
        "CREATE FUNCTION",
        routines=("f",),
        flags=("dynamic_sql",),
    ),
    Case(
        "CREATE FUNCTION f(tbl text) RETURNS SETOF int LANGUAGE plpgsql"
        " AS $$ BEGIN RETURN QUERY EXECUTE 'SELECT id FROM ' || tbl; END $$",
        K.DDL,
        "CREATE FUNCTION",
        routines=("f",),
        flags=("dynamic_sql",),
    ),
]

DDL = [
    Case(
        "CREATE TABLE t (id int PRIMARY KEY, uid int REFERENCES users(id))",
        K.DDL,
        "CREATE TABLE",
        ddl=("t", "users"),
    ),
    Case(
        "CREATE TABLE t2 AS SELECT * FROM t1",
        K.DDL,
        "CREATE TABLE AS",
        reads=("t1",),
        writes=("t2",),
        ddl=("t2",),
    ),
    Case(
        "CREATE MATERIALIZED VIEW mv AS SELECT * FROM base WITH NO DATA",
        K.DDL,
        "CREATE MATERIALIZED VIEW",
        reads=("base",),
        ddl=("mv",),
    ),
    Case(
        "CREATE VIEW v AS SELECT * FROM secret", K.DDL, "CREATE VIEW", reads=("secret",), ddl=("v",)
    ),
    Case(
        "CREATE INDEX CONCURRENTLY idx ON users (lower(email))",
        K.DDL,
        "CREATE INDEX",
        ddl=("users",),
        functions=("lower",),
    ),
    Case(
        "CREATE RULE r AS ON INSERT TO t DO ALSO DELETE FROM users",
        K.DDL,
        "CREATE RULE",
        writes=("users",),
        unbounded=("users",),
        ddl=("t",),
    ),
    Case("ALTER TABLE users RENAME TO users_old", K.DDL, "ALTER TABLE", ddl=("users", "users_old")),
    Case("ALTER TABLE app.users RENAME TO x", K.DDL, "ALTER TABLE", ddl=("app.users", "app.x")),
    # Renaming something else *to* a guarded name is half of a swap.
    Case("ALTER VIEW v RENAME TO users", K.DDL, "ALTER VIEW", ddl=("v", "users")),
    Case("ALTER TABLE users RENAME COLUMN email TO mail", K.DDL, "ALTER TABLE", ddl=("users",)),
    Case(
        "ALTER TABLE users SET SCHEMA archive",
        K.DDL,
        "ALTER TABLE",
        ddl=("users", "archive.users"),
    ),
    Case("ALTER TABLE users DISABLE TRIGGER audit", K.DDL, "ALTER TABLE", ddl=("users",)),
    Case(
        "ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (uid) REFERENCES users ON DELETE CASCADE",
        K.DDL,
        "ALTER TABLE",
        ddl=("orders", "users"),
    ),
    Case(
        "ALTER TABLE users ATTACH PARTITION p2 FOR VALUES IN (2)",
        K.DDL,
        "ALTER TABLE",
        ddl=("users", "p2"),
    ),
    Case(
        "CREATE TABLE p1 PARTITION OF users FOR VALUES IN (1)",
        K.DDL,
        "CREATE TABLE",
        ddl=("p1", "users"),
    ),
    Case("TRUNCATE users", K.DDL, "TRUNCATE TABLE", truncates=("users",)),
    Case(
        "TRUNCATE TABLE ONLY a, s.b RESTART IDENTITY CASCADE",
        K.DDL,
        "TRUNCATE TABLE",
        truncates=("a", "s.b"),
        flags=("cascade",),
    ),
    Case("DROP TABLE users", K.DDL, "DROP TABLE", drops=("users",)),
    Case(
        "DROP TABLE IF EXISTS a, s.b CASCADE",
        K.DDL,
        "DROP TABLE",
        drops=("a", "s.b"),
        flags=("cascade",),
    ),
    Case("DROP MATERIALIZED VIEW mv", K.DDL, "DROP MATERIALIZED VIEW", drops=("mv",)),
    Case("DROP TRIGGER audit ON app.users", K.DDL, "DROP TRIGGER", ddl=("app.users",)),
    Case("DROP FUNCTION f(int), s.g", K.DDL, "DROP FUNCTION", routines=("f", "s.g")),
    Case(
        "DROP SCHEMA app, Other CASCADE",
        K.DDL,
        "DROP SCHEMA",
        schemas=("app", "other"),
        flags=("cascade",),
    ),
    Case("ALTER SCHEMA app RENAME TO old_app", K.DDL, "ALTER SCHEMA", schemas=("app", "old_app")),
    Case("ALTER SCHEMA app OWNER TO mallory", K.DDL, "ALTER SCHEMA", schemas=("app",)),
    # Every table in the schema, present and future: a policy must see the schema.
    Case("GRANT SELECT ON ALL TABLES IN SCHEMA app TO m", K.DDL, "GRANT", schemas=("app",)),
    Case(
        "ALTER DEFAULT PRIVILEGES IN SCHEMA app GRANT SELECT ON TABLES TO m",
        K.DDL,
        "ALTER DEFAULT PRIVILEGES",
        schemas=("app",),
    ),
    Case("ALTER FUNCTION f(int) RENAME TO g", K.DDL, "ALTER FUNCTION", routines=("f", "g")),
    Case(
        "ALTER FUNCTION app.f() SET SCHEMA other",
        K.DDL,
        "ALTER FUNCTION",
        routines=("app.f", "other.f"),
    ),
    Case("ALTER FUNCTION f() SECURITY DEFINER", K.DDL, "ALTER FUNCTION", routines=("f",)),
    Case(
        "CREATE TRIGGER t BEFORE DELETE ON users FOR EACH ROW EXECUTE FUNCTION app.stop()",
        K.DDL,
        "CREATE TRIGGER",
        ddl=("users",),
        functions=("app.stop",),
    ),
    Case("GRANT SELECT ON users, app.orders TO bob", K.DDL, "GRANT", ddl=("users", "app.orders")),
    Case("REVOKE EXECUTE ON FUNCTION f(int) FROM bob", K.DDL, "REVOKE", routines=("f",)),
    Case(
        "CREATE TABLE x (LIKE users INCLUDING ALL)",
        K.DDL,
        "CREATE TABLE",
        reads=("users",),
        ddl=("x",),
    ),
    Case(
        "CREATE SCHEMA s CREATE TABLE t (a int)",
        K.DDL,
        "CREATE SCHEMA",
        ddl=("s.t",),
        schemas=("s",),
    ),
    Case("LOCK TABLE users IN ACCESS EXCLUSIVE MODE", K.UTILITY, "LOCK TABLE", ddl=("users",)),
    Case("VACUUM FULL users", K.UTILITY, "VACUUM", ddl=("users",)),
    Case(
        "REFRESH MATERIALIZED VIEW mv",
        K.UTILITY,
        "REFRESH MATERIALIZED VIEW",
        writes=("mv",),
        ddl=("mv",),
    ),
    Case(
        "CREATE POLICY p ON docs USING (owner = (SELECT id FROM me))",
        K.DDL,
        "CREATE POLICY",
        reads=("me",),
        ddl=("docs",),
    ),
    Case("CREATE ROLE r LOGIN PASSWORD 'hunter2'", K.DDL, "CREATE ROLE"),
    Case("CREATE AGGREGATE total(int) (SFUNC = int4pl, STYPE = int)", K.DDL, "CREATE AGGREGATE"),
    # Publishing a table streams its rows out: it acts on the table.
    Case("CREATE PUBLICATION p FOR TABLE users", K.DDL, "CREATE PUBLICATION", ddl=("users",)),
    Case("CREATE STATISTICS s ON a, b FROM t", K.DDL, "CREATE STATISTICS", ddl=("t",)),
    Case(
        "IMPORT FOREIGN SCHEMA s FROM SERVER x INTO y",
        K.DDL,
        "IMPORT FOREIGN SCHEMA",
    ),
    # The statement's own parameter change, not this session's.
    Case("ALTER SYSTEM SET work_mem = '1GB'", K.UTILITY, "ALTER SYSTEM"),
    Case("ALTER ROLE bob SET search_path = evil", K.DDL, "ALTER ROLE"),
]


@pytest.mark.parametrize("case", CODE, ids=case_id)
def test_it_reads_what_code_will_do(case: Case) -> None:
    check(case)


@pytest.mark.parametrize("case", DDL, ids=case_id)
def test_it_reports_what_ddl_touches(case: Case) -> None:
    check(case)
