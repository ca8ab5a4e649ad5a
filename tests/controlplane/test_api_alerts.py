"""The alerts and report schedules API: webhook endpoints (secret write-only, encrypted),
report schedules (webhook of the same tenant), the read-only alert list, with the tenant
isolation personas."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from controlplane.alerts.models import Alert, Delivery, WebhookEndpoint
from controlplane.reports.models import ReportSchedule
from tests.controlplane.conftest import World

pytestmark = pytest.mark.django_db

SLACK = "https://hooks.slack.com/services/T000/B000/XXXX"


def webhook(world: World, tenant: str = "a", **kw: Any) -> WebhookEndpoint:
    fields: dict[str, Any] = {"name": f"{tenant}-hook", "kind": "slack", "url": SLACK, **kw}
    return WebhookEndpoint.objects.create(tenant=getattr(world, tenant), **fields)


def schedule(world: World, tenant: str = "a", **kw: Any) -> ReportSchedule:
    fields: dict[str, Any] = {"name": f"{tenant}-daily", "next_run": timezone.now(), **kw}
    return ReportSchedule.objects.create(tenant=getattr(world, tenant), **fields)


def test_it_creates_a_webhook_with_an_encrypted_write_only_secret(world: World) -> None:
    api = world.alice.api()
    response = api.post(
        "/api/v1/webhooks/",
        {"name": "siem", "kind": "json", "url": "https://siem.example.com/in", "secret": "k3y"},
        format="json",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert "secret" not in body and body["has_secret"] is True
    assert body["failing"] is False and body["on_block"] is True and body["burst_blocks"] == 20
    endpoint = WebhookEndpoint.objects.get(pk=body["id"])
    assert endpoint.tenant == world.a and endpoint.secret == "k3y"
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT secret_encrypted FROM alerts_webhookendpoint WHERE id = %s", [endpoint.pk]
        )
        (stored,) = cursor.fetchone()
    assert stored and "k3y" not in stored
    listed = api.get("/api/v1/webhooks/").json()["results"]
    assert [(w["name"], w["has_secret"]) for w in listed] == [("siem", True)]
    assert all("secret" not in w and "secret_encrypted" not in w for w in listed)
    # absent: kept; blank: removed (an unsigned JSON endpoint, as the admin allows)
    url = f"/api/v1/webhooks/{endpoint.pk}/"
    response = api.patch(url, {"on_burst": False}, format="json")
    assert response.status_code == 200 and response.json()["has_secret"] is True
    endpoint.refresh_from_db()
    assert endpoint.secret == "k3y" and endpoint.on_burst is False
    response = api.patch(url, {"secret": ""}, format="json")
    assert response.status_code == 200 and response.json()["has_secret"] is False
    endpoint.refresh_from_db()
    assert endpoint.secret_encrypted == ""
    response = api.post(
        "/api/v1/webhooks/",
        {"name": "plain", "kind": "json", "url": "http://10.0.0.5:8080/hook"},
        format="json",
    )
    assert response.status_code == 201 and response.json()["has_secret"] is False


def test_it_retrieves_updates_and_deletes_a_webhook(world: World) -> None:
    hook = webhook(world)
    api = world.alice.api()
    url = f"/api/v1/webhooks/{hook.pk}/"
    body = api.get(url).json()
    assert (body["name"], body["kind"], body["url"]) == ("a-hook", "slack", SLACK)
    response = api.put(
        url,
        {
            "name": "chat",
            "kind": "discord",
            "url": "https://discord.com/api/webhooks/1/abc",
            "enabled": False,
            "burst_blocks": 5,
            "burst_seconds": 10,
        },
        format="json",
    )
    assert response.status_code == 200, response.json()
    hook.refresh_from_db()
    assert (hook.name, hook.kind, hook.enabled, hook.burst_blocks) == ("chat", "discord", False, 5)
    # read-only fields are ignored, not written
    assert api.patch(url, {"failing": True}, format="json").json()["failing"] is False
    assert api.delete(url).status_code == 204
    assert not WebhookEndpoint.objects.filter(pk=hook.pk).exists()


def test_it_reports_webhook_field_errors(world: World) -> None:
    api = world.alice.api()
    good = {"name": "x", "kind": "slack", "url": SLACK}
    for change, field in (
        ({"kind": "teams"}, "kind"),
        ({"url": "ftp://files.example.com/hook"}, "url"),
        ({"url": "not a url"}, "url"),
        ({"name": ""}, "name"),
        ({"burst_blocks": -1}, "burst_blocks"),
        ({"burst_seconds": 2**40}, "burst_seconds"),
    ):
        response = api.post("/api/v1/webhooks/", {**good, **change}, format="json")
        assert response.status_code == 400, (change, response.json())
        assert field in response.json(), (change, response.json())
    response = api.post("/api/v1/webhooks/", {"kind": "slack", "url": SLACK}, format="json")
    assert response.status_code == 400 and "name" in response.json()
    assert not WebhookEndpoint.objects.exists()


def test_it_creates_and_edits_report_schedules(world: World) -> None:
    hook = webhook(world)
    api = world.bob.api()  # a member, as for the other resources
    response = api.post(
        "/api/v1/report-schedules/",
        {
            "name": "weekly",
            "period": "weekly",
            "email_to": ["sec@example.com", "ops@example.com"],
            "webhook": hook.pk,
            "next_run": "2030-01-06T08:00:00Z",
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["email_to"] == ["sec@example.com", "ops@example.com"]
    assert body["webhook"] == hook.pk and body["enabled"] is True
    assert body["last_sent"] is None and body["last_error"] == ""
    created = ReportSchedule.objects.get(pk=body["id"])
    assert created.tenant == world.a
    assert created.email_to == "sec@example.com\nops@example.com"
    assert created.recipients() == ["sec@example.com", "ops@example.com"]
    assert created.next_run == dt.datetime(2030, 1, 6, 8, tzinfo=dt.UTC)
    url = f"/api/v1/report-schedules/{created.pk}/"
    assert api.get(url).json()["email_to"] == ["sec@example.com", "ops@example.com"]
    response = api.patch(
        url, {"email_to": [], "webhook": None, "last_error": "forged"}, format="json"
    )
    assert response.status_code == 200, response.json()
    created.refresh_from_db()
    assert (created.email_to, created.webhook, created.last_error) == ("", None, "")
    response = api.put(
        url,
        {"name": "daily", "period": "daily", "next_run": "2030-01-01T06:00:00Z", "enabled": False},
        format="json",
    )
    assert response.status_code == 200, response.json()
    listed = api.get("/api/v1/report-schedules/").json()["results"]
    assert [(s["name"], s["period"], s["enabled"]) for s in listed] == [("daily", "daily", False)]
    assert api.delete(url).status_code == 204
    assert not ReportSchedule.objects.exists()


def test_it_reports_report_schedule_field_errors(world: World) -> None:
    api = world.alice.api()
    good = {"name": "r", "email_to": ["sec@example.com"], "next_run": "2030-01-01T00:00:00Z"}
    for change, field in (
        ({"email_to": ["sec@example.com", "not-an-address"]}, "email_to"),
        ({"email_to": ["a@example.com\nb@example.com"]}, "email_to"),
        ({"email_to": "sec@example.com"}, "email_to"),
        ({"period": "hourly"}, "period"),
        ({"name": ""}, "name"),
        ({"next_run": "soon"}, "next_run"),
        ({"webhook": 10**9}, "webhook"),
    ):
        response = api.post("/api/v1/report-schedules/", {**good, **change}, format="json")
        assert response.status_code == 400, (change, response.json())
        assert field in response.json(), (change, response.json())
    # no helper picks a first run: next_run is required
    response = api.post("/api/v1/report-schedules/", {"name": "r"}, format="json")
    assert response.status_code == 400 and "next_run" in response.json()
    assert not ReportSchedule.objects.exists()


def test_it_keeps_webhooks_and_schedules_within_the_tenant(world: World) -> None:
    a_hook, b_hook = webhook(world), webhook(world, "b")
    a_schedule = schedule(world, webhook=a_hook)
    alice, charlie = world.alice.api(), world.charlie.api()
    assert [w["name"] for w in alice.get("/api/v1/webhooks/").json()["results"]] == ["a-hook"]
    assert [w["name"] for w in charlie.get("/api/v1/webhooks/").json()["results"]] == ["b-hook"]
    assert charlie.get("/api/v1/report-schedules/").json()["results"] == []
    for url in (f"/api/v1/webhooks/{a_hook.pk}/", f"/api/v1/report-schedules/{a_schedule.pk}/"):
        assert charlie.get(url).status_code == 404, url
        assert charlie.patch(url, {"name": "mine"}, format="json").status_code == 404, url
        assert charlie.delete(url).status_code == 404, url
    a_hook.refresh_from_db()
    a_schedule.refresh_from_db()
    assert a_hook.name == "a-hook" and a_schedule.name == "a-daily"
    # another tenant's endpoint is refused like one that does not exist (no leak)
    response = alice.post(
        "/api/v1/report-schedules/",
        {"name": "x", "webhook": b_hook.pk, "next_run": "2030-01-01T00:00:00Z"},
        format="json",
    )
    assert response.status_code == 400
    assert response.json() == {"webhook": [f'Invalid pk "{b_hook.pk}" - object does not exist.']}
    response = alice.patch(
        f"/api/v1/report-schedules/{a_schedule.pk}/", {"webhook": b_hook.pk}, format="json"
    )
    assert response.status_code == 400 and "webhook" in response.json()
    a_schedule.refresh_from_db()
    assert a_schedule.webhook == a_hook


def test_it_lets_members_write_and_no_one_else(world: World) -> None:
    # The API's rule: any member of the tenant may change its configuration (only tokens are
    # owners-only); a token of someone who left the tenant stops working.
    hook = webhook(world)
    bob = world.bob.api()
    url = f"/api/v1/webhooks/{hook.pk}/"
    assert bob.patch(url, {"enabled": False}, format="json").status_code == 200
    world.bob.user.memberships.all().delete()
    assert bob.patch(url, {"enabled": True}, format="json").status_code == 401
    assert bob.post("/api/v1/report-schedules/", {}, format="json").status_code == 401
    assert APIClient().get("/api/v1/webhooks/").status_code == 401
    assert APIClient().get("/api/v1/report-schedules/").status_code == 401
    hook.refresh_from_db()
    assert hook.enabled is False


def _alert(world: World, tenant: str, kind: str, seen: dt.datetime, **kw: Any) -> Alert:
    return Alert.objects.create(
        tenant=getattr(world, tenant),
        kind=kind,
        key=f"{kind}|{seen.isoformat()}",
        bucket=int(seen.timestamp()) // 60,
        first_event_id=f"w1-{seen.timestamp()}",
        first_seen=seen,
        last_seen=seen,
        database="a_orders",
        user="a_app",
        client="10.1.2.3:5555",
        **kw,
    )


def test_it_lists_alerts_with_their_deliveries_newest_first(world: World) -> None:
    hook = webhook(world)
    now = timezone.now()
    old = _alert(world, "a", "block", now - dt.timedelta(hours=2), rule="table_limit")
    new = _alert(world, "a", "honeytoken", now, rule="honeytoken_table")
    _alert(world, "b", "block", now)
    Delivery.objects.create(
        endpoint=hook, alert=new, subject="honeytoken", body=b"{}", status="failed", attempts=6
    )
    api = world.alice.api()
    body = api.get("/api/v1/alerts/").json()
    assert [a["id"] for a in body["results"]] == [new.pk, old.pk]
    assert "next" in body and "previous" in body  # cursor pagination, as the audit events
    (delivery,) = body["results"][0]["deliveries"]
    assert (delivery["endpoint"], delivery["status"], delivery["attempts"]) == (
        hook.pk,
        "failed",
        6,
    )
    assert "body" not in delivery
    kinds = api.get("/api/v1/alerts/?kind=block").json()["results"]
    assert [a["id"] for a in kinds] == [old.pk]
    response = api.get("/api/v1/alerts/?kind=nonsense")
    assert response.status_code == 400 and "kind" in response.json()
    assert [a["kind"] for a in world.charlie.api().get("/api/v1/alerts/").json()["results"]] == [
        "block"
    ]
    assert world.charlie.api().get(f"/api/v1/alerts/{new.pk}/").status_code == 404
    assert api.post("/api/v1/alerts/", {"kind": "block"}, format="json").status_code == 405
    assert api.delete(f"/api/v1/alerts/{new.pk}/").status_code == 405


def test_the_schema_lists_the_new_endpoints(client: Any) -> None:
    paths = client.get("/api/v1/schema/", HTTP_ACCEPT="application/json").json()["paths"]
    for expected in (
        "/api/v1/webhooks/",
        "/api/v1/webhooks/{id}/",
        "/api/v1/report-schedules/",
        "/api/v1/report-schedules/{id}/",
        "/api/v1/alerts/",
    ):
        assert expected in paths, expected
