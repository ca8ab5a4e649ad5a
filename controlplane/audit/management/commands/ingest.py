"""``manage.py ingest``: the long-running consumer of the workers' audit and heartbeat streams
(the loop is ``controlplane.audit.ingest.StreamIngestor``). Stops cleanly on SIGTERM/SIGINT."""

from __future__ import annotations

import signal
from typing import Any

import redis
from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from controlplane.audit.ingest import StreamIngestor


class Command(BaseCommand):
    help = "Ingest audit events and heartbeats from Redis Streams into the database."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--consumer", help="consumer name (default: host-pid)")
        parser.add_argument("--batch-size", type=int, default=500)
        parser.add_argument(
            "--claim-idle",
            type=float,
            default=60.0,
            help="claim entries pending this many seconds at another consumer",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        stopping = False

        def stop(signum: int, frame: object) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        client = redis.Redis.from_url(
            settings.REDIS_URL, socket_connect_timeout=2.0, socket_timeout=10.0
        )
        ingestor = StreamIngestor(
            client,
            options["consumer"],
            batch_size=options["batch_size"],
            claim_idle=options["claim_idle"],
        )
        self.stdout.write(f"ingesting as consumer {ingestor.consumer}")
        ingestor.run_forever(lambda: stopping)
