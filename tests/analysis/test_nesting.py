"""Statements inside statements: bodies, wrapped statements, multi-statement strings, and the
names the session tracks (prepared statements, cursors, transaction state)."""

from __future__ import annotations

import pytest

from proxyworker.analysis import (
    AnalysisError,
    SettingChange,
    StatementKind,
    TransactionOp,
    analyze,
)
from tests.analysis.expect import one, rel, rels

K = StatementKind


def test_it_splits_a_multi_statement_string_into_one_info_per_statement() -> None:
    infos = analyze("SELECT 1; DELETE FROM users WHERE id = 7; DROP TABLE t;")
    assert [(i.kind, i.command) for i in infos] == [
        (K.SELECT, "SELECT"),
        (K.DELETE, "DELETE"),
        (K.DDL, "DROP TABLE"),
    ]
    assert infos[1].writes == rels(["users"]) and infos[1].has_where
    assert infos[2].drops == rels(["t"])
    assert [i.normalized for i in infos] == [
        "SELECT $1",
        "DELETE FROM users WHERE id = $1",
        "DROP TABLE t",
    ]


def test_it_slices_statements_by_byte_offsets_in_non_ascii_text() -> None:
    infos = analyze("SELECT 'ünïcödé' FROM \"tä\"; UPDATE \"ö\" SET x = 'é' WHERE y = 1")
    assert infos[0].reads == rels(["tä"])
    assert infos[1].writes == rels(["ö"])
    assert infos[1].normalized == 'UPDATE "ö" SET x = $1 WHERE y = $2'


def test_it_gives_each_statement_its_own_fingerprint() -> None:
    combined = analyze("SELECT 1; SELECT 2; DELETE FROM t")
    assert combined[0].fingerprint == combined[1].fingerprint  # same shape, other constant
    assert combined[0].fingerprint != combined[2].fingerprint
    assert combined[2].fingerprint == one("delete   from T").fingerprint


def test_it_keeps_the_statement_explain_wraps_as_its_body() -> None:
    info = one("EXPLAIN (ANALYZE, VERBOSE) UPDATE t SET a = 1")
    assert info.executes
    (inner,) = info.body
    assert (inner.kind, inner.has_where) == (K.UPDATE, False)
    assert inner.writes_without_where == rels(["t"])
    assert inner.normalized == "UPDATE t SET a = $1"
    assert inner.fingerprint == one("UPDATE t SET a = 2").fingerprint


def test_it_applies_settings_from_explain_analyze_but_not_from_plain_explain() -> None:
    change = SettingChange("search_path", "x")
    ran = one("EXPLAIN ANALYZE SELECT set_config('search_path', 'x', false)")
    planned = one("EXPLAIN SELECT set_config('search_path', 'x', false)")
    assert ran.settings == (change,)
    assert planned.settings == ()
    # Functions are reported either way: planning can already evaluate immutable ones.
    assert ran.functions == planned.functions == frozenset({"set_config"})


def test_it_names_the_prepared_statement_that_runs() -> None:
    prepare = one("PREPARE del (int) AS DELETE FROM users WHERE id = $1")
    assert prepare.prepared_name == "del"
    (inner,) = prepare.body
    assert (inner.kind, inner.has_where, inner.writes) == (K.DELETE, True, rels(["users"]))
    assert inner.normalized == "DELETE FROM users WHERE id = $1"
    assert one("EXECUTE del(1)").prepared_name == "del"
    assert one("EXPLAIN ANALYZE EXECUTE del(1)").prepared_name == "del"
    assert one("CREATE TABLE copy AS EXECUTE del(1)").prepared_name == "del"
    assert one("DEALLOCATE PREPARE del").prepared_name == "del"
    assert one("DEALLOCATE ALL").prepared_name is None


def test_it_names_the_cursor() -> None:
    declare = one("DECLARE c1 NO SCROLL CURSOR WITH HOLD FOR SELECT * FROM secret FOR UPDATE")
    assert declare.portal_name == "c1"
    (inner,) = declare.body
    assert inner.kind == K.SELECT and inner.reads == rels(["secret"])
    assert inner.normalized == "SELECT * FROM secret FOR UPDATE"
    assert one("FETCH 5 FROM c1").portal_name == "c1"
    assert one("MOVE NEXT IN c1").portal_name == "c1"
    assert one("CLOSE c1").portal_name == "c1"
    assert one("CLOSE ALL").portal_name is None


