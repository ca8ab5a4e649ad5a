"""What each endpoint kind receives: Slack Block Kit, Discord embeds, or generic JSON signed
with HMAC-SHA256. Pure functions from a :class:`Notice` to the exact body and headers.

The JSON signature (header ``X-SQLProxy-Signature: v1=<hex>``) is HMAC-SHA256 with the
endpoint's secret over ``<timestamp>.<body>``, the timestamp (Unix seconds) being sent in
``X-SQLProxy-Timestamp``: a receiver recomputes it, compares in constant time, and rejects
old timestamps (replays).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import asdict, dataclass, field

TIMESTAMP_HEADER = "X-SQLProxy-Timestamp"
SIGNATURE_HEADER = "X-SQLProxy-Signature"
_COLORS = {"honeytoken": 0xC0392B, "burst": 0xD35400, "block": 0xE67E22, "rate_limit": 0xF1C40F}
_MAX_FIELD = 1000  # Slack section fields and Discord embed fields have length limits


@dataclass
class Notice:
    kind: str
    """block, honeytoken, rate_limit, burst, or report."""
    title: str
    tenant: str
    facts: dict[str, str] = field(default_factory=dict)
    detail: str = ""
    time: str = ""
    data: dict[str, object] = field(default_factory=dict)
    """Extra machine-readable data for the JSON endpoint (a report's HTML, counts)."""


def _cut(text: str, limit: int = _MAX_FIELD) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def slack(notice: Notice) -> dict[str, object]:
    blocks: list[dict[str, object]] = [
        {"type": "header", "text": {"type": "plain_text", "text": _cut(notice.title, 150)}},
    ]
    if notice.facts:
        blocks.append(
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": _cut(f"*{name}*\n{value}")}
                    for name, value in list(notice.facts.items())[:10]
                ],
            }
        )
    if notice.detail:
        blocks.append(
            {"type": "section", "text": {"type": "mrkdwn", "text": _cut(f"```{notice.detail}```")}}
        )
    blocks.append(
        {
            "type": "context",
            "elements": [
                {"type": "mrkdwn", "text": _cut(f"SQL Proxy · {notice.tenant} · {notice.time}")}
            ],
        }
    )
    return {"text": _cut(notice.title, 3000), "blocks": blocks}


def discord(notice: Notice) -> dict[str, object]:
    embed: dict[str, object] = {
        "title": _cut(notice.title, 256),
        "color": _COLORS.get(notice.kind, 0x34495E),
        "fields": [
            {"name": _cut(name, 256), "value": _cut(value or "-", 1024), "inline": True}
            for name, value in list(notice.facts.items())[:25]
        ],
        "footer": {"text": _cut(f"SQL Proxy · {notice.tenant}", 2048)},
    }
    if notice.detail:
        embed["description"] = _cut(f"```{notice.detail}```", 4096)
    if notice.time:
        embed["timestamp"] = notice.time
    return {"username": "SQL Proxy", "embeds": [embed]}


def generic(notice: Notice) -> dict[str, object]:
    return {"type": "report" if notice.kind == "report" else "alert", **asdict(notice)}


def body_for(kind: str, notice: Notice) -> bytes:
    builder = {"slack": slack, "discord": discord, "json": generic}[kind]
    return json.dumps(builder(notice), separators=(",", ":"), default=str).encode()


def signature(secret: str, timestamp: str, body: bytes) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1=" + digest.hexdigest()


def headers_for(kind: str, body: bytes, secret: str, timestamp: str) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "User-Agent": "sqlproxy-alerts/1"}
    if kind == "json":
        headers[TIMESTAMP_HEADER] = timestamp
        if secret:
            headers[SIGNATURE_HEADER] = signature(secret, timestamp, body)
    return headers
