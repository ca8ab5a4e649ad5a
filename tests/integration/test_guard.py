"""The guard through a real worker: signatures, honeytoken tables, unparseable statements and
row limits verified by the server's own counters — simple and extended protocol, both pool
modes. Every refusal leaves the database unchanged and the session usable."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import asyncpg
import psycopg
import pytest
from psycopg import errors

from tests.conftest import databases_toml
from tests.support.pgcluster import PgCluster, wait_until
from tests.support.worker import APP_PASSWORD, APP_USER, WorkerProcess, launch

POLICY = """
[table_limits]
guarded_users = 5
plain_limited = 1

[honeytokens]
tables = ["secret_keys"]
values = ["canary-7f3a9c"]

[signatures]
enabled = true

[audit]
path = "{audit}"
sample_allowed = 1.0
"""

SCHEMA = """
DROP TABLE IF EXISTS guarded_orders, guarded_users, secret_keys CASCADE;
DROP VIEW IF EXISTS guarded_users_view;
CREATE TABLE guarded_users (id int PRIMARY KEY, name text);
INSERT INTO guarded_users SELECT g, 'user ' || g FROM generate_series(1, 50) g;
CREATE TABLE guarded_orders (id int PRIMARY KEY,
    user_id int REFERENCES guarded_users ON DELETE CASCADE);
CREATE TABLE secret_keys (k text);
INSERT INTO secret_keys VALUES ('do-not-read');
CREATE VIEW guarded_users_view AS SELECT * FROM guarded_users;
DROP TABLE IF EXISTS plain_limited CASCADE;
CREATE TABLE plain_limited (id int PRIMARY KEY, v int);
INSERT INTO plain_limited SELECT g, 0 FROM generate_series(1, 10) g;
CREATE OR REPLACE VIEW plain_limited_view AS SELECT * FROM plain_limited;
DROP TABLE IF EXISTS notes;
CREATE TABLE notes (id int, body text);
INSERT INTO notes VALUES (1, 'ordinary'), (2, 'has canary-7f3a9c inside'), (3, 'ordinary too');
CREATE OR REPLACE FUNCTION wipe_users() RETURNS void LANGUAGE sql
    AS 'DELETE FROM guarded_users';