@pytest.mark.parametrize(
    ("sql", "op"),
    [
        ("BEGIN", TransactionOp.BEGIN),
        ("BEGIN ISOLATION LEVEL SERIALIZABLE", TransactionOp.BEGIN),
        ("START TRANSACTION READ ONLY", TransactionOp.BEGIN),
        ("COMMIT", TransactionOp.COMMIT),
        ("END", TransactionOp.COMMIT),
        ("COMMIT AND CHAIN", TransactionOp.COMMIT),
        ("ROLLBACK", TransactionOp.ROLLBACK),
        ("ABORT", TransactionOp.ROLLBACK),
        ("SAVEPOINT s", TransactionOp.SAVEPOINT),
        ("RELEASE SAVEPOINT s", TransactionOp.RELEASE),
        ("ROLLBACK TO SAVEPOINT s", TransactionOp.ROLLBACK_TO),
        ("PREPARE TRANSACTION 'g'", TransactionOp.PREPARE_TRANSACTION),
        ("COMMIT PREPARED 'g'", TransactionOp.COMMIT_PREPARED),
        ("ROLLBACK PREPARED 'g'", TransactionOp.ROLLBACK_PREPARED),
    ],
)
def test_it_reports_the_transaction_operation(sql: str, op: TransactionOp) -> None:
    info = one(sql)
    assert (info.kind, info.transaction_op) == (K.TRANSACTION, op)


def test_it_lists_every_sql_statement_of_a_do_block_in_order() -> None:
    info = one(
        """
        DO $$
        DECLARE
            n int := (SELECT count(*) FROM users);
        BEGIN
            IF n > limit_for('users') THEN
                DELETE FROM users WHERE id = n;
            END IF;
            n := n + bump(1);
            EXECUTE 'TRUNCATE audit';
            COMMIT;
        EXCEPTION WHEN others THEN
            INSERT INTO errors VALUES (sqlerrm);
        END $$
        """
    )
    assert [(b.kind, b.normalized) for b in info.body] == [
        (K.SELECT, "SELECT (SELECT count(*) FROM users)"),
        (K.SELECT, "SELECT n > limit_for($1)"),
        (K.DELETE, "DELETE FROM users WHERE id = n"),
        (K.SELECT, "SELECT n + bump($1)"),
        (K.SELECT, "SELECT $1"),
        (K.DDL, "TRUNCATE audit"),
        (K.TRANSACTION, "COMMIT"),
        (K.INSERT, "INSERT INTO errors VALUES (sqlerrm)"),
    ]
    assert info.truncates == rels(["audit"])
    assert info.functions == frozenset({"count", "limit_for", "bump"})
    assert not info.dynamic_sql


def test_it_finds_sql_in_every_plpgsql_construct() -> None:
    info = one(
        """
        CREATE FUNCTION f(k int) RETURNS SETOF int LANGUAGE plpgsql AS $$
        DECLARE
            c CURSOR (x int) FOR SELECT id FROM cursor_src WHERE id = x;
            r record;
            a int[];
        BEGIN
            a[g1(k)] := 1;
            FOR i IN 1..g2(k) LOOP NULL; END LOOP;
            FOREACH k IN ARRAY (SELECT array_agg(id) FROM arr_src) LOOP NULL; END LOOP;
            WHILE (SELECT true FROM while_src) LOOP EXIT; END LOOP;
            CASE k WHEN g3(1) THEN NULL; ELSE NULL; END CASE;
            OPEN c(1);
            FOR r IN EXECUTE 'SELECT * FROM dyn_src' LOOP NULL; END LOOP;
            RETURN QUERY SELECT id FROM query_src;
            RETURN QUERY EXECUTE 'SELECT id FROM dyn_query_src';
            PERFORM g4(1);
            CALL proc(2);
            ASSERT (SELECT count(*) FROM assert_src) > 0, g5('message');
            RAISE NOTICE '%', g6(k);
            GET DIAGNOSTICS k = ROW_COUNT;
            RETURN;
        END $$
        """
    )
    assert info.reads == rels(
        [
            "cursor_src",
            "arr_src",
            "while_src",
            "dyn_src",
            "query_src",
            "dyn_query_src",
            "assert_src",
        ]
    )
    assert {"g1", "g2", "g3", "g4", "g5", "g6", "proc"} <= info.functions
    assert not info.dynamic_sql
    assert info.ddl_routines == frozenset({"f"})


