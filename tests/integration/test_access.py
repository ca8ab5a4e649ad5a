"""Who may connect and how often: ip_rules before any byte is read (or once the startup packet
names user and database), and per-second rate limits answered with 53400."""

from __future__ import annotations

import time

import psycopg
import pytest
from psycopg import errors

from tests.conftest import databases_toml
from tests.support.pgcluster import PgCluster
from tests.support.worker import launch


@pytest.mark.parametrize(
    ("rules", "refused_message"),
    [
        ('[[ip_rules]]\ndeny = ["127.0.0.0/8"]\n', "connection from 127.0.0.1 refused by ip_rules"),
        ('[[ip_rules]]\nallow = ["10.0.0.0/8"]\n', "connection from 127.0.0.1 refused by ip_rules"),
        (
            '[[ip_rules]]\ndeny = ["127.0.0.1/32"]\nusers = ["app"]\n',
            'for user "app" to database "app" refused by ip_rules',
        ),
        ('[[ip_rules]]\nallow = ["127.0.0.1/32"]\n', None),
        ('[[ip_rules]]\ndeny = ["127.0.0.1/32"]\ndatabases = ["other"]\n', None),
    ],
    ids=[
        "deny-all-loopback",
        "allow-elsewhere",
        "deny-for-user",
        "allow-loopback",
        "deny-other-db",
    ],
)
def test_it_applies_ip_rules(upstream: PgCluster, rules: str, refused_message: str | None) -> None:
    proc = launch(databases_toml(upstream), policy=rules)
    try:
        if refused_message is None:
            with psycopg.connect(proc.dsn("app")) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
        else:
            with pytest.raises(psycopg.OperationalError, match=refused_message):
                psycopg.connect(proc.dsn("app"))
    finally:
        proc.stop()


def test_it_rate_limits_with_53400_and_recovers(upstream: PgCluster) -> None:
    proc = launch(databases_toml(upstream), policy="[rate_limits]\nqueries_per_second = 5\n")
    try:
        with psycopg.connect(proc.dsn("app"), autocommit=True) as conn:
            outcomes = []
            for _ in range(15):
                try:
                    conn.execute("SELECT 1")
                    outcomes.append("ok")
                except errors.ConfigurationLimitExceeded as exc:
                    assert exc.diag.message_primary == "sqlproxy: statement refused by rate_limits"
                    outcomes.append("limited")
            assert outcomes[:5] == ["ok"] * 5 and "limited" in outcomes
            time.sleep(1.2)
            assert conn.execute("SELECT 'again'").fetchone() == ("again",)
    finally:
        proc.stop()
