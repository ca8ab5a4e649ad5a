"""Background tasks started through one helper that names them and keeps a reference.

A bare ``asyncio.create_task`` result that nobody holds can be garbage-collected mid-flight and
its exception is lost; ``spawn`` keeps every task in a set until it finishes and logs failures.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger(__name__)

_running: set[asyncio.Task[Any]] = set()


def spawn(coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
    """Start ``coro`` as a named task that is kept alive until it finishes."""
    task = asyncio.get_running_loop().create_task(coro, name=name)
    _running.add(task)
    task.add_done_callback(_finished)
    return task


def _finished(task: asyncio.Task[Any]) -> None:
    _running.discard(task)
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("task %s failed", task.get_name(), exc_info=exc)


def running() -> set[asyncio.Task[Any]]:
    """The tasks still running (for shutdown)."""
    return set(_running)