def test_it_flags_dynamic_sql_it_cannot_read() -> None:
    info = one("DO $$ DECLARE t text := 'users'; BEGIN EXECUTE format('DELETE FROM %I', t); END $$")
    assert info.dynamic_sql
    assert info.functions == frozenset({"format"})
    assert info.writes == frozenset()


def test_it_keeps_settings_of_function_bodies_out_of_the_session() -> None:
    created = one(
        "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql"
        " AS $$ BEGIN PERFORM set_config('search_path', 'evil', false); END $$"
    )
    assert created.settings == ()
    assert [b.settings for b in created.body] == [(SettingChange("search_path", "evil"),)]
    executed = one("DO $$ BEGIN SET search_path = evil; END $$")
    assert executed.settings == (SettingChange("search_path", "evil"),)


def test_it_ignores_a_functions_own_set_clause() -> None:
    info = one("CREATE FUNCTION f() RETURNS int LANGUAGE sql SET search_path = evil AS 'SELECT 1'")
    assert info.settings == ()
    assert [b.kind for b in info.body] == [K.SELECT]


def test_it_walks_every_nested_statement() -> None:
    info = one("PREPARE p AS WITH d AS (DELETE FROM a RETURNING *) SELECT * FROM d")
    walked = list(info.statements())
    assert walked[0] is info
    assert [s.kind for s in walked] == [K.PREPARE, K.SELECT]
    assert walked[1].writes_without_where == rels(["a"])

    do = one("DO $$ BEGIN EXECUTE $x$ DO $y$ BEGIN DELETE FROM deep; END $y$ $x$; END $$")
    assert do.writes == rels(["deep"])
    kinds = [s.kind for s in do.statements()]
    assert kinds == [K.DO, K.SELECT, K.DO, K.DELETE]


def test_it_reports_rule_actions_as_the_rules_body() -> None:
    info = one(
        "CREATE RULE keep AS ON DELETE TO users DO INSTEAD"
        " (UPDATE users SET deleted = true WHERE id = old.id; INSERT INTO log VALUES (old.id))"
    )
    assert [b.kind for b in info.body] == [K.UPDATE, K.INSERT]
    assert info.writes == rels(["users", "log"])
    assert info.ddl_targets == rels(["users"])


def test_it_denies_a_body_that_does_not_parse() -> None:
    with pytest.raises(AnalysisError, match="DO block"):
        analyze("DO $$ BEGIN DELET FROM users; END $$")
    with pytest.raises(AnalysisError, match="SQL function body"):
        analyze("CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELEC 1'")
    with pytest.raises(AnalysisError):
        analyze("DO $$ BEGIN EXECUTE 'DELET FROM users'; END $$")


def test_it_denies_nesting_deeper_than_it_will_follow() -> None:
    sql = "DELETE FROM bottom"
    for level in range(12):
        quoted = "'" + sql.replace("'", "''") + "'"
        sql = f"DO $q{level}$ BEGIN EXECUTE {quoted}; END $q{level}$"
    with pytest.raises(AnalysisError, match="nested"):
        analyze(sql)
    # Three levels are fine.
    sql = "DELETE FROM bottom"
    for level in range(3):
        quoted = "'" + sql.replace("'", "''") + "'"
        sql = f"DO $q{level}$ BEGIN EXECUTE {quoted}; END $q{level}$"
    assert one(sql).writes == rels(["bottom"])


def test_it_reports_relations_of_a_create_schema_in_the_new_schema() -> None:
    info = one("CREATE SCHEMA app CREATE TABLE t (a int) CREATE VIEW v AS SELECT * FROM other.z")
    assert info.ddl_targets == rels(["app.t", "app.v"])
    assert info.reads == frozenset({rel("other.z")})
