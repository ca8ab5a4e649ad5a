"""Background tasks of a socket, started through one helper that names them and keeps a
reference until they end (a bare create_task can be garbage-collected mid-flight)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)

_RUNNING: set[asyncio.Task[Any]] = set()


def _finished(task: asyncio.Task[Any]) -> None:
    _RUNNING.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("background task %s failed", task.get_name(), exc_info=task.exception())


def spawn(coro: Coroutine[Any, Any, None], *, name: str) -> asyncio.Task[None]:
    task = asyncio.create_task(coro, name=name)  # noqa: TID251 - this is the helper
    _RUNNING.add(task)
    task.add_done_callback(_finished)
    return task
