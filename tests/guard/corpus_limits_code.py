"""Row-limit attacks whose damage happens out of the statement's sight: function and procedure
bodies, DO blocks, dynamic SQL, foreign-key cascades, triggers (row, statement, deferred,
event), rules, renames, EXPLAIN ANALYZE, PREPARE/EXECUTE and cursors."""

from __future__ import annotations

from tests.guard.corpus_limits import (
    ORDERS,
    PURGE,
    PURGE_ROWS,
    SENSITIVE,
    USERS,
    limit_attack,
    trigger_fn,
)

# fmt: off
ATTACKS = [
    # -- functions -----------------------------------------------------------------------------
    limit_attack(
        "functions-sql", "functions", "SQL function body",
        "SELECT purge()", USERS, setup=PURGE,
    ),
    limit_attack(
        "functions-plpgsql", "functions", "PL/pgSQL function body",
        "SELECT cleanup()", ORDERS,
        setup="CREATE FUNCTION cleanup() RETURNS void LANGUAGE plpgsql "
        "AS $$ BEGIN DELETE FROM orders; END $$;",
    ),
    limit_attack(
        "functions-in-where", "functions", "a function call hidden in a WHERE clause",
        "SELECT id FROM users WHERE id = 1 AND purge_orders() = 0", ORDERS,
        setup="CREATE FUNCTION purge_orders() RETURNS int LANGUAGE sql "
        "AS $$ DELETE FROM orders; SELECT 0 $$;",
    ),
    limit_attack(
        "functions-column-default", "functions", "a column DEFAULT calls the function",
        "INSERT INTO inbox (x) VALUES (1)", USERS,
        setup="CREATE FUNCTION stamp() RETURNS int LANGUAGE plpgsql "
        "AS $$ BEGIN UPDATE users SET balance = 0; RETURN 1; END $$; "
        "CREATE TABLE inbox (x int, y int DEFAULT stamp());",
    ),
    limit_attack(
        "functions-view-column", "functions", "a view's column calls the function",
        "SELECT * FROM v_stats", SENSITIVE,
        setup="CREATE FUNCTION purge_s() RETURNS int LANGUAGE sql "
        "AS $$ DELETE FROM sensitive_data; SELECT 1 $$; "
        "CREATE VIEW v_stats AS SELECT purge_s() AS n;",
    ),
    limit_attack(
        "functions-procedure", "functions", "CALL a procedure",
        "CALL p_purge()", USERS,
        setup="CREATE PROCEDURE p_purge() LANGUAGE sql AS $$ DELETE FROM users $$;",
    ),
    limit_attack(
        "functions-quoted-builtin-name", "functions", '"Lower"() is not lower()',
        "SELECT \"Lower\"('X')", USERS,
        setup='CREATE FUNCTION "Lower"(t text) RETURNS text LANGUAGE plpgsql '
        "AS $$ BEGIN DELETE FROM users; RETURN lower(t); END $$;",
    ),
    limit_attack(
        "functions-operator", "functions", "an operator backed by a deleting function",
        "SELECT 1 OPERATOR(app.===) 1", ORDERS,
        setup="CREATE FUNCTION app.eq_purge(int, int) RETURNS boolean LANGUAGE plpgsql "
        "AS $$ BEGIN DELETE FROM public.orders; RETURN $1 = $2; END $$; "
        "CREATE OPERATOR app.=== (LEFTARG = int, RIGHTARG = int, FUNCTION = app.eq_purge);",
    ),
    limit_attack(
        "functions-domain-check", "functions", "a domain CHECK calls the function on a cast",
        "SELECT 1::checked_int", USERS,
        setup="CREATE FUNCTION purge_check() RETURNS boolean LANGUAGE plpgsql "
        "AS $$ BEGIN DELETE FROM users; RETURN true; END $$; "
        "CREATE DOMAIN checked_int AS int CHECK (purge_check());",
    ),
    limit_attack(
        "functions-begin-atomic", "functions", "a BEGIN ATOMIC SQL function",
        "SELECT atomic_purge()", USERS,
        setup="CREATE FUNCTION atomic_purge() RETURNS int LANGUAGE sql "
        "BEGIN ATOMIC DELETE FROM users; SELECT 1; END;",
    ),
    limit_attack(
        "functions-set-returning", "functions", "a set-returning function in FROM",
        "SELECT count(*) FROM purge_rows()", ORDERS, setup=PURGE_ROWS,
    ),
    limit_attack(
        "functions-aggregate", "functions", "an aggregate whose state function deletes",
        "SELECT sneaky_sum(x) FROM generate_series(1, 3) x", USERS,
        setup="CREATE FUNCTION agg_step(int, int) RETURNS int LANGUAGE plpgsql "
        "AS $$ BEGIN DELETE FROM users; RETURN coalesce($1, 0) + $2; END $$; "
        "CREATE AGGREGATE sneaky_sum(int) (SFUNC = agg_step, STYPE = int);",
    ),
    limit_attack(
        "functions-created-inline", "functions", "the attack creates and calls its function",
        "CREATE FUNCTION f_inline() RETURNS void LANGUAGE sql AS 'UPDATE orders SET amount = 0'; "
        "SELECT f_inline()",
        ORDERS,
    ),
    limit_attack(
        "secdef-plpgsql", "security-definer", "SECURITY DEFINER PL/pgSQL",
        "SELECT sd_purge()", USERS,
        setup="CREATE FUNCTION sd_purge() RETURNS void LANGUAGE plpgsql SECURITY DEFINER "
        "AS $$ BEGIN UPDATE users SET balance = -1; END $$;",
    ),
    limit_attack(
        "secdef-search-path", "security-definer", "SECURITY DEFINER with its own search_path",
        "SELECT sd_sp()", SENSITIVE,
        setup="CREATE FUNCTION sd_sp() RETURNS void LANGUAGE plpgsql SECURITY DEFINER "
        "SET search_path = public AS $$ BEGIN DELETE FROM sensitive_data; END $$;",
    ),
    limit_attack(
        "secdef-sql-in-from", "security-definer", "SECURITY DEFINER SQL function in FROM",
        "SELECT * FROM sd_rows() LIMIT 1", ORDERS,
        setup="CREATE FUNCTION sd_rows() RETURNS SETOF int LANGUAGE sql SECURITY DEFINER "
        "AS 'DELETE FROM orders RETURNING id';",
    ),
    # -- DO blocks and dynamic SQL ---------------------------------------------------------------
    limit_attack(
        "do-delete", "do-block", "DELETE in a DO block",
        "DO $$ BEGIN DELETE FROM users; END $$", USERS,
    ),
    limit_attack(
        "do-language-tag", "do-block", "DO LANGUAGE plpgsql with a named dollar quote",
        "DO LANGUAGE plpgsql $x$ BEGIN UPDATE orders SET amount = 0; END $x$", ORDERS,
    ),
    limit_attack(
        "do-row-by-row", "do-block", "a loop deleting one row at a time by key",
        "DO $$ DECLARE r record; BEGIN FOR r IN SELECT id FROM users WHERE id > 51 LOOP "
        "DELETE FROM users WHERE id = r.id; END LOOP; END $$",
        USERS,
    ),
    limit_attack(
        "do-lowercase-quoted", "do-block", "lower-case DO, quoted zero-limit table",
        "do $$begin update \"sensitive_data\" set ssn = 'x' where id = 1; end$$", SENSITIVE,
    ),
    limit_attack(
        "do-exception-block", "do-block", "DELETE inside a nested block with a handler",
        "DO $$ BEGIN BEGIN DELETE FROM orders WHERE id <= 20; "
        "EXCEPTION WHEN others THEN NULL; END; END $$",
        ORDERS,
    ),
    limit_attack(
        "do-perform", "do-block", "PERFORM a deleting function",
        "DO $$ BEGIN PERFORM purge(); END $$", USERS, setup=PURGE,
    ),
    limit_attack(
        "dynamic-concat", "dynamic-sql", "EXECUTE of a concatenation",
        "DO $$ BEGIN EXECUTE 'DELETE FROM ' || 'users'; END $$", USERS,
    ),
    limit_attack(
        "dynamic-format", "dynamic-sql", "EXECUTE format('%I')",
        "DO $$ BEGIN EXECUTE format('DELETE FROM %I', 'users'); END $$", USERS,
    ),
    limit_attack(
        "dynamic-format-qualified", "dynamic-sql", "format() with schema and table",
        "DO $$ BEGIN EXECUTE format('UPDATE %I.%I SET amount = 0', 'public', 'orders'); END $$",
        ORDERS,
    ),
    limit_attack(
        "dynamic-chr", "dynamic-sql", "the table name built with chr()",
        "DO $$ BEGIN EXECUTE 'DELETE FROM ' || chr(117) || 'sers'; END $$", USERS,
    ),
    limit_attack(
        "dynamic-reverse", "dynamic-sql", "the statement reversed",
        "DO $$ BEGIN EXECUTE reverse('sresu MORF ETELED'); END $$", USERS,
    ),
    limit_attack(
        "dynamic-base64", "dynamic-sql", "the statement base64-encoded",
        "DO $$ BEGIN EXECUTE convert_from(decode('REVMRVRFIEZST00gdXNlcnM=', 'base64'), "
        "'UTF8'); END $$",
        USERS,
    ),
    limit_attack(
        "dynamic-from-table", "dynamic-sql", "the statement read from a table",
        "DO $$ BEGIN EXECUTE (SELECT value FROM app.settings WHERE key = 'cleanup'); END $$",
        ORDERS,
        setup="INSERT INTO app.settings VALUES ('cleanup', 'DELETE FROM public.orders');",
    ),
    limit_attack(
        "dynamic-using", "dynamic-sql", "EXECUTE ... USING a parameter",
        "DO $$ BEGIN EXECUTE 'DELETE FROM users WHERE id > $1' USING 0; END $$", USERS,
    ),
    limit_attack(
        "dynamic-function-arg", "dynamic-sql", "a function that runs its argument",
        "SELECT run_sql('UPDATE sensitive_data SET ssn = ''x''')", SENSITIVE,
        setup="CREATE FUNCTION run_sql(q text) RETURNS void LANGUAGE plpgsql "
        "AS $$ BEGIN EXECUTE q; END $$;",
    ),
    limit_attack(
        "dynamic-quote-ident", "dynamic-sql", "a function deleting from the table it is given",
        "SELECT wipe('users')", USERS,
        setup="CREATE FUNCTION wipe(t text) RETURNS void LANGUAGE plpgsql "
        "AS $$ BEGIN EXECUTE 'DELETE FROM ' || quote_ident(t); END $$;",
    ),
    limit_attack(
        "dynamic-replace", "dynamic-sql", "the table name fixed up by replace()",
        "DO $$ BEGIN EXECUTE replace('DELETE FROM xrders', 'x', 'o'); END $$", ORDERS,
    ),
    limit_attack(
        "dynamic-for-execute", "dynamic-sql", "FOR ... IN EXECUTE over DELETE ... RETURNING",
        "DO $$ DECLARE r record; BEGIN FOR r IN EXECUTE 'DELETE FROM users RETURNING id' "
        "LOOP END LOOP; END $$",
        USERS,
    ),
    # -- cascades, triggers, rules ---------------------------------------------------------------
    limit_attack(
        "cascade-one-user", "fk-cascade", "one user by key; ON DELETE CASCADE takes 25 orders",
        "DELETE FROM users WHERE id = 1", ORDERS,
    ),
    limit_attack(
        "cascade-two-users", "fk-cascade", "two users by key; 27 orders cascade",
        "DELETE FROM users WHERE id IN (1, 2)", ORDERS,
    ),
    limit_attack(
        "cascade-into-sensitive", "fk-cascade", "a cascade into a zero-limit table",
        "DELETE FROM users WHERE id = 55", SENSITIVE,
        setup="ALTER TABLE sensitive_data ADD FOREIGN KEY (user_id) REFERENCES users (id) "
        "ON DELETE CASCADE;",
    ),
    limit_attack(
        "cascade-on-update", "fk-cascade", "ON UPDATE CASCADE rewrites 25 orders",
        "UPDATE users SET id = 1000 WHERE id = 1", ORDERS,
        setup="ALTER TABLE orders DROP CONSTRAINT orders_user_id_fkey, ADD FOREIGN KEY "
        "(user_id) REFERENCES users (id) ON UPDATE CASCADE ON DELETE CASCADE;",
    ),
    limit_attack(
        "cascade-set-null", "fk-cascade", "ON DELETE SET NULL updates a zero-limit table",
        "DELETE FROM users WHERE id = 56", SENSITIVE,
        setup="ALTER TABLE sensitive_data ALTER user_id DROP NOT NULL, ADD FOREIGN KEY "
        "(user_id) REFERENCES users (id) ON DELETE SET NULL;",
    ),
    limit_attack(
        "cascade-from-unlimited", "fk-cascade", "deleting one team cascades into ten users",
        "DELETE FROM teams WHERE id = 1", USERS,
        setup="CREATE TABLE teams (id int PRIMARY KEY); INSERT INTO teams VALUES (1); "
        "ALTER TABLE users ADD team_id int REFERENCES teams ON DELETE CASCADE; "
        "UPDATE users SET team_id = 1 WHERE id > 50;",
    ),
    limit_attack(
        "trigger-statement", "triggers", "an UPDATE of notes fires a trigger deleting users",
        "UPDATE notes SET body = body WHERE id = 1", USERS,
        setup=trigger_fn("trg_wipe", "DELETE FROM users")
        + " CREATE TRIGGER notes_touch AFTER UPDATE ON notes "
        "FOR EACH STATEMENT EXECUTE FUNCTION trg_wipe();",
    ),
    limit_attack(
        "trigger-before-insert", "triggers", "an INSERT into audit_log rewrites every order",
        "INSERT INTO audit_log (msg) VALUES ('hello')", ORDERS,
        setup=trigger_fn("trg_orders", "UPDATE orders SET amount = 0", "NEW")
        + " CREATE TRIGGER audit_ins BEFORE INSERT ON audit_log "
        "FOR EACH ROW EXECUTE FUNCTION trg_orders();",
    ),
    limit_attack(
        "trigger-on-limited-row", "triggers",
        "a one-row UPDATE of users (within limit) whose trigger deletes orders",
        "UPDATE users SET name = 'renamed' WHERE id = 3", ORDERS,
        setup=trigger_fn("trg_orphan", "DELETE FROM orders WHERE user_id <> NEW.id", "NEW")
        + " CREATE TRIGGER users_upd AFTER UPDATE ON users "
        "FOR EACH ROW EXECUTE FUNCTION trg_orphan();",
    ),
    limit_attack(
        "trigger-deferred", "triggers", "a deferred constraint trigger deletes at COMMIT",
        "INSERT INTO audit_log (msg) VALUES ('late')", USERS,
        setup=trigger_fn("trg_late", "DELETE FROM users")
        + " CREATE CONSTRAINT TRIGGER audit_late AFTER INSERT ON audit_log "
        "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION trg_late();",
        commits=True,
    ),
    limit_attack(
        "trigger-event", "triggers", "an event trigger deletes users on any DDL",
        "CREATE TABLE scratch (a int)", USERS,
        setup="CREATE FUNCTION evt_wipe() RETURNS event_trigger LANGUAGE plpgsql "
        "AS $$ BEGIN DELETE FROM users; END $$; "
        "CREATE EVENT TRIGGER on_ddl ON ddl_command_end EXECUTE FUNCTION evt_wipe();",
    ),
    limit_attack(
        "trigger-insert-notes", "triggers", "an INSERT into notes updates a zero-limit table",
        "INSERT INTO notes VALUES (10, 2, 'hello')", SENSITIVE,
        setup=trigger_fn(
            "trg_sens", "UPDATE sensitive_data SET ssn = 'x' WHERE id = NEW.author_id", "NEW"
        )
        + " CREATE TRIGGER notes_ins AFTER INSERT ON notes "
        "FOR EACH ROW EXECUTE FUNCTION trg_sens();",
    ),
    limit_attack(
        "trigger-truncate", "triggers", "TRUNCATE of an unguarded table fires a trigger",
        "TRUNCATE audit_log", USERS,
        setup=trigger_fn("trg_trunc", "DELETE FROM users")
        + " CREATE TRIGGER audit_trunc AFTER TRUNCATE ON audit_log "
        "FOR EACH STATEMENT EXECUTE FUNCTION trg_trunc();",
    ),
    limit_attack(
        "trigger-created-inline", "triggers", "the attack creates its trigger, then fires it",
        "CREATE FUNCTION t_inline() RETURNS trigger LANGUAGE plpgsql AS $fn$ BEGIN "
        "DELETE FROM users; RETURN NULL; END $fn$; CREATE TRIGGER t_inline AFTER INSERT ON "
        "audit_log EXECUTE FUNCTION t_inline(); INSERT INTO audit_log (msg) VALUES ('x')",
        USERS,
    ),
    limit_attack(
        "copy-in-trigger", "copy", "COPY FROM STDIN into a table whose trigger deletes",
        "COPY audit_log (msg) FROM STDIN", ORDERS,
        setup=trigger_fn("trg_copy", "DELETE FROM orders")
        + " CREATE TRIGGER audit_copy AFTER INSERT ON audit_log "
        "FOR EACH STATEMENT EXECUTE FUNCTION trg_copy();",
        copy_data=b"first\nsecond\n",
    ),
    limit_attack(
        "rule-also-delete", "rules", "DO ALSO DELETE on INSERT",
        "INSERT INTO audit_log (msg) VALUES ('x')", USERS,
        setup="CREATE RULE log_also AS ON INSERT TO audit_log DO ALSO DELETE FROM users;",
    ),
    limit_attack(
        "rule-instead-update", "rules", "DO INSTEAD UPDATE orders on UPDATE notes",
        "UPDATE notes SET body = 'x' WHERE id = 2", ORDERS,
        setup="CREATE RULE notes_redirect AS ON UPDATE TO notes "
        "DO INSTEAD UPDATE orders SET amount = 0;",
    ),
    limit_attack(
        "rule-on-view", "rules", "an INSERT rule on a view deletes a zero-limit table",
        "INSERT INTO v_rule VALUES (1)", SENSITIVE,
        setup="CREATE VIEW v_rule AS SELECT 1 AS x; CREATE RULE v_rule_ins AS ON INSERT TO "
        "v_rule DO INSTEAD DELETE FROM sensitive_data;",
    ),
    limit_attack(
        "rule-on-delete", "rules", "deleting one archived order deletes every live one",
        "DELETE FROM archive.orders WHERE id = 1", ORDERS,
        setup="CREATE RULE archive_del AS ON DELETE TO archive.orders "
        "DO ALSO DELETE FROM public.orders;",
    ),
    limit_attack(
        "rule-created-inline", "rules", "the attack creates the rule, then fires it",
        "CREATE RULE r_inline AS ON UPDATE TO notes DO ALSO DELETE FROM users; "
        "UPDATE notes SET body = body WHERE id = 1",
        USERS,
    ),
    # -- renames ---------------------------------------------------------------------------------
    limit_attack(
        "rename-table", "renames", "rename users, delete under the new name",
        "ALTER TABLE users RENAME TO people; DELETE FROM people", USERS,
    ),
    limit_attack(
        "rename-orders", "renames", "rename orders, update under the new name",
        "ALTER TABLE orders RENAME TO o2; UPDATE o2 SET amount = 0", ORDERS,
    ),
    limit_attack(
        "rename-set-schema", "renames", "move sensitive_data to another schema",
        "ALTER TABLE sensitive_data SET SCHEMA app; DELETE FROM app.sensitive_data", SENSITIVE,
    ),
    limit_attack(
        "rename-schema", "renames", "rename the public schema",
        "ALTER SCHEMA public RENAME TO pub2; DELETE FROM pub2.orders", ORDERS,
    ),
    limit_attack(
        "rename-dynamic", "renames", "rename and delete by dynamic SQL",
        "DO $$ BEGIN EXECUTE 'ALTER TABLE users RENAME TO u_' || 'x'; "
        "EXECUTE 'DELETE FROM u_x'; END $$",
        USERS,
    ),
    limit_attack(
        "rename-swap", "renames", "swap in an empty users table, empty the old one",
        "BEGIN; ALTER TABLE users RENAME TO users_old; CREATE TABLE users (LIKE users_old); "
        "DELETE FROM users_old; COMMIT",
        USERS,
    ),
    # -- EXPLAIN ANALYZE, PREPARE, cursors ---------------------------------------------------------
    limit_attack(
        "explain-analyze", "explain-analyze", "EXPLAIN ANALYZE runs the DELETE",
        "EXPLAIN ANALYZE DELETE FROM users", USERS,
    ),
    limit_attack(
        "explain-analyze-json", "explain-analyze", "EXPLAIN (ANALYZE, FORMAT JSON)",
        "EXPLAIN (ANALYZE, FORMAT JSON) UPDATE orders SET amount = 0", ORDERS,
    ),
    limit_attack(
        "explain-analyze-true", "explain-analyze", "EXPLAIN (ANALYZE true, COSTS off)",
        "EXPLAIN (ANALYZE true, COSTS off) DELETE FROM sensitive_data", SENSITIVE,
    ),
    limit_attack(
        "explain-analyze-one", "explain-analyze", "EXPLAIN (ANALYZE 1)",
        "EXPLAIN (ANALYZE 1) DELETE FROM orders WHERE id < 20", ORDERS,
    ),
    limit_attack(
        "explain-analyze-cte", "explain-analyze", "EXPLAIN ANALYZE of a data-modifying CTE",
        "EXPLAIN (analyze) WITH d AS (DELETE FROM users RETURNING 1) SELECT * FROM d", USERS,
    ),
    limit_attack(
        "explain-analyze-function", "explain-analyze", "EXPLAIN ANALYZE of a deleting function",
        "EXPLAIN ANALYZE SELECT purge()", USERS, setup=PURGE,
    ),
    limit_attack(
        "prepare-execute", "prepare-execute", "PREPARE then EXECUTE",
        "PREPARE p AS DELETE FROM users; EXECUTE p", USERS,
    ),
    limit_attack(
        "prepare-parameter", "prepare-execute", "the bound predicate is a tautology",
        "PREPARE p(int) AS DELETE FROM users WHERE id > $1; EXECUTE p(0)", USERS,
    ),
    limit_attack(
        "prepare-explain-execute", "prepare-execute", "EXPLAIN ANALYZE EXECUTE",
        "PREPARE p AS UPDATE orders SET amount = 0; EXPLAIN ANALYZE EXECUTE p", ORDERS,
    ),
    limit_attack(
        "prepare-text-parameter", "prepare-execute", "a text parameter nobody matches",
        "PREPARE p(text) AS DELETE FROM sensitive_data WHERE ssn <> $1; EXECUTE p('none')",
        SENSITIVE,
    ),
    limit_attack(
        "cursor-function", "cursors", "FETCH from a cursor over a deleting function",
        "BEGIN; DECLARE c CURSOR FOR SELECT purge(); FETCH ALL FROM c; COMMIT", USERS,
        setup=PURGE,
    ),
    limit_attack(
        "cursor-where-current-of", "cursors",
        "eleven single-row DELETE ... WHERE CURRENT OF in one transaction",
        "BEGIN; DECLARE c CURSOR FOR SELECT id FROM orders ORDER BY id FOR UPDATE; "
        + " ".join(["FETCH c; DELETE FROM orders WHERE CURRENT OF c;"] * 11)
        + " COMMIT",
        ORDERS,
    ),
    limit_attack(
        "cursor-plpgsql", "cursors", "a PL/pgSQL cursor loop with WHERE CURRENT OF",
        "DO $$ DECLARE c CURSOR FOR SELECT id FROM users WHERE id > 50 FOR UPDATE; "
        "BEGIN FOR r IN c LOOP DELETE FROM users WHERE CURRENT OF c; END LOOP; END $$",
        USERS,
    ),
    limit_attack(
        "cursor-implicit-transaction", "cursors", "DECLARE and FETCH in one Query",
        "DECLARE c CURSOR FOR SELECT purge(); FETCH ALL c", USERS, setup=PURGE,
    ),
    limit_attack(
        "cursor-move", "cursors", "MOVE runs the query without returning rows",
        "BEGIN; DECLARE c SCROLL CURSOR FOR SELECT purge_rows(); MOVE ALL IN c; COMMIT",
        ORDERS, setup=PURGE_ROWS,
    ),
]
# fmt: on
