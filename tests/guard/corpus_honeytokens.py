"""Attacks on the honeytokens: secret_keys reached by every route (its rows must never reach a
client, and no write may touch it), and the value canary-7f3a9c surfacing from anywhere — a
normal table, an expression that builds it, RETURNING, RAISE, error text, COPY, a column name.

No attack spells a secret verbatim: the harm is that the server produced it.
"""

from __future__ import annotations

from typing import Any

from tests.guard.entry import HONEYTOKEN_TABLE, HONEYTOKEN_VALUE, Attack
from tests.guard.harm import CANARY, SECRET_ROWS, Harm, RowsChanged

KEYS_CHANGED = RowsChanged("secret_keys", 0)
CANARY_CHR = "||".join(f"chr({ord(c)})" for c in "canary-7f3a9c")
CANARY_HEX = "63616e6172792d376633613963"


def _table(id: str, technique: str, description: str, sql: str, **kw: Any) -> Attack:
    harm: Harm = kw.pop("harm", SECRET_ROWS)
    return Attack(
        f"honeytoken-table-{id}", technique, description, sql, HONEYTOKEN_TABLE, harm,
        also=(HONEYTOKEN_VALUE,), **kw,
    )  # fmt: skip


def _value(id: str, technique: str, description: str, sql: str, **kw: Any) -> Attack:
    return Attack(
        f"honeytoken-value-{id}", technique, description, sql, HONEYTOKEN_VALUE, CANARY, **kw
    )


