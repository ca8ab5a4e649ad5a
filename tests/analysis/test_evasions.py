"""Attacks spelled to slip past a text filter: comments, odd whitespace, mixed case, quoted
and escaped identifiers, over-long names, dollar quoting, strings built in PL/pgSQL."""

from __future__ import annotations

import pytest

from proxyworker.analysis import RelationRef, StatementKind
from tests.analysis.expect import Case, case_id, check

K = StatementKind

LONG = "u" * 70
LONG_63 = "u" * 63
ACCENTED = "é" * 40  # 80 bytes of UTF-8
ACCENTED_63 = "é" * 31  # 62 bytes: a 32nd é would split at byte 63

EVASIONS = [
    Case(
        'DeLeTe /* hi */ FrOm "Users" -- bye',
        K.DELETE,
        "DELETE",
        writes=("Users",),
        unbounded=("Users",),
    ),
    Case("delete from USERS", K.DELETE, "DELETE", writes=("users",), unbounded=("users",)),
    Case(
        "delete from PUBLIC.USERS",
        K.DELETE,
        "DELETE",
        writes=("public.users",),
        unbounded=("public.users",),
    ),
    Case(
        'DELETE FROM U&"\\0075sers"',
        K.DELETE,
        "DELETE",
        writes=("users",),
        unbounded=("users",),
    ),
    Case(
        "DELETE FROM U&\"!0075sers\" UESCAPE '!'",
        K.DELETE,
        "DELETE",
        writes=("users",),
        unbounded=("users",),
    ),
    Case(f"DELETE FROM {LONG}", K.DELETE, "DELETE", writes=(LONG_63,), unbounded=(LONG_63,)),
    Case(
        f'DELETE FROM "{LONG.upper()}"',
        K.DELETE,
        "DELETE",
        writes=(LONG_63.upper(),),
        unbounded=(LONG_63.upper(),),
    ),
    Case(f'SELECT * FROM "{ACCENTED}"', K.SELECT, "SELECT", reads=(ACCENTED_63,)),
    Case('SELECT * FROM "a.b"', K.SELECT, "SELECT", reads=(RelationRef(None, "a.b"),)),
    Case('SELECT * FROM "Sch"."T"', K.SELECT, "SELECT", reads=(RelationRef("Sch", "T"),)),
    # catalog.schema.table: the catalog must be this database, so it adds nothing.
    Case("SELECT * FROM mydb.public.users", K.SELECT, "SELECT", reads=("public.users",)),
    Case(
        "DELETE\tFROM\n\n  users\r\nWHERE\fid=1",
        K.DELETE,
        "DELETE",
        writes=("users",),
        flags=("has_where",),
    ),
    Case(
        "DO $body$ BEGIN DELETE FROM users; END $body$",
        K.DO,
        "DO",
        writes=("users",),
        unbounded=("users",),
    ),
    Case(
        "DO $a$ BEGIN EXECUTE $b$DELETE FROM users$b$; END $a$",
        K.DO,
        "DO",
        writes=("users",),
        unbounded=("users",),
    ),
    Case(
        "DO $a$ BEGIN EXECUTE 'DELETE ' || 'FROM ' || 'users'; END $a$",
        K.DO,
        "DO",
        writes=("users",),
        unbounded=("users",),
    ),
    Case(
        "DO $$ BEGIN EXECUTE E'DELETE FROM \\x75sers'; END $$",
        K.DO,
        "DO",
        writes=("users",),
        unbounded=("users",),
    ),
    # A quoted name is a different function: "PG_READ_FILE" is not pg_read_file.
    Case("SELECT \"PG_READ_FILE\"('x')", K.SELECT, "SELECT", functions=("PG_READ_FILE",)),
    Case("SELECT Pg_Read_File('x')", K.SELECT, "SELECT", functions=("pg_read_file",)),
    Case(
        "/* leading */ WITH x AS (/* inner */ UPDATE users SET pw = '' RETURNING 1) SELECT 1",
        K.SELECT,
        "SELECT",
        writes=("users",),
        unbounded=("users",),
    ),
]


@pytest.mark.parametrize("case", EVASIONS, ids=case_id)
def test_it_sees_through_the_spelling(case: Case) -> None:
    check(case)
