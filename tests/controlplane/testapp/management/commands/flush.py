"""Django's ``flush``, retried when the server aborts it as a deadlock victim.

Transactional tests end with a flush: one TRUNCATE of every table, which takes its locks table
by table. The end-to-end tests keep the control plane running in the background (daphne and
``manage.py ingest`` writing heartbeats and audit events), and an INSERT that locks the same
two tables in the other order can deadlock with it. The server then aborts one of the two; when
it is the flush, the next test would start with the last one's rows. The write side retries on
its own; this makes the flush do the same.
"""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import CommandError
from django.core.management.commands.flush import Command as Flush

_ATTEMPTS = 5


def _deadlock(exc: BaseException) -> bool:
    cause: BaseException | None = exc
    while cause is not None:
        if getattr(cause, "sqlstate", None) == "40P01":  # deadlock_detected
            return True
        cause = cause.__cause__
    return False


class Command(Flush):
    def handle(self, **options: Any) -> None:
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                super().handle(**options)
                return
            except CommandError as exc:
                if attempt == _ATTEMPTS or not _deadlock(exc):
                    raise
                time.sleep(0.1 * attempt)
