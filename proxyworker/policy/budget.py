"""``[rate_limits] rows_changed_per_minute``: a per-user blast-radius budget across
transactions.

Each user has a bucket of rows that refills at the configured rate (full after a minute of
no writes). Rows the server reports as changed are taken out of it after each request; while
it is empty, statements that may change rows are refused, and the guard's limit check refuses
a statement that would change more rows of limited tables than the budget has left. Local to
the worker process, like the other rate limits. Pure bookkeeping: no I/O.
"""

from __future__ import annotations

import time

_UNITS = {b"UPDATE": 1, b"DELETE": 1, b"MERGE": 1}


class RowBudget:
    def __init__(self, per_minute: int, max_users: int = 100_000) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._rows: dict[str, tuple[float, float]] = {}  # user -> (rows left, when)
        self._max_users = max_users

    def left(self, user: str, now: float | None = None) -> float:
        """Rows the user may still change (may be negative after an overrun)."""
        now = time.monotonic() if now is None else now
        rows, stamp = self._rows.get(user, (self.capacity, now))
        return min(self.capacity, rows + (now - stamp) * self.rate)

    def spend(self, user: str, rows: int, now: float | None = None) -> None:
        if rows <= 0:
            return
        now = time.monotonic() if now is None else now
        if user not in self._rows and len(self._rows) >= self._max_users:
            self._rows.clear()  # bounded memory; a reset only forgives
        self._rows[user] = (self.left(user, now) - rows, now)


def rows_of_tag(tag: bytes) -> int:
    """Rows an UPDATE, DELETE or MERGE command tag reports ("DELETE 42" -> 42); else 0."""
    verb, _, count = tag.partition(b" ")
    if verb not in _UNITS or not count.isdigit():
        return 0
    return int(count)
