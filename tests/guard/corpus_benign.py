"""Benign statements: ordinary application SQL within every limit, touching no honeytoken and
calling nothing dangerous. Through the worker each must return exactly what a direct
connection returns and leave the database in the same state. Results are deterministic
(ORDER BY everywhere, no clocks), so the two runs can be compared value for value.

Some are near misses on purpose: writes of exactly the limit, EXPLAIN without ANALYZE of a
DELETE, a zero-row UPDATE of a zero-limit table, inserts into limited tables (limits count
updates and deletes), the canary's halves in separate columns, and unlimited tables that share
a guarded table's name in another schema.
"""

from __future__ import annotations

from tests.guard.entry import Benign

ADD = "CREATE FUNCTION add(a int, b int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT a + b';"
USER_COUNT = (
    "CREATE FUNCTION user_count() RETURNS bigint LANGUAGE plpgsql STABLE "
    "AS $$ BEGIN RETURN (SELECT count(*) FROM users); END $$;"
)

# fmt: off
BENIGN = [
    # -- reads -----------------------------------------------------------------------------------
    Benign(
        "select-by-key", "read", "a row by primary key",
        "SELECT id, name, email FROM users WHERE id = 7",
    ),
    Benign("aggregate", "read", "count and sum", "SELECT count(*), sum(balance) FROM users"),
    Benign(
        "join-group", "read", "a join with GROUP BY",
        "SELECT u.name, count(o.id) AS n, coalesce(sum(o.amount), 0) AS total FROM users u "
        "LEFT JOIN orders o ON o.user_id = u.id GROUP BY u.name ORDER BY u.name LIMIT 10",
    ),
    Benign(
        "group-by-status", "read", "GROUP BY on orders",
        "SELECT status, count(*) FROM orders GROUP BY status ORDER BY status",
    ),
    Benign(
        "orders-of-user", "read", "a user's orders",
        "SELECT * FROM orders WHERE user_id = 3 ORDER BY id",
    ),
    Benign(
        "window", "read", "a window function",
        "SELECT id, amount, rank() OVER (ORDER BY amount DESC, id) FROM orders "
        "WHERE user_id < 5 ORDER BY id",
    ),
    Benign(
        "cte-read", "read", "a read-only CTE",
        "WITH big AS (SELECT * FROM orders WHERE amount > 50) SELECT count(*) FROM big",
    ),
    Benign(
        "subquery", "read", "IN (subquery)",
        "SELECT name FROM users WHERE id IN (SELECT user_id FROM orders WHERE amount > 90) "
        "ORDER BY name",
    ),
    Benign(
        "notes-without-canary", "read", "notes except the canary row",
        "SELECT * FROM notes WHERE id <> 3 ORDER BY id",
    ),
    Benign(
        "other-schema", "read", "a table in another schema",
        "SELECT * FROM app.settings ORDER BY key",
    ),
    Benign("distinct", "read", "DISTINCT", "SELECT DISTINCT status FROM orders ORDER BY 1"),
    Benign(
        "json-agg", "read", "json_agg",
        "SELECT json_agg(t ORDER BY id) FROM (SELECT id, name FROM users WHERE id <= 3) t",
    ),
    Benign(
        "generate-series", "read", "a set-returning built-in",
        "SELECT * FROM generate_series(1, 5)",
    ),
    Benign("values", "read", "VALUES", "VALUES (1, 'a'), (2, 'b')"),
    Benign(
        "builtins", "read", "string built-ins",
        "SELECT lower('Hello'), upper('x'), length('abc'), md5('x'), 'a' || 'b'",
    ),
    Benign(
        "canary-halves", "read", "the canary's halves in separate columns",
        "SELECT 'canary' AS word, '7f3a9c' AS hex",
    ),
    Benign(
        "sensitive-read", "read", "reading a zero-limit table is allowed",
        "SELECT * FROM sensitive_data WHERE id = 1",
    ),
    Benign("like", "read", "LIKE", "SELECT id FROM users WHERE name LIKE 'user 1%' ORDER BY id"),
    Benign(
        "for-update", "read", "a locking read",
        "SELECT id FROM users ORDER BY id LIMIT 5 FOR UPDATE",
    ),
    Benign(
        "catalog-read", "read", "a catalog lookup",
        "SELECT relname, relkind FROM pg_class WHERE relname IN ('users', 'orders') ORDER BY 1",
    ),
    Benign("show", "read", "SHOW", "SHOW search_path"),
    Benign("current-setting", "read", "current_setting()", "SELECT current_setting('search_path')"),
    Benign(
        "explain-delete", "explain", "EXPLAIN without ANALYZE does not run the DELETE",
        "EXPLAIN (COSTS off) DELETE FROM users",
    ),
    Benign(
        "explain-select", "explain", "EXPLAIN of a key lookup",
        "EXPLAIN (COSTS off) SELECT * FROM orders WHERE id = 1",
    ),
    Benign(
        "explain-analyze-read", "explain", "EXPLAIN ANALYZE of a read",
        "EXPLAIN (ANALYZE, COSTS off, TIMING off, SUMMARY off) SELECT count(*) FROM orders",
    ),
    # -- writes within the limits -----------------------------------------------------------------
    Benign(
        "update-by-key", "write", "one user by key",
        "UPDATE users SET balance = balance + 10 WHERE id = 7",
    ),
    Benign(
        "update-at-limit", "write", "exactly five users",
        "UPDATE users SET active = false WHERE id IN (10, 11, 12, 13, 15)",
    ),
    Benign("delete-order", "write", "one order", "DELETE FROM orders WHERE id = 30"),
    Benign(
        "delete-orders-at-limit", "write", "exactly ten orders",
        "DELETE FROM orders WHERE id BETWEEN 40 AND 49",
    ),
    Benign(
        "delete-user-no-orders", "write", "a user without orders",
        "DELETE FROM users WHERE id = 60",
    ),
    Benign(
        "delete-user-cascade", "write", "a user whose two orders cascade",
        "DELETE FROM users WHERE id = 20",
    ),
    Benign(
        "insert-user", "write", "an INSERT",
        "INSERT INTO users (id, name, email) VALUES (100, 'new', 'new@example.com')",
    ),
    Benign(
        "insert-many-users", "write", "a hundred inserts (limits count updates and deletes)",
        "INSERT INTO users (id, name, email) SELECT g, 'bulk ' || g, 'b' || g || '@example.com' "
        "FROM generate_series(200, 299) g",
    ),
    Benign(
        "insert-returning", "write", "INSERT ... RETURNING",
        "INSERT INTO orders (id, user_id, amount, status) VALUES (500, 7, 12.5, 'new') "
        "RETURNING id, amount",
    ),
    Benign(
        "upsert-one", "write", "an upsert of one row",
        "INSERT INTO users (id, name, email) VALUES (7, 'dup', 'd') "
        "ON CONFLICT (id) DO UPDATE SET name = excluded.name",
    ),
    Benign(
        "insert-do-nothing", "write", "ON CONFLICT DO NOTHING",
        "INSERT INTO users (id, name, email) VALUES (300, 'x', 'y') ON CONFLICT DO NOTHING",
    ),
    Benign(
        "update-returning", "write", "UPDATE ... RETURNING",
        "UPDATE orders SET status = 'shipped' WHERE id = 26 RETURNING id, status",
    ),
    Benign(
        "merge-one", "write", "MERGE of one row",
        "MERGE INTO users u USING (VALUES (8, 'merged')) v(id, name) ON u.id = v.id "
        "WHEN MATCHED THEN UPDATE SET name = v.name "
        "WHEN NOT MATCHED THEN INSERT (id, name, email) VALUES (v.id, v.name, 'm')",
    ),
    Benign(
        "cte-insert", "write", "INSERT in a CTE",
        "WITH n AS (INSERT INTO audit_log (msg) VALUES ('hello') RETURNING msg) SELECT msg FROM n",
    ),
    Benign(
        "sensitive-zero-rows", "write", "an UPDATE of a zero-limit table matching no row",
        "UPDATE sensitive_data SET ssn = ssn WHERE false",
    ),
    Benign(
        "sensitive-insert", "write", "an INSERT into a zero-limit table",
        "INSERT INTO sensitive_data (id, user_id, ssn) VALUES (100, 1, '000-00-0000')",
    ),
    Benign(
        "update-note", "write", "an unguarded table",
        "UPDATE notes SET body = 'edited' WHERE id = 1",
    ),
    Benign("delete-unguarded", "write", "every row of an unguarded table", "DELETE FROM audit_log"),
    Benign("truncate-unguarded", "write", "TRUNCATE an unguarded table", "TRUNCATE audit_log"),
    Benign(
        "archive-orders", "write", "archive.orders is not public.orders",
        "DELETE FROM archive.orders WHERE id > 0",
    ),
    Benign(
        "search-path-archive", "write", "search_path puts archive.orders first",
        "SET search_path = archive, public; DELETE FROM orders",
    ),
    Benign(
        "search-path-read", "read", "a read with another search_path",
        "SET search_path = app, public; SELECT count(*) FROM users",
    ),
    # -- transactions, DDL, sessions --------------------------------------------------------------
    Benign(
        "transaction", "transaction", "two key updates in a transaction",
        "BEGIN; UPDATE users SET balance = 1 WHERE id = 2; UPDATE users SET balance = 2 "
        "WHERE id = 3; COMMIT",
    ),
    Benign(
        "rollback", "transaction", "a rolled-back delete",
        "BEGIN; DELETE FROM orders WHERE id = 60; ROLLBACK",
    ),
    Benign(
        "savepoint", "transaction", "a savepoint rolled back",
        "BEGIN; UPDATE users SET name = 'a' WHERE id = 4; SAVEPOINT s; "
        "UPDATE users SET name = 'b' WHERE id = 5; ROLLBACK TO s; COMMIT",
    ),
    Benign(
        "lock", "transaction", "LOCK TABLE in a transaction",
        "BEGIN; LOCK TABLE audit_log IN SHARE MODE; COMMIT",
    ),
    Benign(
        "scratch-table", "ddl", "create, fill and drop a scratch table",
        "CREATE TABLE scratch (a int); INSERT INTO scratch VALUES (1), (2); DROP TABLE scratch",
    ),
    Benign(
        "temp-table", "ddl", "a temporary table",
        "CREATE TEMP TABLE t AS SELECT id FROM users WHERE id < 5; SELECT count(*) FROM t",
    ),
    Benign("set-timeout", "session", "an ordinary SET", "SET statement_timeout = '5s'"),
    Benign(
        "application-name", "session", "set_config of an ordinary setting",
        "SELECT set_config('application_name', 'reporting', false)",
    ),
    # -- COPY, code -------------------------------------------------------------------------------
    Benign(
        "copy-out-query", "copy", "COPY (query) TO STDOUT",
        "COPY (SELECT id, name FROM users WHERE id <= 5 ORDER BY id) TO STDOUT",
    ),
    Benign("copy-out-table", "copy", "COPY a whole table out", "COPY orders TO STDOUT"),
    Benign(
        "copy-in", "copy", "COPY FROM STDIN into an unguarded table",
        "COPY audit_log (msg) FROM STDIN", copy_data=b"copied one\ncopied two\n",
    ),
    Benign(
        "copy-in-users", "copy", "COPY FROM STDIN (csv) into a limited table",
        "COPY users (id, name, email) FROM STDIN (FORMAT csv)",
        copy_data=b"400,csv one,c1@example.com\n401,csv two,c2@example.com\n",
    ),
    Benign("sql-function", "code", "an immutable SQL function", "SELECT add(2, 3)", setup=ADD),
    Benign(
        "plpgsql-function", "code", "a PL/pgSQL function that reads",
        "SELECT user_count()", setup=USER_COUNT,
    ),
    Benign(
        "do-insert", "code", "a DO block inserting into an unguarded table",
        "DO $$ BEGIN INSERT INTO audit_log (msg) VALUES ('from do'); END $$",
    ),
    Benign(
        "do-update-one", "code", "a DO block updating one user by key",
        "DO $$ BEGIN UPDATE users SET balance = 0 WHERE id = 9; END $$",
    ),
    Benign(
        "prepare-select", "code", "SQL-level PREPARE/EXECUTE of a SELECT",
        "PREPARE q(int) AS SELECT name FROM users WHERE id = $1; EXECUTE q(9); DEALLOCATE q",
    ),
    Benign(
        "cursor", "code", "a cursor",
        "BEGIN; DECLARE c CURSOR FOR SELECT id FROM users ORDER BY id; FETCH 3 FROM c; CLOSE c; "
        "COMMIT",
    ),
]
# fmt: on