"""


@pytest.fixture(scope="module")
def guarded(
    upstream: PgCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    with upstream.connect() as conn:
        conn.execute(SCHEMA)
    audit = tmp_path_factory.mktemp("audit") / "audit.jsonl"
    proc = launch(databases_toml(upstream), policy=POLICY.format(audit=audit))
    proc.audit_path = str(audit)  # type: ignore[attr-defined]
    yield proc
    proc.stop()


@pytest.fixture(autouse=True)
def fresh_rows(upstream: PgCluster) -> None:
    with upstream.connect() as conn:
        conn.execute(
            "TRUNCATE guarded_users CASCADE; "
            "INSERT INTO guarded_users SELECT g, 'user ' || g FROM generate_series(1, 50) g"
        )


def user_count(upstream: PgCluster) -> int:
    with upstream.connect() as conn:
        row = conn.execute("SELECT count(*) FROM guarded_users").fetchone()
        assert row is not None
        return int(row[0])


def simple(proc: WorkerProcess, db: str) -> psycopg.Connection:
    return psycopg.connect(proc.dsn(db), autocommit=True, cursor_factory=psycopg.ClientCursor)


def connect(proc: WorkerProcess, db: str, protocol: str) -> psycopg.Connection:
    """psycopg over the simple protocol (ClientCursor) or the extended one (the default)."""
    if protocol == "simple":
        return simple(proc, db)
    return psycopg.connect(proc.dsn(db), autocommit=True)


def reload_catalog(proc: WorkerProcess) -> None:
    """Objects created directly are seen once the worker reloads its catalog, which DDL
    through the worker triggers when its transaction ends; the reload runs in the background
    and takes milliseconds."""
    with simple(proc, "app") as conn:
        conn.execute("CREATE TEMP TABLE reload_catalog (x int)")
    time.sleep(1)


def refused(exc: pytest.ExceptionInfo[psycopg.Error], rule: str) -> None:
    assert exc.value.sqlstate == "42501", exc.value
    assert exc.value.diag.message_primary is not None
    assert exc.value.diag.message_primary.startswith("sqlproxy: ")
    assert rule in exc.value.diag.message_primary


@pytest.mark.parametrize("protocol", ["simple", "extended"])
def test_it_denies_signatures_and_stays_usable(
    guarded: WorkerProcess, db: str, protocol: str
) -> None:
    conn = connect(guarded, db, protocol)
    with conn:
        for sql in (
            "SELECT pg_read_file('/etc/passwd')",
            "select PG_CATALOG.\"pg_read_file\"('/etc/hostname')",
            "SELECT 1; SELECT pg_sleep(0)",
            "COPY (SELECT 1) TO PROGRAM 'id'",
            "SET ROLE postgres",
        ):
            with pytest.raises(errors.InsufficientPrivilege) as exc:
                conn.execute(sql)
            refused(exc, "signature")
        assert conn.execute("SELECT 'usable'").fetchone() == ("usable",)


def test_it_denies_honeytoken_tables_by_any_spelling(guarded: WorkerProcess, db: str) -> None:
    with simple(guarded, db) as conn:
        for sql in (
            "SELECT * FROM secret_keys",
            'SELECT * FROM "secret_keys"',
            "SELECT * FROM public.Secret_Keys",
            "SELECT 1 WHERE EXISTS (SELECT 1 FROM /* x */ secret_keys)",
            "WITH s AS (SELECT * FROM secret_keys) SELECT count(*) FROM s",
            "COPY secret_keys TO STDOUT",
        ):
            with pytest.raises(errors.InsufficientPrivilege) as exc:
                conn.execute(sql)
            refused(exc, "protected table")
            assert "do-not-read" not in str(exc.value)


def test_it_denies_what_it_cannot_parse(guarded: WorkerProcess, db: str) -> None:
    with simple(guarded, db) as conn:
        with pytest.raises(errors.InsufficientPrivilege) as exc:
            conn.execute("SELEC 1")
        refused(exc, "cannot be analysed")
        assert exc.value.diag.message_detail is not None
        assert 'syntax error at or near "SELEC"' in exc.value.diag.message_detail


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM guarded_users",
        "DELETE FROM guarded_users WHERE id > 10",
        "UPDATE guarded_users SET name = 'x' WHERE true",
        "DELETE FROM guarded_users_view",
        "SELECT wipe_users()",
        "DO $$BEGIN EXECUTE 'DELETE FROM ' || 'guarded_users'; END$$",
        "WITH d AS (DELETE FROM guarded_users RETURNING *) SELECT count(*) FROM d",
        "DELETE FROM guarded_users WHERE id < 3; DELETE FROM guarded_users WHERE id > 40",
    ],
)
def test_it_refuses_changing_more_rows_than_the_limit(
    guarded: WorkerProcess, upstream: PgCluster, db: str, sql: str
) -> None:
    with simple(guarded, db) as conn:
        with pytest.raises(errors.InsufficientPrivilege) as exc:
            conn.execute(sql)
        refused(exc, "table_limits")
        assert exc.value.diag.message_detail is not None
        assert "Table public.guarded_users:" in exc.value.diag.message_detail
        assert "the limit is 5" in exc.value.diag.message_detail
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert user_count(upstream) == 50


def test_it_allows_changes_within_the_limit(
    guarded: WorkerProcess, upstream: PgCluster, db: str
) -> None:
    with simple(guarded, db) as conn:
        cur = conn.execute("DELETE FROM guarded_users WHERE id <= 3 RETURNING id")
        assert sorted(r[0] for r in cur.fetchall()) == [1, 2, 3]
        assert cur.statusmessage == "DELETE 3"
    assert user_count(upstream) == 47


def test_it_never_shows_the_returned_rows_of_a_refused_statement(
    guarded: WorkerProcess, db: str
) -> None:
    with simple(guarded, db) as conn:
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("DELETE FROM guarded_users RETURNING name").fetchall()
        assert conn.pgconn.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_it_counts_rows_per_transaction(
    guarded: WorkerProcess, upstream: PgCluster, db: str
) -> None:
    with psycopg.connect(guarded.dsn(db), cursor_factory=psycopg.ClientCursor) as conn:
        conn.execute("DELETE FROM guarded_users WHERE id <= 3")
        with pytest.raises(errors.InsufficientPrivilege) as exc:
            conn.execute("DELETE FROM guarded_users WHERE id BETWEEN 10 AND 12")
        refused(exc, "table_limits")
        assert "6 rows changed" in (exc.value.diag.message_detail or "")
        assert conn.pgconn.transaction_status == psycopg.pq.TransactionStatus.INERROR
        conn.rollback()
    assert user_count(upstream) == 50


def test_it_counts_cascades_into_limited_tables(
    guarded: WorkerProcess, upstream: PgCluster
) -> None:
    with upstream.connect() as direct:
        direct.execute("CREATE TABLE IF NOT EXISTS parents (id int PRIMARY KEY)")
        direct.execute("INSERT INTO parents VALUES (1) ON CONFLICT DO NOTHING")
        direct.execute(
            "ALTER TABLE guarded_users ADD COLUMN IF NOT EXISTS parent int "
            "REFERENCES parents ON DELETE CASCADE"
        )
        direct.execute("UPDATE guarded_users SET parent = 1")
    try:
        with simple(guarded, "app") as conn:
            with pytest.raises(errors.InsufficientPrivilege) as exc:
                conn.execute("DELETE FROM parents")  # names no limited table at all
            refused(exc, "table_limits")
        assert user_count(upstream) == 50
    finally:
        with upstream.connect() as direct:
            direct.execute("ALTER TABLE guarded_users DROP COLUMN parent; DROP TABLE parents")


@pytest.mark.parametrize("limit_hit", [True, False])
def test_it_verifies_the_extended_protocol(
    guarded: WorkerProcess, upstream: PgCluster, db: str, limit_hit: bool
) -> None:
    last = 40 if limit_hit else 2
    with psycopg.connect(guarded.dsn(db), autocommit=True) as conn:
        if limit_hit:
            with pytest.raises(errors.InsufficientPrivilege) as exc:
                conn.execute("DELETE FROM guarded_users WHERE id <= %s RETURNING name", (last,))
            refused(exc, "table_limits")
        else:
            cur = conn.execute("DELETE FROM guarded_users WHERE id <= %s RETURNING id", (last,))
            assert sorted(r[0] for r in cur.fetchall()) == [1, 2]
        assert conn.execute("SELECT %s::int", (7,)).fetchone() == (7,)
    assert user_count(upstream) == (50 if limit_hit else 48)


def test_it_guards_asyncpg(guarded: WorkerProcess, upstream: PgCluster, db: str) -> None:
    async def main() -> None:
        conn = await asyncpg.connect(
            host="127.0.0.1", port=guarded.port, user=APP_USER, password=APP_PASSWORD,
            database=db, ssl=False,
        )  # fmt: skip
        try:
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="table_limits"):
                await conn.execute("DELETE FROM guarded_users WHERE id > $1", 1)
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="signature"):
                await conn.fetchval("SELECT pg_read_file($1)", "/etc/passwd")
            assert (
                await conn.fetchval("DELETE FROM guarded_users WHERE id = $1 RETURNING id", 9) == 9
            )
        finally:
            await conn.close()

    asyncio.run(main())
    assert user_count(upstream) == 49


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT body FROM notes ORDER BY id",
        "SELECT 'canary-' || '7f3a9c'",
        "SELECT upper(body) FROM notes WHERE id = 2",  # case changed: not the value; allowed
        "SELECT repeat('x', 200000) || 'canary-7f3a9c'",
        "DO $$BEGIN RAISE NOTICE 'leak: %', (SELECT body FROM notes WHERE id = 2); END$$",
        "DO $$BEGIN RAISE EXCEPTION 'leak: %', (SELECT body FROM notes WHERE id = 2); END$$",
    ],
)
def test_it_never_lets_a_honeytoken_value_out(guarded: WorkerProcess, db: str, sql: str) -> None:
    received: list[str] = []
    with simple(guarded, db) as conn:
        conn.add_notice_handler(lambda d: received.append(str(d.message_primary)))
        if "upper(" in sql:
            assert conn.execute(sql).fetchall() == [("HAS CANARY-7F3A9C INSIDE",)]
            return
        with pytest.raises(errors.InsufficientPrivilege) as exc:
            received += [str(r) for r in conn.execute(sql).fetchall()]
        refused(exc, "honeytoken value")
        assert "canary-7f3a9c" not in " ".join(received) + str(exc.value)
        assert conn.execute("SELECT 'usable'").fetchone() == ("usable",)


@pytest.mark.parametrize("protocol", ["simple", "extended"])
def test_it_stops_honeytoken_values_in_copy_and_extended_results(
    guarded: WorkerProcess, db: str, protocol: str
) -> None:
    conn = connect(guarded, db, protocol)
    with conn:
        with pytest.raises(errors.InsufficientPrivilege) as exc:
            conn.execute("SELECT id, body FROM notes WHERE id >= %s ORDER BY id", (1,)).fetchall()
        refused(exc, "honeytoken value")
        out = b""
        with (
            pytest.raises(errors.InsufficientPrivilege),
            conn.cursor().copy("COPY notes TO STDOUT") as copy,
        ):
            for chunk in copy:
                out += bytes(chunk)
        assert b"canary" not in out
        assert conn.execute("SELECT count(*) FROM notes WHERE id <> %s", (2,)).fetchone() == (2,)


def audit_events(proc: WorkerProcess) -> list[dict[str, object]]:
    with open(proc.audit_path) as fh:  # type: ignore[attr-defined]
        return [json.loads(line) for line in fh]


def test_it_audits_every_decision_without_data_values(guarded: WorkerProcess, db: str) -> None:
    marker = f"audit_probe_{db}"
    with simple(guarded, db) as conn:
        conn.execute(f"SELECT 'secret-literal' AS {marker}")
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute(f"SELECT pg_read_file('/etc/passwd') AS {marker}")

    def mine() -> list[dict[str, object]]:
        return [e for e in audit_events(guarded) if marker in str(e.get("normalized"))]

    wait_until(lambda: len(mine()) == 2, timeout=10)
    allowed, denied = sorted(mine(), key=lambda e: str(e["decision"]))
    assert allowed["decision"] == "allow" and allowed["command_tag"] == "SELECT 1"
    assert denied["decision"] == "deny" and denied["rule"] == "signature:server-file-access"
    for event in (allowed, denied):
        assert event["database"] == db and event["user"] == APP_USER
        assert event["fingerprint"] and isinstance(event["duration_ms"], float)
        assert "secret-literal" not in json.dumps(event) and "/etc/passwd" not in json.dumps(event)
    assert allowed["id"] != denied["id"]


def test_it_audits_refusals_made_by_the_server_side_check(guarded: WorkerProcess, db: str) -> None:
    marker = f"check_probe_{db}"
    with simple(guarded, db) as conn, pytest.raises(errors.InsufficientPrivilege):
        conn.execute(f"DELETE FROM guarded_users /* {marker} */ WHERE id > 0")

    def mine() -> list[dict[str, object]]:
        return [
            e
            for e in audit_events(guarded)
            if "guarded_users WHERE id > $1" in str(e.get("normalized"))
            and e["database"] == db
            and e["decision"] == "deny"
        ]

    wait_until(lambda: len(mine()) >= 1, timeout=10)
    event = mine()[-1]
    assert event["rule"] == "table_limit"
    assert event["message"] == "sqlproxy: statement refused by table_limits"


def test_it_audits_every_execution_of_a_prepared_statement(guarded: WorkerProcess, db: str) -> None:
    """Prepared once (Parse, in a request of its own), executed again and again (Bind,
    Execute): each execution is decided and audited — sampled allowed ones with their tags,
    and the execution the server-side check refuses."""
    marker = f"prepared_probe_{db}"
    with psycopg.connect(guarded.dsn(db), autocommit=True, prepare_threshold=0) as conn:
        for i in range(3):
            conn.execute(f"SELECT %s::int AS {marker}", (i,))
        update = f"UPDATE guarded_users AS {marker} SET name = name WHERE id = ANY(%s)"
        conn.execute(update, ([1, 2],))
        conn.execute(update, ([3, 4],))
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute(update, (list(range(10, 21)),))  # 11 rows, the limit is 5
        assert conn.execute("SELECT 1 AS still_usable").fetchone() == (1,)

    def executions(verb: str) -> list[tuple[object, object]]:
        """(decision, command tag or rule) of the statement's events, but for the event of
        its Parse alone (allowed, no command tag: it ran nothing)."""
        return [
            (e["decision"], e["rule"] if e["decision"] == "deny" else e.get("command_tag"))
            for e in audit_events(guarded)
            if marker in str(e.get("normalized"))
            and str(e.get("normalized")).startswith(verb)
            and (e["decision"] == "deny" or e.get("command_tag") is not None)
        ]

    wait_until(lambda: len(executions("UPDATE")) >= 3, timeout=10)
    assert executions("SELECT") == [("allow", "SELECT 1")] * 3
    assert executions("UPDATE") == [
        ("allow", "UPDATE 2"),
        ("allow", "UPDATE 2"),
        ("deny", "table_limit"),
    ]


@pytest.mark.parametrize("protocol", ["simple", "extended"])
def test_a_verified_statement_is_audited_with_its_own_command_tag(
    guarded: WorkerProcess, db: str, protocol: str
) -> None:
    """Not the tag of the check the guard runs after it (a DO block)."""
    marker = f"tag_probe_{protocol}_{db}"
    with connect(guarded, db, protocol) as conn:
        conn.execute(f"UPDATE guarded_users AS {marker} SET name = name WHERE id IN (7, 8, 9)")

    def tags() -> list[object]:
        return [
            e.get("command_tag")
            for e in audit_events(guarded)
            if marker in str(e.get("normalized")) and e["decision"] == "allow"
        ]

    wait_until(lambda: len(tags()) >= 1, timeout=10)
    assert tags() == ["UPDATE 3"]


def guard_paths(proc: WorkerProcess) -> dict[str, float]:
    _, text = proc.http("/metrics")
    return {
        line.split('"')[1]: float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith("sqlproxy_guard_statements_total{")
    }


@pytest.mark.parametrize(
    ("sql", "path"),
    [
        ("UPDATE plain_limited SET v = v + 1 WHERE id = 3", "static"),
        ("UPDATE plain_limited SET v = v + 1 WHERE id = 3 AND v >= 0", "static"),
        ("INSERT INTO plain_limited VALUES (100, 1)", "static"),
        ("UPDATE plain_limited SET v = v + 1 WHERE id = 3 OR id = 300", "verified"),
        ("UPDATE plain_limited_view SET v = v + 1 WHERE id = 3", "verified"),
        ("UPDATE guarded_users SET name = 'x' WHERE id = 3", "verified"),  # has FK triggers
        ("UPDATE plain_limited SET v = random()::int WHERE id = 3", "static"),
        ("SELECT * FROM plain_limited WHERE id = 1", "read"),
    ],
)
def test_it_proves_bounded_writes_statically(
    guarded: WorkerProcess, upstream: PgCluster, sql: str, path: str
) -> None:
    with upstream.connect() as direct:
        direct.execute("DELETE FROM plain_limited WHERE id > 10")
    with simple(guarded, "app") as conn:
        conn.execute("SELECT 1")  # the catalog is loaded at login
        before = guard_paths(guarded)
        conn.execute(sql)
        after = guard_paths(guarded)
    changed = {k for k in after if after[k] != before.get(k, 0.0)}
    assert changed == {path}


def test_a_verified_write_over_a_limit_of_one_is_refused(guarded: WorkerProcess) -> None:
    with simple(guarded, "app") as conn:
        with pytest.raises(errors.InsufficientPrivilege) as exc:
            conn.execute("UPDATE plain_limited SET v = v + 1 WHERE id IN (1, 2)")
        refused(exc, "table_limits")
        assert conn.execute("UPDATE plain_limited SET v = v + 1 WHERE id IN (1)").rowcount == 1


def test_it_checks_before_each_commit_inside_a_query_string(
    guarded: WorkerProcess, upstream: PgCluster
) -> None:
    # The check runs before the COMMIT of the string, not after it: refused, nothing deleted,
    # the transaction left failed as a server error would leave it.
    with simple(guarded, "app") as conn:
        with pytest.raises(errors.InsufficientPrivilege) as exc:
            conn.execute("BEGIN; DELETE FROM guarded_users; COMMIT")
        refused(exc, "table_limits")
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR
        conn.execute("ROLLBACK")
        assert user_count(upstream) == 50
        # Two transactions in one string: the first commits, the second is refused alone.
        with pytest.raises(errors.InsufficientPrivilege) as exc:
            conn.execute(
                "BEGIN; DELETE FROM guarded_users WHERE id <= 3; COMMIT; "
                "BEGIN; DELETE FROM guarded_users WHERE id > 10; COMMIT"
            )
        refused(exc, "table_limits")
        conn.execute("ROLLBACK")
        assert user_count(upstream) == 47
        # Within the limit: the client sees its own answers and positions in its own text.
        cur = conn.execute("BEGIN; DELETE FROM guarded_users WHERE id = 4; COMMIT; SELECT 7")
        tags = [cur.statusmessage]
        while cur.nextset():
            tags.append(cur.statusmessage)
        assert tags == ["BEGIN", "DELETE 1", "COMMIT", "SELECT 1"]
        assert cur.fetchone() == (7,)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        with pytest.raises(errors.UndefinedColumn) as failed:
            conn.execute("BEGIN; DELETE FROM guarded_users WHERE nope = 1; COMMIT")
        assert failed.value.diag.statement_position == "40"  # as a direct connection
        conn.execute("ROLLBACK")
    assert user_count(upstream) == 46


def test_it_verifies_copy_from_stdin_into_a_table_with_a_trigger(
    guarded: WorkerProcess, upstream: PgCluster, db: str
) -> None:
    with upstream.connect() as direct:
        direct.execute(
            "CREATE TABLE IF NOT EXISTS copy_sink (x int);"
            "CREATE OR REPLACE FUNCTION copy_sink_wipe() RETURNS trigger LANGUAGE plpgsql AS "
            "$$BEGIN DELETE FROM guarded_users WHERE id > 40; RETURN NEW; END$$;"
            "DROP TRIGGER IF EXISTS copy_sink_wipe ON copy_sink;"
            "CREATE TRIGGER copy_sink_wipe AFTER INSERT ON copy_sink "
            "FOR EACH STATEMENT EXECUTE FUNCTION copy_sink_wipe()"
        )
    with simple(guarded, db) as conn, conn.cursor() as cur:
        with (
            pytest.raises(errors.InsufficientPrivilege) as exc,
            cur.copy("COPY copy_sink FROM STDIN") as copy,
        ):
            copy.write_row((1,))
        refused(exc, "table_limits")
        with upstream.connect() as direct:
            direct.execute("DROP TRIGGER copy_sink_wipe ON copy_sink")
        with cur.copy("COPY copy_sink FROM STDIN") as copy:
            copy.write_row((2,))
        assert cur.statusmessage == "COPY 1"
    assert user_count(upstream) == 50


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1 ### 2",  # a user-defined operator whose function deletes
        "SELECT 5::wiping_domain",  # a domain whose CHECK deletes
    ],
)
def test_it_verifies_code_behind_operators_and_domains(
    guarded: WorkerProcess, upstream: PgCluster, sql: str
) -> None:
    with upstream.connect() as direct:
        direct.execute(
            "CREATE OR REPLACE FUNCTION wipe_bool(a int, b int) RETURNS bool LANGUAGE sql AS "
            "'DELETE FROM guarded_users WHERE id > 30; SELECT true';"
            "CREATE OR REPLACE FUNCTION wipe_check(x int) RETURNS bool LANGUAGE sql AS "
            "'DELETE FROM guarded_users WHERE id > 30; SELECT true';"
            "DROP OPERATOR IF EXISTS ### (int, int);"
            "CREATE OPERATOR ### (LEFTARG = int, RIGHTARG = int, FUNCTION = wipe_bool);"
            "DROP DOMAIN IF EXISTS wiping_domain;"
            "CREATE DOMAIN wiping_domain AS int CHECK (wipe_check(VALUE))"
        )
    reload_catalog(guarded)
    with simple(guarded, "app") as conn:
        with pytest.raises(errors.InsufficientPrivilege) as exc:
            conn.execute(sql)
        refused(exc, "table_limits")
    assert user_count(upstream) == 50


@pytest.mark.parametrize(
    ("sql", "rule"),
    [
        ("SELECT 1 AS \"canary-7f3a9c\"", "honeytoken value"),
        ("SELECT decode('63616e6172792d376633613963', 'hex')", "honeytoken value"),
        ("SELECT set_config('application_name', 'canary-' || '7f3a9c', false)", "honeytoken value"),
        ("UPDATE pg_settings SET setting = 'replica' WHERE name = 'session_replication_role'",
         "signature"),
    ],
)  # fmt: skip
def test_it_catches_values_and_settings_in_less_obvious_places(
    guarded: WorkerProcess, db: str, sql: str, rule: str
) -> None:
    with simple(guarded, db) as conn:
        with pytest.raises(errors.InsufficientPrivilege) as exc:
            conn.execute(sql)
        refused(exc, rule)
        assert conn.execute("SHOW session_replication_role").fetchone() == ("origin",)


@pytest.mark.parametrize(
    ("sql", "signature"),
    [
        ("SELECT * FROM file_peek", "server-file-access"),  # a view over pg_read_file
        ("SELECT nap()", "sleep"),  # a wrapper function around pg_sleep
        ("SELECT outer_nap()", "sleep"),  # a wrapper around the wrapper
    ],
)
def test_it_sees_signatures_behind_views_and_functions(
    guarded: WorkerProcess, upstream: PgCluster, sql: str, signature: str
) -> None:
    with upstream.connect() as direct:
        direct.execute(
            "CREATE OR REPLACE VIEW file_peek AS SELECT pg_read_file('/etc/hostname') AS f;"
            "CREATE OR REPLACE FUNCTION nap() RETURNS void LANGUAGE plpgsql AS "
            "$$BEGIN PERFORM pg_sleep(0); END$$;"
            "CREATE OR REPLACE FUNCTION outer_nap() RETURNS void LANGUAGE sql AS 'SELECT nap()'"
        )
    reload_catalog(guarded)
    with simple(guarded, "app") as conn:
        with pytest.raises(errors.InsufficientPrivilege) as exc:
            conn.execute(sql)
        refused(exc, f"signature {signature}")


@pytest.mark.usefixtures("guarded")  # (the module's schema, which fresh_rows resets)
def test_the_catalog_is_reloaded_periodically(upstream: PgCluster) -> None:
    """DDL made elsewhere (here: directly) is seen after ``catalog_refresh`` seconds: a key
    added makes an update by it provably bounded; the key dropped makes it verified again."""
    with upstream.connect() as direct:
        direct.execute(
            "DROP TABLE IF EXISTS refresh_probe; CREATE TABLE refresh_probe (id int, v int);"
            "INSERT INTO refresh_probe SELECT g, 0 FROM generate_series(1, 5) g"
        )
    policy = "[guard]\ncatalog_refresh = 0.5\n\n[table_limits]\nrefresh_probe = 1\n"
    proc = launch(databases_toml(upstream), policy=policy)
    try:
        with simple(proc, "app") as conn:

            def path() -> str:
                before = guard_paths(proc)
                conn.execute("UPDATE refresh_probe SET v = v + 1 WHERE id = 1")
                after = guard_paths(proc)
                (changed,) = {k for k in after if after[k] != before.get(k, 0.0)}
                return changed

            assert path() == "verified"  # (id is no key: more rows could match)
            with upstream.connect() as direct:
                direct.execute("ALTER TABLE refresh_probe ADD PRIMARY KEY (id)")
            wait_until(lambda: path() == "static", timeout=5)
            with upstream.connect() as direct:
                direct.execute("ALTER TABLE refresh_probe DROP CONSTRAINT refresh_probe_pkey")
            wait_until(lambda: path() == "verified", timeout=5)
    finally:
        proc.stop()