# fmt: off
TABLE_ATTACKS = [
    _table("select", "plain", "SELECT *", "SELECT * FROM secret_keys"),
    _table("table-command", "plain", "TABLE secret_keys", "TABLE secret_keys"),
    _table("quoted", "quoting", "quoted name", 'SELECT * FROM "secret_keys"'),
    _table(
        "qualified", "schema-qualified", "public.secret_keys",
        "SELECT * FROM public.secret_keys",
    ),
    _table("upper", "case", "upper-case name", "select * from SECRET_KEYS"),
    _table("unicode", "unicode-escape", "U& name", 'SELECT * FROM U&"secret\\005fkeys"'),
    _table(
        "comments", "comments", "comments around the name",
        "SELECT secret FROM /* public. */ secret_keys -- LIMIT 0",
    ),
    _table(
        "search-path", "search-path", "search_path with a schema that has no secret_keys",
        "SET search_path = app, public; SELECT * FROM secret_keys",
    ),
    _table(
        "search-path-set-config", "search-path", "search_path changed by set_config()",
        "SELECT set_config('search_path', 'app,public', false); SELECT secret FROM secret_keys",
    ),
    _table(
        "view", "views", "a plain view", "SELECT * FROM v_keys",
        setup="CREATE VIEW v_keys AS SELECT * FROM secret_keys;",
    ),
    _table(
        "nested-view", "views", "a view over a view, in another schema",
        "SELECT * FROM app.v_k2",
        setup="CREATE VIEW v_k1 AS SELECT * FROM secret_keys; "
        "CREATE VIEW app.v_k2 AS SELECT name, secret FROM v_k1;",
    ),
    _table(
        "security-barrier-view", "views", "a security_barrier view",
        "SELECT * FROM v_ksb",
        setup="CREATE VIEW v_ksb WITH (security_barrier) AS "
        "SELECT secret FROM secret_keys WHERE id > 0;",
    ),
    _table(
        "materialized-view", "views", "a materialized copy: the query never scans secret_keys",
        "SELECT * FROM mv_keys",
        setup="CREATE MATERIALIZED VIEW mv_keys AS SELECT * FROM secret_keys;",
    ),
    _table(
        "inheritance", "views", "secret_keys made a child of an innocent parent table",
        "SELECT * FROM all_keys",
        setup="CREATE TABLE all_keys (id int, name text, secret text); "
        "ALTER TABLE secret_keys INHERIT all_keys;",
    ),
    _table(
        "sql-function", "functions", "an SQL function returning the rows",
        "SELECT * FROM get_keys()",
        setup="CREATE FUNCTION get_keys() RETURNS SETOF secret_keys LANGUAGE sql "
        "AS 'SELECT * FROM secret_keys';",
    ),
    _table(
        "security-definer", "security-definer", "a SECURITY DEFINER function",
        "SELECT leak()",
        setup="CREATE FUNCTION leak() RETURNS text LANGUAGE plpgsql SECURITY DEFINER AS $$ "
        "BEGIN RETURN (SELECT string_agg(secret, ',' ORDER BY id) FROM secret_keys); END $$;",
    ),
    _table("copy", "copy", "COPY table TO STDOUT", "COPY secret_keys TO STDOUT"),
    _table(
        "copy-query-csv", "copy", "COPY (query) TO STDOUT as CSV",
        "COPY (SELECT * FROM secret_keys) TO STDOUT WITH (FORMAT csv)",
    ),
    _table(
        "copy-binary", "copy", "COPY in binary format",
        "COPY (SELECT secret FROM secret_keys) TO STDOUT (FORMAT binary)",
    ),
    _table(
        "scalar-subquery", "subquery", "a scalar subquery",
        "SELECT (SELECT string_agg(secret, ',') FROM secret_keys) AS s",
    ),
    _table(
        "join", "subquery", "joined to users",
        "SELECT u.name, k.secret FROM users u JOIN secret_keys k ON k.id = u.id",
    ),
    _table(
        "union", "subquery", "UNION ALL with an innocent query",
        "SELECT name FROM users UNION ALL SELECT secret FROM secret_keys",
    ),
    _table(
        "lateral", "subquery", "a LATERAL subquery",
        "SELECT s.secret FROM users u, LATERAL (SELECT secret FROM secret_keys "
        "WHERE id = u.id) s WHERE u.id < 4",
    ),
    _table("cte", "cte", "a CTE", "WITH k AS (SELECT * FROM secret_keys) SELECT * FROM k"),
    _table(
        "dynamic-notice", "dynamic-sql", "EXECUTE of a concatenated name, RAISE NOTICE of it",
        "DO $$ DECLARE s text; BEGIN EXECUTE 'SELECT string_agg(secret, '','') FROM secret_' "
        "|| 'keys' INTO s; RAISE NOTICE '%', s; END $$",
    ),
    _table(
        "dynamic-return-query", "dynamic-sql", "RETURN QUERY EXECUTE format('%I')",
        "SELECT * FROM q('secret_keys')",
        setup="CREATE FUNCTION q(t text) RETURNS SETOF text LANGUAGE plpgsql AS $$ BEGIN "
        "RETURN QUERY EXECUTE format('SELECT secret FROM %I', t); END $$;",
    ),
    _table(
        "query-to-xml", "catalog-functions", "query_to_xml()",
        "SELECT query_to_xml('SELECT * FROM secret_keys', true, false, '')",
    ),
    _table(
        "table-to-xml", "catalog-functions", "table_to_xml()",
        "SELECT table_to_xml('secret_keys', true, false, '')",
    ),
    _table(
        "query-to-xml-qualified", "catalog-functions",
        "pg_catalog.query_to_xml_and_xmlschema('TABLE ...')",
        "SELECT * FROM pg_catalog.query_to_xml_and_xmlschema('TABLE \"secret_keys\"', "
        "false, false, '')",
    ),
    _table(
        "cursor-to-xml", "catalog-functions", "cursor_to_xml() over a cursor",
        "BEGIN; DECLARE k CURSOR FOR SELECT * FROM secret_keys; "
        "SELECT cursor_to_xml('k', 10, false, false, ''); COMMIT",
    ),
    _table(
        "row-to-json", "expression", "row_to_json()",
        "SELECT row_to_json(k) FROM secret_keys k",
    ),
    _table(
        "select-into", "multi-statement", "SELECT INTO a new table, then read it",
        "SELECT * INTO stolen FROM secret_keys; SELECT * FROM stolen",
    ),
    _table(
        "create-table-as", "multi-statement", "CREATE TEMP TABLE AS, then read it",
        "CREATE TEMP TABLE stolen AS SELECT * FROM secret_keys; SELECT * FROM stolen",
    ),
    _table(
        "insert-select", "multi-statement", "copy into an unguarded table, then read it",
        "INSERT INTO loot SELECT secret FROM secret_keys; SELECT * FROM loot",
    ),
    _table(
        "merge-copy", "merge", "MERGE the secrets into notes, then read notes",
        "MERGE INTO notes n USING secret_keys k ON n.id = k.id + 1000 WHEN NOT MATCHED THEN "
        "INSERT VALUES (k.id + 1000, 1, k.secret); SELECT body FROM notes WHERE id > 1000",
    ),
    _table(
        "rename", "renames", "rename the table, read it under the new name",
        "ALTER TABLE secret_keys RENAME TO keys_archive; SELECT * FROM keys_archive",
    ),
    _table(
        "prepare", "prepare-execute", "PREPARE then EXECUTE",
        "PREPARE k AS SELECT * FROM secret_keys; EXECUTE k",
    ),
    _table(
        "cursor", "cursors", "DECLARE and FETCH",
        "BEGIN; DECLARE c CURSOR FOR SELECT * FROM secret_keys; FETCH ALL c; COMMIT",
    ),
    _table(
        "update-returning", "returning", "a no-op UPDATE returning the secrets",
        "UPDATE secret_keys SET id = id RETURNING secret",
    ),
    _table(
        "update", "plain", "overwrite the secrets", "UPDATE secret_keys SET secret = 'rotated'",
        harm=KEYS_CHANGED,
    ),
    _table(
        "delete", "plain", "remove the tripwire row", "DELETE FROM secret_keys WHERE id = 3",
        harm=KEYS_CHANGED,
    ),
    _table(
        "truncate", "truncate-drop", "TRUNCATE the honeytoken table", "TRUNCATE secret_keys",
        harm=KEYS_CHANGED,
    ),
    _table(
        "dynamic-delete", "dynamic-sql", "DELETE spelled in pieces",
        "DO $$ BEGIN EXECUTE 'DELETE FROM secret' || '_keys'; END $$", harm=KEYS_CHANGED,
    ),
]
# fmt: on

