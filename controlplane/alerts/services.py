"""Alert rules over ingested audit events, and webhook deliveries.

:func:`on_events_ingested` runs after each committed ingest batch (``streams.fanout``'s
``events_ingested`` signal). For every refused or alerted event of a tenant it derives the
alerts it qualifies for — honeytoken hits always; blocks, rate-limit refusals and bursts of
blocks from one client address if an endpoint of the tenant asks for them — and folds it
into the alert of its key in the current throttle window (``SQLPROXY_ALERT_THROTTLE_SECONDS``).
Only a newly created alert queues deliveries, so an attack of a thousand statements is one
notification per key and window, with a count.

:func:`deliver` is the body of the Celery task: it claims the delivery with a conditional
UPDATE (pending → sending; a delivery already claimed or finished is left alone), posts it,
and marks it delivered, or raises :class:`RetryLater` for the task to retry with backoff, or
marks it failed for good (4xx other than 408/429, or the last attempt).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from controlplane.alerts import payloads
from controlplane.alerts.models import Alert, Delivery, WebhookEndpoint
from controlplane.audit.models import AuditEvent
from controlplane.tenants.models import Tenant

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 10.0


class RetryLater(Exception):
    """A transient failure (5xx, 408, 429, network): the task retries after ``wait`` s."""

    def __init__(self, error: str, wait: float) -> None:
        super().__init__(error)
        self.wait = wait


# -- rules -----------------------------------------------------------------------------------


def client_host(client: str) -> str:
    """``10.0.0.1:5555`` -> ``10.0.0.1``; ``[::1]:5555`` -> ``[::1]`` (a client reconnecting
    gets a new port; a burst is counted per address)."""
    host, sep, port = client.rpartition(":")
    return host if sep and port.isdigit() else client


def kinds_of(event: AuditEvent) -> list[str]:
    """The alert kinds an event raises: a honeytoken hit is that and nothing else (not also a
    block: one situation, one notification)."""
    rule = event.rule or ""
    if rule.startswith("honeytoken"):
        return [Alert.Kind.HONEYTOKEN]
    if event.decision == AuditEvent.Decision.DENY:
        return [Alert.Kind.RATE_LIMIT if rule.startswith("rate_limit") else Alert.Kind.BLOCK]
    return []


def _key(kind: str, event: AuditEvent) -> str:
    host = client_host(event.client)
    if kind == Alert.Kind.BURST:
        return f"burst|{event.database}|{host}"
    if kind == Alert.Kind.RATE_LIMIT:
        return f"rate_limit|{event.database}|{event.user}"
    return f"{kind}|{event.database}|{event.rule}|{event.user}|{host}"


def _wanted(kind: str, endpoint: WebhookEndpoint) -> bool:
    return {
        Alert.Kind.HONEYTOKEN: True,  # always
        Alert.Kind.BLOCK: endpoint.on_block,
        Alert.Kind.RATE_LIMIT: endpoint.on_rate_limit,
        Alert.Kind.BURST: endpoint.on_burst,
    }[kind]


def _fold(tenant_id: int, kind: str, event: AuditEvent, count: int = 1) -> Alert | None:
    """Count ``event`` into its alert of this window; return the alert if it is new."""
    window = max(settings.SQLPROXY_ALERT_THROTTLE_SECONDS, 1)
    key = _key(kind, event)[:500]
    bucket = int(event.time.timestamp()) // window
    fields = {
        "first_event_id": event.event_id,
        "first_seen": event.time,
        "last_seen": event.time,
        "count": count,
        "database": event.database,
        "user": event.user,
        "client": event.client,
        "rule": event.rule or "",
        "message": event.message or "",
        "normalized": event.normalized,
    }
    updated = Alert.objects.filter(tenant_id=tenant_id, key=key, bucket=bucket).update(
        count=F("count") + count, last_seen=event.time
    )
    if updated:
        return None
    try:
        with transaction.atomic():
            return Alert.objects.create(
                tenant_id=tenant_id, kind=kind, key=key, bucket=bucket, **fields
            )
    except IntegrityError:  # another ingest process created it a moment ago
        Alert.objects.filter(tenant_id=tenant_id, key=key, bucket=bucket).update(
            count=F("count") + count, last_seen=event.time
        )
        return None


def on_events_ingested(events: Sequence[AuditEvent]) -> list[Alert]:
    """Raise the alerts these (stored) events call for; returns the new ones."""
    relevant = [e for e in events if e.tenant_id is not None and e.decision != "allow"]
    if not relevant:
        return []
    endpoints: dict[int, list[WebhookEndpoint]] = {}
    for endpoint in WebhookEndpoint.objects.filter(
        tenant_id__in={e.tenant_id for e in relevant}, enabled=True
    ):
        endpoints.setdefault(endpoint.tenant_id, []).append(endpoint)
    created: list[Alert] = []
    burst_checked: set[tuple[int, str, str]] = set()
    for event in relevant:
        assert event.tenant_id is not None
        mine = endpoints.get(event.tenant_id, [])
        for kind in kinds_of(event):
            if kind != Alert.Kind.HONEYTOKEN and not any(_wanted(kind, e) for e in mine):
                continue
            alert = _fold(event.tenant_id, kind, event)
            if alert is not None:
                created.append(alert)
        if event.decision == "deny":
            place = (event.tenant_id, event.database, client_host(event.client))
            if place not in burst_checked and any(e.on_burst for e in mine):
                burst_checked.add(place)
                alert = _burst(event, [e for e in mine if e.on_burst])
                if alert is not None:
                    created.append(alert)
    for alert in created:
        queue_alert_deliveries(alert, endpoints.get(alert.tenant_id, []))
    return created


def _burst(event: AuditEvent, endpoints: list[WebhookEndpoint]) -> Alert | None:
    threshold = min(e.burst_blocks for e in endpoints)
    seconds = max(e.burst_seconds for e in endpoints)
    host = client_host(event.client)
    recent = AuditEvent.objects.filter(
        tenant_id=event.tenant_id,
        database=event.database,
        decision="deny",
        time__gte=event.time - dt.timedelta(seconds=seconds),
        time__lte=event.time + dt.timedelta(seconds=1),
    ).filter(client__startswith=f"{host}:")
    blocks = recent.count()
    if blocks < threshold:
        return None
    assert event.tenant_id is not None
    return _fold(event.tenant_id, Alert.Kind.BURST, event, count=blocks)


# -- notices ---------------------------------------------------------------------------------

_TITLES = {
    "honeytoken": "Honeytoken touched",
    "block": "Statement blocked",
    "rate_limit": "Rate limit refusing statements",
    "burst": "Burst of blocked statements from one client",
}


def notice_for(alert: Alert) -> payloads.Notice:
    facts = {
        "Database": alert.database,
        "User": alert.user,
        "Client": alert.client,
        "Rule": alert.rule or "-",
        "Events": str(alert.count),
    }
    if alert.message:
        facts["Message"] = alert.message
    return payloads.Notice(
        kind=alert.kind,
        title=f"{_TITLES[alert.kind]}: {alert.database}",
        tenant=alert.tenant.name,
        facts=facts,
        detail=alert.normalized[:900],
        time=alert.first_seen.isoformat(),
        data={"alert_id": alert.pk, "event_id": alert.first_event_id, "key": alert.key},
    )


def _queue(
    endpoint: WebhookEndpoint, subject: str, notice: payloads.Notice, alert: Alert | None
) -> Delivery:
    delivery = Delivery.objects.create(
        endpoint=endpoint,
        alert=alert,
        subject=subject[:300],
        body=payloads.body_for(endpoint.kind, notice),
        next_attempt=timezone.now(),
    )
    from controlplane.alerts.tasks import deliver_webhook

    transaction.on_commit(lambda: deliver_webhook.delay(delivery.pk))
    return delivery


def queue_alert_deliveries(alert: Alert, endpoints: Iterable[WebhookEndpoint]) -> list[Delivery]:
    notice = notice_for(alert)
    return [
        _queue(endpoint, notice.title, notice, alert)
        for endpoint in endpoints
        if endpoint.enabled and _wanted(alert.kind, endpoint)
    ]


def queue_report_delivery(
    endpoint: WebhookEndpoint, subject: str, html: str, tenant: Tenant, summary: dict[str, str]
) -> Delivery:
    notice = payloads.Notice(
        kind="report",
        title=subject,
        tenant=tenant.name,
        facts=summary,
        time=timezone.now().isoformat(),
        data={"html": html},
    )
    return _queue(endpoint, subject, notice, None)


# -- delivery --------------------------------------------------------------------------------


def backoff(attempt: int, base: float | None = None, cap: float = 600.0) -> float:
    """Seconds before retry number ``attempt`` (1, 2, ...): base, 2·base, 4·base, ... capped."""
    base = settings.SQLPROXY_WEBHOOK_RETRY_BASE_SECONDS if base is None else base
    return float(min(base * 2 ** (attempt - 1), cap))


def _post(endpoint: WebhookEndpoint, body: bytes) -> int:
    timestamp = str(int(time.time()))
    headers = payloads.headers_for(endpoint.kind, body, endpoint.secret, timestamp)
    request = urllib.request.Request(endpoint.url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
        return int(response.status)


def claim(delivery_id: int) -> bool:
    return (
        Delivery.objects.filter(pk=delivery_id, status=Delivery.Status.PENDING).update(
            status=Delivery.Status.SENDING,
            attempts=F("attempts") + 1,
            next_attempt=timezone.now() + dt.timedelta(seconds=TIMEOUT_SECONDS),
        )
        == 1
    )


def _finish(delivery: Delivery, status: str, error: str = "", code: int | None = None) -> None:
    Delivery.objects.filter(pk=delivery.pk).update(
        status=status, last_error=error[:2000], response_status=code, finished=timezone.now()
    )
    WebhookEndpoint.objects.filter(pk=delivery.endpoint_id).update(
        failing=status == Delivery.Status.FAILED
    )
    if status == Delivery.Status.FAILED:
        log.error(
            "webhook delivery %s to %s failed for good: %s", delivery.pk, delivery.endpoint, error
        )


def deliver(delivery_id: int, *, final: bool) -> str:
    """One attempt; see the module docstring. ``final``: no retry follows a failure."""
    if not claim(delivery_id):
        return "skipped"
    delivery = Delivery.objects.select_related("endpoint").get(pk=delivery_id)
    try:
        code = _post(delivery.endpoint, bytes(delivery.body))
    except urllib.error.HTTPError as exc:
        error, code, transient = (
            f"HTTP {exc.code}: {exc.reason}",
            exc.code,
            exc.code >= 500 or exc.code in (408, 429),
        )
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        error, code, transient = f"{type(exc).__name__}: {exc}", None, True
    else:
        _finish(delivery, Delivery.Status.DELIVERED, code=code)
        return "delivered"
    if transient and not final:
        wait = backoff(delivery.attempts)
        Delivery.objects.filter(pk=delivery_id).update(
            status=Delivery.Status.PENDING,
            last_error=error[:2000],
            response_status=code,
            next_attempt=timezone.now() + dt.timedelta(seconds=wait),
        )
        raise RetryLater(error, wait)
    _finish(delivery, Delivery.Status.FAILED, error, code)
    return "failed"


def sweep_stalled(grace_seconds: float = 120.0) -> int:
    """Queue again what no task will deliver: a delivery whose task was never queued (the
    broker was down at commit) or died with its worker (claimed, never finished). Runs on
    beat; a delivery is stalled once ``grace_seconds`` past its ``next_attempt``."""
    from controlplane.alerts.tasks import deliver_webhook

    cutoff = timezone.now() - dt.timedelta(seconds=grace_seconds)
    stalled = Delivery.objects.filter(
        status__in=[Delivery.Status.PENDING, Delivery.Status.SENDING], next_attempt__lt=cutoff
    )
    count = 0
    for pk, status in stalled.values_list("pk", "status"):
        # Conditional: only if nothing touched it since we looked.
        if Delivery.objects.filter(pk=pk, status=status, next_attempt__lt=cutoff).update(
            status=Delivery.Status.PENDING, next_attempt=timezone.now()
        ):
            deliver_webhook.delay(pk)
            count += 1
    if count:
        log.warning("queued %d stalled webhook deliveries again", count)
    return count


def retry_failed(deliveries: Iterable[Delivery]) -> int:
    """Admin action: send failed deliveries again (a fresh series of attempts)."""
    from controlplane.alerts.tasks import deliver_webhook

    count = 0
    for delivery in deliveries:
        if Delivery.objects.filter(pk=delivery.pk, status=Delivery.Status.FAILED).update(
            status=Delivery.Status.PENDING, attempts=0, finished=None, next_attempt=timezone.now()
        ):
            transaction.on_commit(lambda pk=delivery.pk: deliver_webhook.delay(pk))
            count += 1
    return count


def recent_failures(tenants: Iterable[Tenant], days: int = 7) -> Any:
    since = timezone.now() - dt.timedelta(days=days)
    return Delivery.objects.filter(
        endpoint__tenant__in=list(tenants), status=Delivery.Status.FAILED, created__gte=since
    )
