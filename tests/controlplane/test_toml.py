"""TOML in and out: a standalone worker's file imports into a tenant and exports back equal;
a database's policy TOML round-trips; errors name line and key."""

from __future__ import annotations

import pathlib
from typing import Any

import msgspec
import pytest

from controlplane.databases.models import Database
from controlplane.policies.services import policy_from_toml, policy_to_toml
from controlplane.proxyusers import scram
from controlplane.proxyusers.models import ProxyUser
from controlplane.tenants.models import Tenant
from controlplane.tenants.services import export_worker_toml, import_worker_toml
from proxyworker.config import WorkerConfig, loads
from proxyworker.config.loader import ConfigError

pytestmark = pytest.mark.django_db

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"

VERIFIER = (  # of "app-secret", as in examples/sqlproxy.toml
    "SCRAM-SHA-256$4096:c3FscHJveHktZGVtby1zYWx0$4j5JtNe24p4Q2o13n9Csfg1GQctoW24DzRf3nnf+OsM="
    ":ROiCzFDOU2THWfHtAQNKpHbB/cfUsQd1XY5gtIuGW+0="
)
RICH = r"""
[[users]]
name = "app"
scram_verifier = "VERIFIER"
databases = ["shop"]
upstream_user = "shop_app"
upstream_password = "shop-app-pw"

[[users]]
name = "reporting"
password = "reporting-pw"

[[databases]]
name = "shop"
upstream = "postgresql://shop%40owner:p%40ss%2Fword@db.internal:5433/shop?sslmode=verify-full&sslrootcert=certs/ca.pem"
pool_mode = "transaction"
pool_size = 7
connect_timeout = 2.5
server_reset_query = ""
max_prepared_statements = 50

[databases.policy]
table_limits = { users = 10, "re:^audit_.*$" = 0, "*" = 10000 }
ip_rules = [{ allow = ["10.0.0.0/8"], users = ["app"] }]

[databases.policy.honeytokens]
tables = ["secret_keys"]
values = ["canary-7f3a9c", "canary-2"]
action = "alert"

[databases.policy.signatures]
enabled = true
disable = ["sleep"]
deny = [{ id = "no-vacuum", commands = ["VACUUM"], functions = ["my.fn_*"], message = "no" }]

[databases.policy.rate_limits]
queries_per_second = 200
burst = 400

[[databases]]
name = "warehouse"
upstream = "postgresql://wh@[::1]/wh"

[table_limits]
orders = 5

[honeytokens]
tables = ["canary_*"]

[[ip_rules]]
deny = ["192.0.2.0/24"]
databases = ["warehouse"]

[audit]
sample_allowed = 0.5
""".replace("VERIFIER", VERIFIER)


def semantic(config: WorkerConfig) -> dict[str, Any]:
    """What a tenant owns: users, databases and the policy each database enforces."""
    return {
        "users": [
            (u.name, u.scram_verifier, u.databases, u.upstream_user, u.upstream_password)
            for u in config.users
        ],
        "databases": [
            {
                **msgspec.to_builtins(msgspec.structs.replace(db, policy=None)),
                "upstream": db.target(),  # the URL's meaning (5432 and prefer are defaults)
                "effective_policy": msgspec.to_builtins(config.policy_for(db.name)),
            }
            for db in config.databases
        ],
    }


def round_trip(text: str) -> tuple[WorkerConfig, WorkerConfig, str]:
    tenant = Tenant.objects.create(name="T", slug="t")
    import_worker_toml(tenant, text, path="/etc/sqlproxy/sqlproxy.toml")
    exported = export_worker_toml(tenant)
    return (
        loads(text, "/etc/sqlproxy/sqlproxy.toml"),
        loads(exported, "/etc/sqlproxy/sqlproxy.toml"),
        exported,
    )


def test_it_round_trips_the_example_file() -> None:
    original, exported, _ = round_trip((EXAMPLES / "sqlproxy.toml").read_text())
    assert semantic(exported) == semantic(original)
    # the example shares one top-level policy: it is exported the same way
    assert all(db.policy is None for db in exported.databases)
    assert exported.default_policy() == original.default_policy()


