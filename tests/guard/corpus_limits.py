"""Attacks on the row limits: more rows of users (5), public.orders (10) or sensitive_data (0)
updated or deleted in one transaction than the policy allows, however the statement is spelled
or dressed up (comments, quoting, search_path, CTEs, views, MERGE, upserts, TRUNCATE/DROP, COPY,
several statements or a transaction). Where the change happens out of the statement's sight —
functions, DO blocks, dynamic SQL, cascades, triggers, rules, renames, EXPLAIN ANALYZE,
PREPARE, cursors — see corpus_limits_code."""

from __future__ import annotations

from typing import Any

from tests.guard.entry import TABLE_LIMIT, Attack, signature
from tests.guard.harm import RowsChanged, over_limit

USERS = over_limit("users")
ORDERS = over_limit("orders")
SENSITIVE = over_limit("sensitive_data")

# Helpers several attacks' setups create.
PURGE = "CREATE FUNCTION purge() RETURNS void LANGUAGE sql AS 'DELETE FROM users';"
PURGE_ROWS = (
    "CREATE FUNCTION purge_rows() RETURNS SETOF int LANGUAGE sql "
    "AS 'DELETE FROM orders RETURNING id';"
)


def trigger_fn(name: str, body: str, returns: str = "NULL") -> str:
    return (
        f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $fn$ "
        f"BEGIN {body}; RETURN {returns}; END $fn$;"
    )


def limit_attack(
    id: str, technique: str, description: str, sql: str, harm: RowsChanged, **kw: Any
) -> Attack:
    return Attack(id, technique, description, sql, TABLE_LIMIT, harm, **kw)


def _one_by_one(table: str, ids: range, statement: str) -> str:
    return " ".join(statement.format(table=table, id=i) for i in ids)


