"""Reports and usage statistics: rows changed kept from ingested events, the usage API
(the audit statistics plus rows changed, per tenant: charlie sees nothing of tenant A), and
scheduled daily/weekly reports rendered as HTML, sent by email (Django's SMTP backend to a real
SMTP server on loopback, with AUTH) and by webhook, claimed once even when two processes run the
schedule."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.utils import timezone

from controlplane.alerts.models import Delivery, WebhookEndpoint
from controlplane.reports import services
from controlplane.reports.models import ReportSchedule, TableRows
from controlplane.reports.tasks import send_due_reports
from proxyworker.config.events import AuditEvent as AuditEventStruct
from tests.controlplane.conftest import World, ingest
from tests.support.smtpserver import SmtpServer
from tests.support.webhooks import WebhookReceiver

pytestmark = pytest.mark.django_db(transaction=True)
_seq = iter(range(1, 10**9))


def event(**kw: Any) -> AuditEventStruct:
    fields: dict[str, Any] = {
        "id": f"rp-{next(_seq)}-{time.time_ns()}",
        "time": time.time() - 60,
        "worker": "w1",
        "database": "a_orders",
        "user": "a_app",
        "client": "10.0.0.5:5000",
        "decision": "allow",
        "fingerprint": "fp-update",
        "normalized": "UPDATE orders SET total = $1 WHERE id = $2",
        "command_tag": "UPDATE 3",
        **kw,
    }
    return AuditEventStruct(**fields)


@pytest.fixture
def traffic(world: World) -> None:
    ingest(
        event(rows={"public.orders": 3}),
        event(rows={"public.orders": 2, "public.order_lines": 7}, user="batch"),
        event(
            decision="deny",
            rule="table_limit",
            fingerprint="fp-delete",
            normalized="DELETE FROM orders",
            command_tag=None,
        ),
        event(
            decision="deny",
            rule="honeytoken_table",
            fingerprint="fp-secret",
            normalized="SELECT * FROM secret_keys",
            command_tag=None,
        ),
        event(database="b_billing", user="b_app", rows={"public.invoices": 50}),
    )


def test_rows_changed_are_kept_per_table(traffic: None, world: World) -> None:
    rows = {(r.table, r.user, r.rows) for r in TableRows.objects.filter(tenant=world.a)}
    assert rows == {
        ("public.orders", "a_app", 3),
        ("public.orders", "batch", 2),
        ("public.order_lines", "batch", 7),
    }
    assert TableRows.objects.get(tenant=world.b).rows == 50


def test_the_usage_api_extends_the_statistics(traffic: None, world: World) -> None:
    data = world.bob.api().get("/api/v1/reports/usage/").json()
    statistics = world.bob.api().get("/api/v1/statistics/").json()
    assert {k: v for k, v in data.items() if k != "rows_changed"} == statistics
    assert (data["queries"], data["denied"], data["honeytoken_hits"]) == (4, 2, 1)
    assert data["blocks_by_rule"] == {"table_limit": 1, "honeytoken_table": 1}
    assert data["top_fingerprints"][0]["fingerprint"] == "fp-update"
    assert data["rows_changed"]["total"] == 12
    assert data["rows_changed"]["by_table"] == [
        {"table": "public.order_lines", "rows": 7},
        {"table": "public.orders", "rows": 5},
    ]
    assert data["rows_changed"]["by_user"] == [
        {"user": "batch", "rows": 9},
        {"user": "a_app", "rows": 3},
    ]
    by_user = world.alice.api().get("/api/v1/reports/usage/", {"user": "batch"}).json()
    assert (by_user["queries"], by_user["rows_changed"]["total"]) == (1, 9)
    denied = world.alice.api().get("/api/v1/reports/usage/", {"decision": "deny"}).json()
    assert denied["rows_changed"]["total"] == 0  # refused statements change nothing


def test_charlie_sees_only_his_own_usage(traffic: None, world: World) -> None:
    data = world.charlie.api().get("/api/v1/reports/usage/").json()
    assert data["queries"] == 1 and data["rows_changed"]["total"] == 50
    assert [row["database"] for row in data["by_database"]] == ["b_billing"]
    assert (
        world.charlie.api()
        .get("/api/v1/reports/usage/", {"database": "a_orders"})
        .json()["queries"]
        == 0
    )


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver().start()
    yield server
    server.stop()


@pytest.fixture
def smtp(settings: Any) -> Iterator[SmtpServer]:
    """A mail server, and the settings an operator gives for it (DJANGO_EMAIL_*)."""
    server = SmtpServer().start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", server.port
    settings.EMAIL_HOST_USER, settings.EMAIL_HOST_PASSWORD = server.user, server.password
    settings.SQLPROXY_REPORT_EMAIL_FROM = "sqlproxy@example.com"
    yield server
    server.stop()


def test_a_due_daily_report_is_emailed_and_posted_once(
    traffic: None, world: World, receiver: WebhookReceiver, smtp: SmtpServer
) -> None:
    hook = WebhookEndpoint(tenant=world.a, name="r", kind="json", url=receiver.url("/json"))
    hook.set_secret(receiver.secret)
    hook.save()
    now = timezone.now()
    due = now.replace(microsecond=0)
    schedule = ReportSchedule.objects.create(
        tenant=world.a, name="daily", period="daily", email_to="sec@example.com\nops@example.com",
        webhook=hook, next_run=due,
    )  # fmt: skip
    stale_copy = ReportSchedule.objects.get(pk=schedule.pk)  # a second process's view
    assert send_due_reports.apply().get() == 1  # the beat task
    assert not services.claim(stale_copy, now)  # the other process loses the claim
    assert services.send_due_reports() == 0
    (mailed,) = smtp.received
    assert mailed.authenticated
    assert mailed.mail_from == "sqlproxy@example.com"
    assert mailed.rcpt_tos == ["sec@example.com", "ops@example.com"]
    assert "daily report: Tenant A" in mailed.message["Subject"]
    part = mailed.message.get_body(preferencelist=("html",))
    assert part is not None
    html = part.get_content()
    assert "honeytoken_table" in html and "public.order_lines" in html and "b_billing" not in html
    (posted,) = receiver.received
    assert posted.problems == []
    body = posted.json()
    assert body["type"] == "report" and body["facts"]["Rows changed"] == "12"
    assert "<h1" in body["data"]["html"]
    assert Delivery.objects.get().status == "delivered"
    schedule.refresh_from_db()
    assert schedule.next_run == due + dt.timedelta(days=1) and schedule.last_sent is not None


def test_a_weekly_report_left_for_weeks_is_sent_once(world: World, smtp: SmtpServer) -> None:
    now = timezone.now()
    schedule = ReportSchedule.objects.create(
        tenant=world.a, name="weekly", period="weekly", email_to="sec@example.com",
        next_run=now - dt.timedelta(days=30),
    )  # fmt: skip
    assert services.send_due_reports(now) == 1
    assert len(smtp.received) == 1
    schedule.refresh_from_db()
    assert now < schedule.next_run <= now + dt.timedelta(days=7)


def test_a_refused_email_is_recorded_and_the_schedule_moves_on(
    world: World, smtp: SmtpServer
) -> None:
    smtp.refuse.add("sec@example.com")
    now = timezone.now()
    schedule = ReportSchedule.objects.create(
        tenant=world.a, name="daily", period="daily", email_to="sec@example.com", next_run=now,
    )  # fmt: skip
    assert services.send_due_reports(now) == 1
    assert smtp.received == []
    schedule.refresh_from_db()
    assert schedule.last_error.startswith("email: ") and "no such mailbox" in schedule.last_error
    assert schedule.last_sent is not None and schedule.next_run > now
