"""TOML configuration: defaults, and errors that name file, line and key."""

from __future__ import annotations

import pytest

from proxyworker.config import ConfigError, loads
from proxyworker.config.schema import parse_upstream

GOOD = """
[listen]
port = 7000

[[users]]
name = "app"
password = "pw"

[[databases]]
name = "a"
upstream = "postgresql://u:p%40ss@db.internal:5433/appdb?sslmode=verify-full&sslrootcert=ca.pem"

[[databases]]
name = "b"
upstream = "postgresql://u@127.0.0.1/b"
pool_mode = "transaction"
"""


def test_it_loads_a_config_with_defaults() -> None:
    config = loads(GOOD, "/etc/sqlproxy/sqlproxy.toml")
    assert config.listen.port == 7000
    assert config.listen.host == "127.0.0.1"
    assert config.admin.port == 9187
    assert [d.pool_mode for d in config.databases] == ["session", "transaction"]
    target = config.databases[0].target()
    assert (target.host, target.port, target.user, target.password, target.dbname) == (
        "db.internal", 5433, "u", "p@ss", "appdb",
    )  # fmt: skip
    assert target.sslmode == "verify-full"
    assert target.sslrootcert == "/etc/sqlproxy/ca.pem"  # relative to the config file


CASES = [
    ("port = 7000", "port = 'x'", "f.toml:3: listen.port: Expected `int`, got `str`"),
    (
        'pool_mode = "transaction"',
        'pool_mode = "txn"',
        "f.toml:16: databases[1].pool_mode: Invalid enum value 'txn'",
    ),
    (
        "port = 7000",
        "port = 7000\nprot = 1",
        "f.toml:4: listen.prot: Object contains unknown field",
    ),
    ('password = "pw"', "", "f.toml:5: users[0]: give exactly one of password or scram_verifier"),
    ('name = "b"', 'name = "a"', "f.toml: database 'a' is defined twice"),
    ("[listen]", "[listen", "f.toml:2: Expected ']'"),
    ("postgresql://u@127", "mysql://u@127", "f.toml:15: databases[1].upstream: must be a postgres"),
    (
        'pool_mode = "transaction"',
        'pool_mode = "transaction"\n[databases.policy.table_limits]\nusers = 5\norders = "x"',
        "f.toml:19: databases[1].policy.table_limits.orders: Expected `int`, got `str`",
    ),
    (
        "port = 7000",
        "port = 7000\n[table_limits]\nusers = 5\norders = true",
        "f.toml:6: table_limits.orders: Expected `int`, got `bool`",
    ),
    (
        'pool_mode = "transaction"',
        'pool_mode = "transaction"\n[databases.policy.honeytokens]\ntables = ["re:("]',
        "f.toml:18: databases[1].policy.honeytokens.tables: invalid regular expression",
    ),
    (
        "sslmode=verify-full",
        "sslmode=bogus",
        "f.toml:11: databases[0].upstream: unsupported sslmode",
    ),
]


@pytest.mark.parametrize(("old", "new", "expected"), CASES)
def test_it_names_file_line_and_key(old: str, new: str, expected: str) -> None:
    assert old in GOOD
    with pytest.raises(ConfigError) as info:
        loads(GOOD.replace(old, new), "f.toml")
    assert str(info.value).startswith(expected)


def test_it_names_a_missing_key_at_its_table() -> None:
    with pytest.raises(ConfigError) as info:
        loads(GOOD + '\n[[databases]]\nname = "c"\n', "f.toml")
    assert str(info.value) == (
        "f.toml:18: databases[2].upstream: Object missing required field `upstream`"
    )


def test_it_rejects_bad_upstream_urls() -> None:
    with pytest.raises(ValueError, match="no user name"):
        parse_upstream("postgresql://host/db")
    with pytest.raises(ValueError, match="unsupported upstream URL parameter"):
        parse_upstream("postgresql://u@h/db?target_session_attrs=any")


def test_it_gives_a_database_its_own_policy_and_the_others_the_top_level_one() -> None:
    text = GOOD.replace(
        'pool_mode = "transaction"',
        'pool_mode = "transaction"\n[databases.policy.honeytokens]\ntables = ["secret"]',
    )
    config = loads(text + "\n[table_limits]\nusers = 5\n", "f.toml")
    assert config.policy_for("a").table_limits == {"users": 5}
    assert config.policy_for("b").table_limits == {}
    assert config.policy_for("b").honeytokens.tables == ["secret"]