# fmt: off
ATTACKS = [
    # -- no WHERE, tautologies, bounded-looking predicates -----------------------------------
    limit_attack(
        "no-where-delete-users", "no-where", "DELETE without WHERE",
        "DELETE FROM users", USERS,
    ),
    limit_attack(
        "no-where-update-users", "no-where", "UPDATE without WHERE",
        "UPDATE users SET balance = balance + 1", USERS,
    ),
    limit_attack(
        "no-where-update-orders", "no-where", "UPDATE every order",
        "UPDATE orders SET status = 'void'", ORDERS,
    ),
    limit_attack(
        "no-where-delete-sensitive", "no-where", "a zero-limit table emptied",
        "DELETE FROM sensitive_data", SENSITIVE,
    ),
    limit_attack(
        "tautology-1-eq-1", "tautology", "WHERE 1 = 1", "DELETE FROM users WHERE 1 = 1", USERS
    ),
    limit_attack(
        "tautology-or-true", "tautology", "a key lookup OR true",
        "DELETE FROM users WHERE id = 1 OR true", USERS,
    ),
    limit_attack(
        "tautology-is-not-null", "tautology", "WHERE on a NOT NULL key",
        "UPDATE users SET email = upper(email) WHERE id IS NOT NULL", USERS,
    ),
    limit_attack(
        "tautology-like-percent", "tautology", "LIKE '%' matches everything",
        "UPDATE orders SET amount = 0 WHERE status LIKE '%'", ORDERS,
    ),
    limit_attack(
        "tautology-exists", "tautology", "an uncorrelated EXISTS",
        "DELETE FROM users WHERE EXISTS (SELECT 1)", USERS,
    ),
    limit_attack(
        "tautology-coalesce", "tautology", "coalesce(NULL, true)",
        "UPDATE users SET active = NOT active WHERE coalesce(NULL, true)", USERS,
    ),
    limit_attack(
        "tautology-not-in", "tautology", "NOT IN a list no key is in",
        "DELETE FROM users WHERE id NOT IN (SELECT -1)", USERS,
    ),
    limit_attack(
        "plain-range", "plain", "a range just over the limit (users without orders)",
        "DELETE FROM users WHERE id BETWEEN 52 AND 60", USERS,
    ),
    limit_attack(
        "plain-limit-plus-one", "plain", "eleven orders, limit ten",
        "DELETE FROM orders WHERE id <= 11", ORDERS,
    ),
    limit_attack(
        "plain-sensitive-by-key", "plain", "one row of a zero-limit table, by primary key",
        "UPDATE sensitive_data SET ssn = 'redacted' WHERE id = 1", SENSITIVE,
    ),
    limit_attack(
        "subquery-in-self", "subquery", "IN over the table itself",
        "DELETE FROM orders WHERE id IN (SELECT id FROM orders)", ORDERS,
    ),
    limit_attack(
        "subquery-ctid", "subquery", "rows picked by ctid from a subquery",
        "DELETE FROM users WHERE ctid IN (SELECT ctid FROM users WHERE id > 50)", USERS,
    ),
    limit_attack(
        "subquery-using", "subquery", "DELETE ... USING a join",
        "DELETE FROM orders o USING users u WHERE o.user_id = u.id AND u.active", ORDERS,
    ),
    limit_attack(
        "subquery-update-from", "subquery", "UPDATE ... FROM a join",
        "UPDATE orders SET status = 'void' FROM users WHERE orders.user_id = users.id", ORDERS,
    ),
    # -- spelling: comments, quoting, case, escapes, qualification ---------------------------
    limit_attack(
        "comments-fake-where", "comments", "the WHERE clause is a comment",
        "DeLeTe /* just one row */ FrOm users -- WHERE id = 1", USERS,
    ),
    limit_attack(
        "comments-nested", "comments", "nested block comments",
        "DELETE FROM /* a /* nested */ comment */ orders", ORDERS,
    ),
    limit_attack(
        "comments-line", "comments", "a line comment splits the statement",
        "UPDATE sensitive_data -- harmless\nSET ssn = 'x'", SENSITIVE,
    ),
    limit_attack(
        "comments-no-spaces", "comments", "comments instead of whitespace",
        "DELETE/**/FROM/**/users/**/WHERE/**/id>0", USERS,
    ),
    limit_attack("quoting-table", "quoting", "quoted table name", 'DELETE FROM "users"', USERS),
    limit_attack(
        "quoting-everything", "quoting", "quoted schema, table and column",
        'UPDATE "public"."orders" SET "amount" = 0', ORDERS,
    ),
    limit_attack(
        "quoting-alias", "quoting", "a quoted alias that looks like another table",
        'DELETE FROM users AS "Users" WHERE "Users".id > 0', USERS,
    ),
    limit_attack(
        "quoting-dollar-literal", "quoting", "a dollar-quoted literal in the predicate",
        "DELETE FROM users WHERE name <> $q$nobody$q$", USERS,
    ),
    limit_attack(
        "quoting-sensitive", "quoting", "quoted zero-limit table",
        'DELETE FROM "sensitive_data" WHERE "id" < 3', SENSITIVE,
    ),
    limit_attack("case-upper", "case", "upper-case table name", "DELETE FROM USERS", USERS),
    limit_attack(
        "case-mixed", "case", "mixed-case keywords and names",
        "uPdAtE PuBlIc.OrDeRs SeT aMoUnT = 1", ORDERS,
    ),
    limit_attack(
        "unicode-escape", "unicode-escape", "U& identifier", 'DELETE FROM U&"\\0075sers"', USERS
    ),
    limit_attack(
        "unicode-uescape", "unicode-escape", "U& identifier with a custom escape character",
        "DELETE FROM U&\"!0075sers\" UESCAPE '!'", USERS,
    ),
    limit_attack(
        "unicode-underscore", "unicode-escape", "the underscore of sensitive_data escaped",
        'DELETE FROM U&"sensitive\\005fdata"', SENSITIVE,
    ),
    limit_attack(
        "unicode-schema", "unicode-escape", "schema and table both escaped",
        'UPDATE U&"\\0070ublic".U&"\\006frders" SET amount = 0', ORDERS,
    ),
    limit_attack(
        "schema-public", "schema-qualified", "public.users",
        "DELETE FROM public.users", USERS,
    ),
    limit_attack(
        "schema-only", "schema-qualified", "ONLY public.orders",
        "DELETE FROM ONLY public.orders WHERE amount > 0", ORDERS,
    ),
    limit_attack(
        "schema-only-sensitive", "schema-qualified", "UPDATE ONLY on a zero-limit table",
        "UPDATE ONLY public.sensitive_data SET ssn = ssn || '!'", SENSITIVE,
    ),
    # -- search_path ---------------------------------------------------------------------------
    limit_attack(
        "search-path-set", "search-path", "a schema without orders first, then public",
        "SET search_path = app, public; DELETE FROM orders", ORDERS,
    ),
    limit_attack(
        "search-path-set-config", "search-path", "search_path changed by set_config()",
        "SELECT set_config('search_path', 'app, public', false); DELETE FROM orders", ORDERS,
    ),
    limit_attack(
        "search-path-set-config-local", "search-path", "pg_catalog.set_config(..., true)",
        "SELECT pg_catalog.set_config('search_path', 'app,public', true); "
        "UPDATE orders SET amount = 0",
        ORDERS,
    ),
    limit_attack(
        "search-path-set-local", "search-path", "SET LOCAL inside a transaction",
        "BEGIN; SET LOCAL search_path = app, public; UPDATE orders SET amount = 0; COMMIT",
        ORDERS,
    ),
    limit_attack(
        "search-path-quoted", "search-path", "quoted search_path entries",
        "SET search_path = \"app\", 'public'; DELETE FROM users", USERS,
    ),
    limit_attack(
        "search-path-view-shadow", "search-path", "app.orders is a view over public.orders",
        "SET search_path = app; DELETE FROM orders", ORDERS,
        setup="CREATE VIEW app.orders AS SELECT * FROM public.orders;",
    ),
    limit_attack(
        "search-path-shadow-builtin", "search-path",
        "pg_catalog moved after app, so lower() is app.lower()",
        "SET search_path = app, pg_catalog, public; SELECT lower('X')", USERS,
        setup="CREATE FUNCTION app.lower(text) RETURNS text LANGUAGE sql "
        "AS $$ DELETE FROM public.users; SELECT pg_catalog.lower($1) $$;",
    ),
    limit_attack(
        "search-path-pg-settings", "search-path",
        "a visible SET points users at app.users; UPDATE pg_settings (a rule calling "
        "set_config) points it back at public.users; deleting one user cascades 25 orders",
        "SET search_path = app, public; "
        "UPDATE pg_settings SET setting = 'public' WHERE name = 'search_path'; "
        "DELETE FROM users WHERE id = 1",
        ORDERS,
        setup="CREATE TABLE app.users (id int PRIMARY KEY); INSERT INTO app.users VALUES (1);",
        # Refusing every UPDATE of pg_settings (it can set session_replication_role too) is a
        # fine answer.
        also=(signature("replication-role"),),
    ),
    # -- CTEs ----------------------------------------------------------------------------------
    limit_attack(
        "cte-delete", "cte-dml", "DELETE inside WITH",
        "WITH d AS (DELETE FROM users RETURNING id) SELECT count(*) FROM d", USERS,
    ),
    limit_attack(
        "cte-unreferenced", "cte-dml", "a data-modifying CTE nobody reads still runs",
        "WITH u AS (UPDATE orders SET status = 'lost' RETURNING 1) SELECT 1", ORDERS,
    ),
    limit_attack(
        "cte-shadow-name", "cte-dml", "a CTE named users; DELETE still hits the table",
        "WITH users AS (SELECT 1 AS id) DELETE FROM users WHERE id > 0", USERS,
    ),
    limit_attack(
        "cte-into-insert", "cte-dml", "DELETE in a CTE feeding an INSERT elsewhere",
        "WITH d AS (DELETE FROM orders RETURNING id) "
        "INSERT INTO audit_log (msg) SELECT 'removed ' || id FROM d",
        ORDERS,
    ),
    limit_attack(
        "cte-recursive", "cte-dml", "RECURSIVE CTE alongside a DELETE CTE",
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3), "
        "d AS (DELETE FROM sensitive_data WHERE id IN (SELECT n FROM r) RETURNING *) "
        "SELECT count(*) FROM d",
        SENSITIVE,
    ),
    # -- views ---------------------------------------------------------------------------------
    limit_attack(
        "views-simple", "views", "DELETE through an auto-updatable view",
        "DELETE FROM v_users", USERS, setup="CREATE VIEW v_users AS SELECT * FROM users;",
    ),
    limit_attack(
        "views-nested", "views", "a view over a view",
        "DELETE FROM v2", USERS,
        setup="CREATE VIEW v1 AS SELECT * FROM users; "
        "CREATE VIEW v2 AS SELECT * FROM v1 WHERE id > 0;",
    ),
    limit_attack(
        "views-security-barrier", "views", "UPDATE through a security_barrier view",
        "UPDATE v_sb SET amount = 0", ORDERS,
        setup="CREATE VIEW v_sb WITH (security_barrier) AS "
        "SELECT * FROM orders WHERE amount >= 0;",
    ),
    limit_attack(
        "views-check-option", "views", "a WITH CHECK OPTION view over a zero-limit table",
        "UPDATE v_chk SET ssn = 'x' WHERE id = 5", SENSITIVE,
        setup="CREATE VIEW v_chk AS SELECT * FROM sensitive_data WHERE id > 0 "
        "WITH CHECK OPTION;",
    ),
    limit_attack(
        "views-other-schema", "views", "a view named people in another schema",
        "DELETE FROM app.people WHERE true", USERS,
        setup="CREATE VIEW app.people AS SELECT * FROM public.users;",
    ),
    limit_attack(
        "views-innocent-name", "views", 'a view called "Archive" over orders',
        'DELETE FROM "Archive"', ORDERS,
        setup='CREATE VIEW "Archive" AS SELECT * FROM orders;',
    ),
    limit_attack(
        "views-instead-of-trigger", "views", "INSERT into a view whose trigger deletes",
        "INSERT INTO v_inbox VALUES (1)", USERS,
        setup="CREATE VIEW v_inbox AS SELECT 1 AS x; "
        + trigger_fn("v_inbox_ins", "DELETE FROM users", "NEW")
        + " CREATE TRIGGER v_inbox_ins INSTEAD OF INSERT ON v_inbox "
        "FOR EACH ROW EXECUTE FUNCTION v_inbox_ins();",
    ),
    limit_attack(
        "views-created-inline", "views", "the attack creates its own view, then deletes",
        "CREATE VIEW v_new AS SELECT * FROM orders; DELETE FROM v_new", ORDERS,
    ),
    # -- MERGE, upserts --------------------------------------------------------------------------
    limit_attack(
        "merge-delete", "merge", "MERGE ... WHEN MATCHED THEN DELETE",
        "MERGE INTO users u USING (SELECT id FROM users) s ON u.id = s.id "
        "WHEN MATCHED THEN DELETE",
        USERS,
    ),
    limit_attack(
        "merge-update", "merge", "MERGE ... THEN UPDATE over a join",
        "MERGE INTO orders o USING users u ON o.user_id = u.id "
        "WHEN MATCHED THEN UPDATE SET amount = 0",
        ORDERS,
    ),
    limit_attack(
        "merge-sensitive", "merge", "MERGE one row of a zero-limit table",
        "MERGE INTO sensitive_data t USING (VALUES (1)) v(id) ON t.id = v.id "
        "WHEN MATCHED THEN UPDATE SET ssn = 'x'",
        SENSITIVE,
    ),
    limit_attack(
        "merge-conditional", "merge", "conditional WHEN clauses that always match",
        "MERGE INTO users u USING generate_series(1, 60) g ON u.id = g "
        "WHEN MATCHED AND u.id > 0 THEN UPDATE SET balance = 0 "
        "WHEN NOT MATCHED THEN DO NOTHING",
        USERS,
    ),
    limit_attack(
        "upsert-self", "upsert", "INSERT ... SELECT every user ON CONFLICT DO UPDATE",
        "INSERT INTO users (id, name, email) SELECT id, 'x', 'x' FROM users "
        "ON CONFLICT (id) DO UPDATE SET name = excluded.name",
        USERS,
    ),
    limit_attack(
        "upsert-series", "upsert", "fifty conflicting order ids",
        "INSERT INTO orders (id, user_id, amount) SELECT g, 2, 0 FROM generate_series(1, 50) g "
        "ON CONFLICT (id) DO UPDATE SET amount = excluded.amount",
        ORDERS,
    ),
    limit_attack(
        "upsert-sensitive", "upsert", "one conflicting row of a zero-limit table",
        "INSERT INTO sensitive_data (id, user_id, ssn) VALUES (1, 1, 'x') "
        "ON CONFLICT (id) DO UPDATE SET ssn = excluded.ssn",
        SENSITIVE,
    ),
    limit_attack(
        "upsert-on-constraint", "upsert", "ON CONFLICT ON CONSTRAINT",
        "INSERT INTO users (id, name, email) SELECT g, 'y', 'y' FROM generate_series(1, 10) g "
        "ON CONFLICT ON CONSTRAINT users_pkey DO UPDATE SET email = 'overwritten'",
        USERS,
    ),
    # -- TRUNCATE, DROP ---------------------------------------------------------------------------
    limit_attack(
        "truncate-cascade", "truncate-drop", "TRUNCATE users CASCADE",
        "TRUNCATE users CASCADE", USERS,
    ),
    limit_attack("truncate-orders", "truncate-drop", "TRUNCATE orders", "TRUNCATE orders", ORDERS),
    limit_attack(
        "truncate-only-qualified", "truncate-drop", "TRUNCATE TABLE ONLY public.orders",
        "TRUNCATE TABLE ONLY public.orders RESTART IDENTITY", ORDERS,
    ),
    limit_attack(
        "truncate-sensitive", "truncate-drop", "TRUNCATE a zero-limit table",
        "TRUNCATE sensitive_data", SENSITIVE,
    ),
    limit_attack(
        "truncate-list", "truncate-drop", "an unguarded table first in the list",
        "TRUNCATE app.settings, USERS CASCADE", USERS,
    ),
    limit_attack(
        "truncate-dynamic", "truncate-drop", "TRUNCATE spelled in pieces",
        "DO $$ BEGIN EXECUTE 'TRUNC' || 'ATE orders'; END $$", ORDERS,
    ),
    limit_attack(
        "truncate-in-function", "truncate-drop", "TRUNCATE inside an SQL function",
        "SELECT reset_all()", SENSITIVE,
        setup="CREATE FUNCTION reset_all() RETURNS void LANGUAGE sql "
        "AS 'TRUNCATE sensitive_data';",
    ),
    limit_attack("drop-orders", "truncate-drop", "DROP TABLE orders", "DROP TABLE orders", ORDERS),
    limit_attack(
        "drop-users-cascade", "truncate-drop", "DROP TABLE users CASCADE",
        "DROP TABLE users CASCADE", USERS,
    ),
    limit_attack(
        "drop-if-exists", "truncate-drop", "DROP TABLE IF EXISTS",
        "DROP TABLE IF EXISTS sensitive_data", SENSITIVE,
    ),
    limit_attack(
        "drop-schema", "truncate-drop", "DROP SCHEMA public CASCADE",
        "DROP SCHEMA public CASCADE", USERS,
    ),
    # -- COPY, multi-statement strings, transactions ---------------------------------------------
    limit_attack(
        "copy-delete-returning", "copy", "COPY (DELETE ... RETURNING) TO STDOUT",
        "COPY (DELETE FROM users RETURNING id) TO STDOUT", USERS,
    ),
    limit_attack(
        "copy-update-returning", "copy", "COPY (UPDATE ... RETURNING) TO STDOUT",
        "COPY (UPDATE orders SET amount = 0 RETURNING id) TO STDOUT", ORDERS,
    ),
    limit_attack(
        "multi-select-then-delete", "multi-statement", "a harmless first statement",
        "SELECT 1; DELETE FROM users", USERS,
    ),
    limit_attack(
        "multi-split-deletes", "multi-statement", "two deletes of three rows each",
        "DELETE FROM users WHERE id BETWEEN 52 AND 54; "
        "DELETE FROM users WHERE id BETWEEN 55 AND 57",
        USERS,
    ),
    limit_attack(
        "multi-semicolon-in-string", "multi-statement", "a semicolon inside a string literal",
        "SELECT ';' AS x; DELETE FROM users -- '", USERS,
    ),
    limit_attack(
        "multi-dollar-semicolon", "multi-statement", "a semicolon inside a dollar quote",
        "SELECT $$;$$; DELETE FROM orders", ORDERS,
    ),
    limit_attack(
        "multi-comment-semicolons", "multi-statement", "semicolons inside comments",
        "SELECT 1 /* ; */; UPDATE orders SET amount = 0 -- ;", ORDERS,
    ),
    limit_attack(
        "transaction-split", "transaction", "two six-row updates in one transaction",
        "BEGIN; UPDATE orders SET amount = 1 WHERE id <= 6; "
        "UPDATE orders SET amount = 2 WHERE id BETWEEN 7 AND 12; COMMIT",
        ORDERS,
    ),
    limit_attack(
        "transaction-savepoint", "transaction", "the bulk of it under a released savepoint",
        "BEGIN; DELETE FROM users WHERE id = 52; SAVEPOINT s; "
        "DELETE FROM users WHERE id > 52; RELEASE s; COMMIT",
        USERS,
    ),
    limit_attack(
        "transaction-one-row-at-a-time", "transaction", "seven single-row deletes by key",
        "BEGIN; "
        + _one_by_one("users", range(52, 59), "DELETE FROM {table} WHERE id = {id};")
        + " COMMIT",
        USERS,
    ),
    limit_attack(
        "transaction-start-end", "transaction", "START TRANSACTION ... END",
        "START TRANSACTION; UPDATE sensitive_data SET ssn = 'x' WHERE id = 1; END", SENSITIVE,
    ),
    limit_attack(
        "transaction-rollback-to", "transaction",
        "a rolled-back savepoint first, then six more rows",
        "BEGIN; SAVEPOINT a; UPDATE users SET name = 'x' WHERE id <= 3; ROLLBACK TO a; "
        "UPDATE users SET name = 'y' WHERE id BETWEEN 52 AND 57; COMMIT",
        USERS,
    ),
]
# fmt: on