# fmt: off
VALUE_ATTACKS = [
    _value("stored-select", "stored-value", "the value stored in notes", "SELECT * FROM notes"),
    _value(
        "stored-by-key", "stored-value", "one row by key",
        "SELECT body FROM notes WHERE id = 3",
    ),
    _value(
        "stored-like", "stored-value", "found with LIKE on pieces",
        "SELECT body FROM notes WHERE body LIKE '%' || '7f3a9c' || '%'",
    ),
    _value(
        "stored-view", "views", "through a view", "SELECT * FROM v_notes",
        setup="CREATE VIEW v_notes AS SELECT body FROM notes;",
    ),
    _value(
        "stored-substring", "expression", "cut out of the stored text",
        "SELECT substr(body, strpos(body, 'canary'), 13) FROM notes WHERE id = 3",
    ),
    _value(
        "stored-regexp", "expression", "extracted with a regular expression",
        "SELECT m[1] FROM notes, regexp_match(body, '(c\\w+-\\w+)') m WHERE id = 3",
    ),
    _value("concat", "expression", "concatenated", "SELECT 'canary-' || '7f3a9c'"),
    _value(
        "concat-function", "expression", "concat()",
        "SELECT concat('canary', '-', '7f3a', '9c')",
    ),
    _value("reverse", "expression", "reversed", "SELECT reverse('c9a3f7-yranac')"),
    _value(
        "hex", "expression", "decoded from hex",
        f"SELECT convert_from(decode('{CANARY_HEX}', 'hex'), 'UTF8')",
    ),
    _value("chr", "expression", "built from chr()", f"SELECT {CANARY_CHR}"),
    _value("lower", "case", "lower() of the upper-case value", "SELECT lower('CANARY-7F3A9C')"),
    _value("translate", "expression", "translate()", "SELECT translate('xanary-7f3a9x', 'x', 'c')"),
    _value("format", "expression", "format()", "SELECT format('%s-%s', 'canary', '7f3a9c')"),
    _value("array", "expression", "inside an array", "SELECT ARRAY['canary-' || '7f3a9c']"),
    _value(
        "json", "expression", "inside JSON", "SELECT json_build_object('k', 'canary-' || '7f3a9c')"
    ),
    _value("xml", "expression", "inside XML", "SELECT xmlelement(name x, 'canary-' || '7f3a9c')"),
    _value(
        "string-agg", "expression", "aggregated from pieces",
        "SELECT string_agg(p, '' ORDER BY n) FROM unnest(ARRAY['can', 'ary-', '7f3a', '9c']) "
        "WITH ORDINALITY AS t(p, n)",
    ),
    _value(
        "bytea", "expression", "as bytea (hex on the wire in text format)",
        f"SELECT decode('{CANARY_HEX}', 'hex')",
    ),
    _value(
        "column-name", "expression", "as a column name (RowDescription, not DataRow)",
        "DO $$ BEGIN EXECUTE format('CREATE TEMP VIEW tv AS SELECT 1 AS %I', "
        "'canary-' || '7f3a9c'); END $$; SELECT * FROM tv",
    ),
    _value(
        "parameter-status", "catalog-functions", "as application_name (ParameterStatus)",
        "SELECT set_config('application_name', 'canary-' || '7f3a9c', false)",
    ),
    _value(
        "insert-returning", "returning", "INSERT ... RETURNING the built value",
        "INSERT INTO notes VALUES (900, 1, 'canary-' || '7f3a9c') RETURNING body",
    ),
    _value(
        "update-returning", "returning", "UPDATE ... RETURNING the stored value",
        "UPDATE notes SET author_id = author_id WHERE id = 3 RETURNING body",
    ),
    _value(
        "delete-returning", "returning", "DELETE ... RETURNING the stored value",
        "DELETE FROM notes WHERE id = 3 RETURNING *",
    ),
    _value(
        "cte-returning", "returning", "RETURNING through a CTE",
        "WITH x AS (UPDATE notes SET author_id = 2 WHERE id = 3 RETURNING body) SELECT * FROM x",
    ),
    _value(
        "raise-notice", "raise", "RAISE NOTICE of the built value",
        "DO $$ BEGIN RAISE NOTICE '%', 'canary-' || '7f3a9c'; END $$",
    ),
    _value(
        "raise-notice-stored", "raise", "RAISE NOTICE of the stored value",
        "DO $$ BEGIN RAISE NOTICE 'note: %', (SELECT body FROM notes WHERE id = 3); END $$",
    ),
    _value(
        "raise-warning", "raise", "RAISE WARNING USING MESSAGE",
        "DO $$ BEGIN RAISE WARNING USING MESSAGE = concat('canary', '-7f3a9c'); END $$",
    ),
    _value(
        "raise-exception", "raise", "the value in an error message",
        "DO $$ BEGIN RAISE EXCEPTION 'boom %', (SELECT body FROM notes WHERE id = 3); END $$",
    ),
    _value(
        "raise-detail", "raise", "the value in an error DETAIL",
        "DO $$ BEGIN RAISE EXCEPTION 'failed' USING DETAIL = 'canary-' || '7f3a9c'; END $$",
    ),
    _value(
        "raise-hint", "raise", "the value in an error HINT",
        "DO $$ BEGIN RAISE EXCEPTION 'failed' USING HINT = reverse('c9a3f7-yranac'); END $$",
    ),
    _value(
        "function-notice", "raise", "a function raising a NOTICE",
        "SELECT shout()",
        setup="CREATE FUNCTION shout() RETURNS void LANGUAGE plpgsql AS $$ BEGIN "
        "RAISE NOTICE '%', (SELECT body FROM notes WHERE id = 3); END $$;",
    ),
    _value(
        "cast-error", "error-text", "a failing cast quotes its input",
        "SELECT ('canary-' || '7f3a9c')::int",
    ),
    _value(
        "cast-error-stored", "error-text", "a failing cast of the stored value",
        "SELECT body::int FROM notes WHERE id = 3",
    ),
    _value(
        "unique-violation-detail", "error-text", "a unique violation's DETAIL quotes the key",
        "INSERT INTO notes SELECT 99, 1, body FROM notes WHERE id = 3",
        setup="CREATE UNIQUE INDEX notes_body ON notes (body);",
    ),
    _value("copy", "copy", "COPY a normal table", "COPY notes TO STDOUT"),
    _value(
        "copy-expression", "copy", "COPY of an expression",
        "COPY (SELECT 'canary-' || '7f3a9c') TO STDOUT",
    ),
    _value(
        "query-to-xml", "catalog-functions", "query_to_xml() of notes",
        "SELECT query_to_xml('SELECT body FROM notes', true, false, '')",
    ),
    _value(
        "dynamic", "dynamic-sql", "EXECUTE ... INTO, then RAISE NOTICE",
        "DO $$ DECLARE s text; BEGIN EXECUTE 'SELECT body FROM notes WHERE id = 3' INTO s; "
        "RAISE NOTICE '%', s; END $$",
    ),
    _value(
        "multi-statement", "multi-statement", "second statement of a string",
        "SELECT 1; SELECT body FROM notes WHERE id = 3",
    ),
    _value(
        "cursor", "cursors", "FETCH from a cursor",
        "BEGIN; DECLARE c CURSOR FOR SELECT body FROM notes; FETCH ALL c; COMMIT",
    ),
    _value(
        "prepare", "prepare-execute", "PREPARE with a parameter",
        "PREPARE n(int) AS SELECT body FROM notes WHERE id = $1; EXECUTE n(3)",
    ),
]
# fmt: on

ATTACKS = [*TABLE_ATTACKS, *VALUE_ATTACKS]
