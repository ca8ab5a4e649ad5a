"""The server's identifier rules for names carried in strings: search_path values, GUC names,
function names in policy files."""

from __future__ import annotations

import pytest

from proxyworker.analysis import SettingChange, relation_search_order, split_identifier_list
from proxyworker.analysis.names import qualified_name, quote_identifier, truncate_identifier
from proxyworker.analysis.settings import parse_bool
from tests.analysis.expect import one


@pytest.mark.parametrize(
    ("name", "truncated"),
    [
        ("short", "short"),
        ("x" * 63, "x" * 63),
        ("x" * 64, "x" * 63),
        ("é" * 40, "é" * 31),  # 2-byte characters: 62 bytes, not a split 63rd
        ("😀" * 16, "😀" * 15),  # 4-byte characters: 60 bytes
        ("a" + "€" * 21, "a" + "€" * 20),  # 1 + 3*21 = 64 bytes -> 61
    ],
)
def test_it_truncates_identifiers_on_character_boundaries(name: str, truncated: str) -> None:
    assert truncate_identifier(name) == truncated
    assert len(truncated.encode()) <= 63


@pytest.mark.parametrize(
    ("name", "quoted"),
    [
        ("abc", "abc"),
        ("a_1", "a_1"),
        ("Abc", '"Abc"'),
        ("a b", '"a b"'),
        ('a"b', '"a""b"'),
        ("$user", '"$user"'),
        ("1a", '"1a"'),
        ("é", '"é"'),
        ("select", '"select"'),  # reserved
        ("int", '"int"'),  # column-name keyword
        ("name", "name"),  # unreserved keywords stay bare
    ],
)
def test_it_quotes_identifiers_like_the_server(name: str, quoted: str) -> None:
    assert quote_identifier(name) == quoted


@pytest.mark.parametrize(
    ("parts", "rendered"),
    [
        (("pg_catalog", "pg_read_file"), "pg_catalog.pg_read_file"),
        (("Upper",), "Upper"),
        (("a.b",), '"a.b"'),
        (("s", 'x"y'), 's."x""y"'),
    ],
)
def test_it_renders_names_without_ambiguity(parts: tuple[str, ...], rendered: str) -> None:
    assert qualified_name(parts) == rendered


@pytest.mark.parametrize(
    ("value", "names"),
    [
        ("", ()),
        ("   ", ()),
        ("public", ("public",)),
        ('"$user", public', ("$user", "public")),
        ('App, "App", "x y", "a,b", "q""q"', ("app", "App", "x y", "a,b", 'q"q')),
        ("\ta ,\n b ", ("a", "b")),
        ("S" * 70, ("s" * 63,)),
        ("ÄB", ("Äb",)),  # only ASCII letters fold, as in a UTF-8 database
        ('A"b"', ('a"b"',)),  # a quote inside an unquoted name is just a character
    ],
)
def test_it_splits_identifier_lists_like_the_server(value: str, names: tuple[str, ...]) -> None:
    assert split_identifier_list(value) == names


@pytest.mark.parametrize("value", ["a,,b", "a b", '"open', '""', "a,", ",a", '"a"b'])
def test_it_rejects_identifier_lists_the_server_rejects(value: str) -> None:
    with pytest.raises(ValueError):
        split_identifier_list(value)


@pytest.mark.parametrize(
    ("path", "user", "order"),
    [
        (("$user", "public"), "alice", ("pg_temp", "pg_catalog", "alice", "public")),
        (("$user", "public"), None, ("pg_temp", "pg_catalog", "public")),
        (("public", "pg_catalog"), None, ("pg_temp", "public", "pg_catalog")),
        (("pg_temp", "public"), None, ("pg_catalog", "pg_temp", "public")),
        (("app", "app", "public"), None, ("pg_temp", "pg_catalog", "app", "public")),
        ((), None, ("pg_temp", "pg_catalog")),
    ],
)
def test_it_orders_schemas_for_unqualified_relations(
    path: tuple[str, ...], user: str | None, order: tuple[str, ...]
) -> None:
    assert relation_search_order(path, user=user) == order


def test_it_leaves_out_the_temp_schema_when_the_session_has_none() -> None:
    assert relation_search_order(["public"], temp_schema=False) == ("pg_catalog", "public")


@pytest.mark.parametrize(
    ("word", "value"),
    [
        ("true", True),
        ("t", True),
        ("TRU", True),
        ("yes", True),
        ("on", True),
        ("1", True),
        ("false", False),
        ("f", False),
        ("no", False),
        ("off", False),
        ("of", False),
        ("0", False),
        ("o", None),
        ("", None),
        ("truex", None),
        ("2", None),
    ],
)
def test_it_parses_booleans_like_the_server(word: str, value: bool | None) -> None:
    assert parse_bool(word) is value


@pytest.mark.parametrize(
    ("sql", "change"),
    [
        (
            "SELECT set_config('SEARCH_PATH', 'a, \"B\"', 'off')",
            SettingChange("search_path", 'a, "B"'),
        ),
        (
            "SELECT set_config('search_path', NULL, true)",
            SettingChange("search_path", None, is_local=True, reset=True),
        ),
        (
            "SELECT set_config(name, 'x', false) FROM settings_to_apply",
            SettingChange(None, "x", exact=False),
        ),
        (
            "SELECT set_config('work_mem', '64MB', local) FROM t",
            SettingChange("work_mem", "64MB", exact=False),
        ),
        (
            "SELECT set_config('search_path', 'x'::text, false)",
            SettingChange("search_path", "x"),
        ),
        ('SET "Search_Path" = x', SettingChange("search_path", "x")),
    ],
)
def test_it_reads_setting_changes_from_set_config(sql: str, change: SettingChange) -> None:
    assert one(sql).settings == (change,)


def test_it_records_several_changes_in_order() -> None:
    info = one("SELECT set_config('a.x', '1', false), set_config('a.y', '2', true)")
    assert info.settings == (SettingChange("a.x", "1"), SettingChange("a.y", "2", is_local=True))
    assert (info.set_name, info.set_value) == ("a.y", "2")
