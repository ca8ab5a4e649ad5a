"""Audit history and statistics through the API: filters, cursor pagination, isolation."""

from __future__ import annotations

import datetime as dt

import pytest

from controlplane.audit.models import AuditEvent
from controlplane.audit.services import purge_expired_events
from tests.controlplane.conftest import World

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def add(world: World, n: int, **kw: object) -> AuditEvent:
    fields: dict[str, object] = {
        "event_id": f"e{n}", "time": T0 + dt.timedelta(minutes=n), "tenant": world.a,
        "worker": "w1", "database": "a_orders", "user": "a_app", "client": "10.0.0.1",
        "decision": "allow", "fingerprint": f"fp{n % 2}", "normalized": "SELECT $1",
        "duration_ms": 1.0, **kw,
    }  # fmt: skip
    return AuditEvent.objects.create(**fields)


@pytest.fixture
def events(world: World) -> None:
    for n in range(10):
        add(world, n)
    add(world, 10, decision="deny", rule="table_limits", normalized="DELETE FROM users",
        rows={"public.users": 250}, fingerprint="fpdel")  # fmt: skip
    add(world, 11, decision="deny", rule="honeytoken_table", user="a_other",
        normalized="SELECT * FROM secret_keys", fingerprint="fpsecret")  # fmt: skip
    add(world, 12, decision="alert", rule="honeytoken_value", fingerprint="fpsecret")
    add(world, 13, tenant=world.b, database="b_billing", user="b_app", decision="deny",
        rule="signature:sleep")  # fmt: skip


def ids(response: object) -> list[str]:
    return [e["event_id"] for e in response.json()["results"]]  # type: ignore[attr-defined]


def test_it_filters_the_history(world: World, events: None) -> None:
    api = world.bob.api()
    url = "/api/v1/audit/events/"
    assert ids(api.get(url, {"decision": "deny"})) == ["e11", "e10"]
    assert ids(api.get(url, {"rule": "honeytoken_value"})) == ["e12"]
    assert ids(api.get(url, {"user": "a_other"})) == ["e11"]
    assert ids(api.get(url, {"fingerprint": "fpsecret"})) == ["e12", "e11"]
    assert ids(api.get(url, {"table": "public.users"})) == ["e10"]  # measured rows
    assert ids(api.get(url, {"table": "secret_keys"})) == ["e11"]  # named in the statement
    since, until = (T0 + dt.timedelta(minutes=3)).isoformat(), (T0 + dt.timedelta(minutes=5))
    assert ids(api.get(url, {"since": since, "until": until.isoformat()})) == ["e4", "e3"]
    assert ids(api.get(url, {"database": "b_billing"})) == []  # charlie's, not bob's
    response = api.get(url, {"since": "yesterday", "decision": "maybe"})
    assert response.status_code == 400 and set(response.json()) == {"since", "decision"}
    event = api.get(f"{url}e10/").json()
    assert event["rows"] == {"public.users": 250} and event["rule"] == "table_limits"


def test_it_pages_with_a_cursor(world: World, events: None) -> None:
    api = world.alice.api()
    response = api.get("/api/v1/audit/events/", {"page_size": 5}).json()
    seen = [e["event_id"] for e in response["results"]]
    while response["next"]:
        response = api.get(response["next"]).json()
        seen += [e["event_id"] for e in response["results"]]
    assert seen == [f"e{n}" for n in range(12, -1, -1)]
    assert "cursor=" in api.get("/api/v1/audit/events/", {"page_size": 5}).json()["next"]


def test_it_counts_statistics(world: World, events: None) -> None:
    stats = world.alice.api().get("/api/v1/statistics/").json()
    assert (stats["queries"], stats["allowed"], stats["denied"], stats["alerted"]) == (13, 10, 2, 1)
    assert stats["blocks_by_rule"] == {"honeytoken_table": 1, "table_limits": 1}
    assert stats["honeytoken_hits"] == 2
    top = stats["top_fingerprints"]
    assert [(f["fingerprint"], f["count"]) for f in top[:2]] == [("fp0", 5), ("fp1", 5)]
    assert {f["fingerprint"]: f["denied"] for f in top}["fpsecret"] == 1
    assert {d["database"]: d["queries"] for d in stats["by_database"]} == {"a_orders": 13}
    assert {u["user"]: u["denied"] for u in stats["by_user"]} == {"a_app": 1, "a_other": 1}
    per_user = world.alice.api().get("/api/v1/statistics/", {"user": "a_other"}).json()
    assert per_user["queries"] == 1
    theirs = world.charlie.api().get("/api/v1/statistics/").json()
    assert (theirs["queries"], theirs["blocks_by_rule"]) == (1, {"signature:sleep": 1})


def test_it_hides_other_tenants_events(world: World, events: None) -> None:
    charlie = world.charlie.api()
    assert ids(charlie.get("/api/v1/audit/events/")) == ["e13"]
    assert charlie.get("/api/v1/audit/events/e10/").status_code == 404


def test_it_deletes_events_past_retention(world: World) -> None:
    from django.utils import timezone

    add(world, 1, time=timezone.now() - dt.timedelta(days=40))
    add(world, 2, time=timezone.now() - dt.timedelta(days=1))
    from controlplane.audit.tasks import purge_expired_events as task

    assert task.delay().get() == 1  # the beat task, run eagerly, with the 30-day default
    assert list(AuditEvent.objects.values_list("event_id", flat=True)) == ["e2"]
    assert purge_expired_events(0) == 1
