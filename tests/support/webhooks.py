"""A local stand-in for Slack, Discord and generic JSON webhook receivers: a threaded
http.server on loopback that checks each request the way the real service would (Slack's
Block Kit message shape, Discord's embed shape and limits, our HMAC-SHA256 signature over
``timestamp.body``) and records what it got. ``fail_first`` makes it answer 500 to that many
requests first (``fail_first=-1``: always)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def slack_problems(doc: Any) -> list[str]:
    problems = []
    if not isinstance(doc, dict) or not isinstance(doc.get("text"), str) or not doc["text"]:
        return ["a Slack message needs a non-empty 'text' (the notification fallback)"]
    blocks = doc.get("blocks")
    if not isinstance(blocks, list) or not 1 <= len(blocks) <= 50:
        return ["'blocks' must be a list of 1 to 50 blocks"]
    for block in blocks:
        kind = block.get("type")
        if kind == "header":
            text = block.get("text", {})
            if text.get("type") != "plain_text" or not 0 < len(text.get("text", "")) <= 150:
                problems.append("a header needs plain_text of at most 150 characters")
        elif kind == "section":
            if "text" not in block and "fields" not in block:
                problems.append("a section needs text or fields")
            for item in block.get("fields", []):
                if item.get("type") not in ("mrkdwn", "plain_text") or len(item["text"]) > 2000:
                    problems.append("section fields are text objects of at most 2000 characters")
            if len(block.get("fields", [])) > 10:
                problems.append("at most 10 section fields")
            if "text" in block and len(block["text"].get("text", "")) > 3000:
                problems.append("section text is at most 3000 characters")
        elif kind == "context":
            if not 0 < len(block.get("elements", [])) <= 10:
                problems.append("a context has 1 to 10 elements")
        else:
            problems.append(f"unexpected block type {kind!r}")
    return problems


def discord_problems(doc: Any) -> list[str]:
    if not isinstance(doc, dict):
        return ["body must be an object"]
    embeds = doc.get("embeds")
    if not doc.get("content") and not embeds:
        return ["a Discord message needs content or embeds"]
    problems = []
    if not isinstance(embeds, list) or len(embeds) > 10:
        return ["at most 10 embeds"]
    for embed in embeds:
        if len(embed.get("title", "")) > 256:
            problems.append("embed title is at most 256 characters")
        if len(embed.get("description", "")) > 4096:
            problems.append("embed description is at most 4096 characters")
        if not isinstance(embed.get("color", 0), int):
            problems.append("embed color is an integer")
        fields = embed.get("fields", [])
        if len(fields) > 25:
            problems.append("at most 25 fields")
        for item in fields:
            if not item.get("name") or not item.get("value"):
                problems.append("fields need a name and a value")
            if len(item["name"]) > 256 or len(item["value"]) > 1024:
                problems.append("field name <= 256, value <= 1024 characters")
    return problems


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float
    problems: list[str]

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class WebhookReceiver:
    secret: str = "s3cret-hmac-key"
    fail_first: int = 0
    received: list[Received] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.server_address[1])

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def check(self, path: str, headers: dict[str, str], body: bytes) -> list[str]:
        try:
            doc = json.loads(body)
        except ValueError:
            return ["body is not JSON"]
        if path.startswith("/slack"):
            return slack_problems(doc)
        if path.startswith("/discord"):
            return discord_problems(doc)
        timestamp = headers.get("x-sqlproxy-timestamp", "")
        signature = headers.get("x-sqlproxy-signature", "")
        expected = hmac.new(
            self.secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256
        ).hexdigest()
        if not hmac.compare_digest(signature, f"v1={expected}"):
            return ["bad signature"]
        if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > 300:
            return ["timestamp missing or too old"]
        return []

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {k.lower(): v for k, v in self.headers.items()}
                problems = receiver.check(self.path, headers, body)
                receiver.received.append(
                    Received(self.path, headers, body, time.monotonic(), problems)
                )
                failing = receiver.fail_first != 0
                if receiver.fail_first > 0:
                    receiver.fail_first -= 1
                status = 500 if failing else (400 if problems else 200)
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok" if status == 200 else b"no")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