def test_it_round_trips_per_database_policies_and_passwords() -> None:
    original, exported, text = round_trip(RICH)
    got, want = semantic(exported), semantic(original)
    # a plaintext password comes back as a verifier of that password
    (name, verifier, dbs, role, _) = got["users"][1]
    assert (name, dbs, role) == ("reporting", [], None)
    assert scram.verify_password("reporting-pw", verifier)
    got["users"][1] = want["users"][1]
    assert got == want
    assert 'password = "reporting-pw"' not in text and "sample_allowed" not in text
    app = ProxyUser.objects.get(name="app")  # the upstream role's password, encrypted at rest
    assert app.upstream_password == "shop-app-pw"
    assert "shop-app-pw" not in app.upstream_password_encrypted
    shop = Database.objects.get(name="shop")
    assert (shop.user, shop.password, shop.sslrootcert) == (
        "shop@owner",
        "p@ss/word",
        "certs/ca.pem",
    )
    assert list(exported.databases[0].policy.table_limits) == ["users", "re:^audit_.*$", "*"]


def test_it_reports_ignored_worker_sections_and_updates_in_place() -> None:
    tenant = Tenant.objects.create(name="T", slug="t")
    report = import_worker_toml(tenant, RICH)
    assert report.ignored_sections == ["audit"]
    assert report.databases_created == ["shop", "warehouse"]
    report = import_worker_toml(tenant, RICH.replace("pool_size = 7", "pool_size = 8"))
    assert report.databases_updated == ["shop", "warehouse"] and not report.databases_created
    assert Database.objects.get(name="shop").pool_size == 8
    # unchanged policies are not versioned again
    assert Database.objects.get(name="shop").policy.versions.count() == 2


def test_it_refuses_names_of_another_tenant_with_line_and_key() -> None:
    other = Tenant.objects.create(name="Other", slug="other")
    Database.objects.create(tenant=other, name="shop", host="h", dbname="d", user="u")
    tenant = Tenant.objects.create(name="T", slug="t")
    with pytest.raises(ConfigError) as info:
        import_worker_toml(tenant, RICH, path="x.toml")
    assert (info.value.key, info.value.line) == ("databases[0].name", 14)
    assert not ProxyUser.objects.filter(tenant=tenant).exists()  # nothing half-imported


def test_it_locates_schema_errors() -> None:
    tenant = Tenant.objects.create(name="T", slug="t")
    bad = RICH.replace('pool_mode = "transaction"', 'pool_mode = "txn"')
    with pytest.raises(ConfigError) as info:
        import_worker_toml(tenant, bad, path="x.toml")
    assert (info.value.line, info.value.key) == (16, "databases[0].pool_mode")


POLICY = """[table_limits]
users = 100
"sensitive_*" = 5

[honeytokens]
tables = ["secret_keys"]
values = ["canary-7f3a9c"]
action = "alert"

[signatures]
disable = ["sleep"]

[[signatures.deny]]
id = "no-vacuum"
commands = ["VACUUM"]

[[ip_rules]]
allow = ["10.0.0.0/8", "127.0.0.1/32"]

[[ip_rules]]
deny = ["10.66.0.0/16"]
users = ["reporting"]

[rate_limits]
queries_per_second = 200.0
burst = 400.0
"""


def test_it_round_trips_a_policy_toml() -> None:
    policy = policy_from_toml(POLICY)
    assert policy_from_toml(policy_to_toml(policy)) == policy
    assert policy_to_toml(policy_from_toml("")) == ""


@pytest.mark.parametrize(
    ("text", "line", "key"),
    [
        ('[table_limits]\nusers = 1\n"re:[" = 2\n', 1, "table_limits"),
        ("[honeytokens]\naction = 'maybe'\n", 2, "honeytokens.action"),
        ("[rate_limits]\nburst = -1\n", 2, "rate_limits.burst"),
        ("[[ip_rules]]\nallow = ['nope']\n", 2, "ip_rules[0].allow"),
        ("[signatures]\nenabled = 'yes'\n", 2, "signatures.enabled"),
        ("[table_limits\n", 1, None),
        ("[listen]\nport = 1\n", 1, "listen"),
    ],
)
def test_it_reports_policy_errors_with_line_and_key(text: str, line: int, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        policy_from_toml(text)
    assert (info.value.line, info.value.key) == (line, key)
