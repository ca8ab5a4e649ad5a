"""The analyser's name and setting rules, checked against a real PostgreSQL.

Everything runs inside a transaction that is rolled back, so the shared test cluster is left
as it was. These are the rules where a mismatch would let a statement reach a relation the
policy thinks it does not touch.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from proxyworker.analysis import analyze, split_identifier_list
from proxyworker.analysis.names import quote_identifier
from tests.analysis.expect import one
from tests.support.pgcluster import PgCluster


@pytest.fixture
def conn(upstream: PgCluster) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(upstream.dsn) as connection:
        yield connection
        connection.rollback()


Conn = psycopg.Connection[tuple[object, ...]]

SPELLINGS = [
    "Users",
    '"Users"',
    'U&"\\0075sers_u"',
    "U&\"!00e9t\u00e9\" UESCAPE '!'",
    "L" * 70,
    '"' + "Q" * 70 + '"',
    '"' + "é" * 40 + '"',
    '"' + "a" + "€" * 30 + '"',
    'App."Mixed Case"',
    '"a.b"',
]


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_it_names_relations_exactly_as_the_server_creates_them(conn: Conn, spelling: str) -> None:
    (info,) = analyze(f"CREATE TABLE {spelling} (id int)")
    (ref,) = info.ddl_targets
    if ref.schema is not None:
        conn.execute(f'CREATE SCHEMA "{ref.schema}"')
    conn.execute(f"CREATE TABLE {spelling} (id int)")
    row = conn.execute(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relname = %s AND n.nspname = coalesce(%s, current_schema())",
        (ref.name, ref.schema),
    ).fetchone()
    assert row is not None, f"the server did not create {ref}"


@pytest.mark.parametrize(
    "statement",
    [
        "SET search_path = app, public",
        'SET search_path TO "App", \'x y\', "$user", public',
        "SET search_path = 'a, b'",
        'SET search_path = "select", "Ünï", UPPER',
        "SET SCHEMA 'audit'",
        'SET search_path = "q""q"',
    ],
)
def test_it_flattens_set_values_as_the_server_stores_them(conn: Conn, statement: str) -> None:
    conn.execute(statement)
    shown = conn.execute("SHOW search_path").fetchone()
    assert shown is not None
    assert one(statement).set_value == shown[0]


def test_it_splits_search_path_as_the_server_does(conn: Conn) -> None:
    value = '"App", app, "x y", "a,b", "q""q", ' + "S" * 70 + ", ÄB, missing"
    names = split_identifier_list(value)
    for name in names[:-1]:
        conn.execute(f"CREATE SCHEMA {quote_identifier(name)}")
    conn.execute("SELECT set_config('search_path', %s, true)", (value,))
    searched = conn.execute("SELECT current_schemas(false)").fetchone()
    assert searched is not None
    assert tuple(searched[0]) == names[:-1]  # current_schemas() lists existing schemas only


@pytest.mark.parametrize(
    "name", ["abc", "Abc", "a b", 'a"b', "$user", "1a", "é", "select", "int", "name", "user"]
)
def test_it_quotes_identifiers_as_the_server_does(conn: Conn, name: str) -> None:
    row = conn.execute("SELECT quote_ident(%s)", (name,)).fetchone()
    assert row is not None
    assert quote_identifier(name) == row[0]


def test_it_only_holds_while_standard_conforming_strings_is_on(conn: Conn) -> None:
    # Why the session must deny while the server reports standard_conforming_strings=off:
    # libpg_query lexes as if it were on, so this text is one harmless SELECT to the analyser
    # while the server, with it off, ends the string early and runs the hidden statement.
    sneaky = "SELECT 'x\\''; CREATE TEMP TABLE hidden (); --'"
    assert [info.command for info in analyze(sneaky)] == ["SELECT"]
    conn.execute("SET standard_conforming_strings = off")
    psycopg.ClientCursor(conn).execute(sneaky)
    created = conn.execute("SELECT to_regclass('pg_temp.hidden')").fetchone()
    assert created is not None and created[0] is not None
