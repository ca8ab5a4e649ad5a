"""Rate limits: token buckets per user, per client address and per database.

Local to the worker process (a fleet-wide budget reconciled through Redis comes with the
control plane). ``take`` is O(1) and allocation-free once a key's bucket exists.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(slots=True)
class Bucket:
    tokens: float
    stamp: float


class TokenBuckets:
    def __init__(self, rate: float, burst: float | None = None, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(rate, 1.0)
        self._buckets: dict[str, Bucket] = {}
        self._max_keys = max_keys

    def take(self, key: str, now: float | None = None) -> bool:
        """Spend one token for ``key``; False when its bucket is empty."""
        now = time.monotonic() if now is None else now
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self._max_keys:
                self._buckets.clear()  # bounded memory; a reset only forgives
            bucket = self._buckets[key] = Bucket(self.burst, now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.stamp) * self.rate)
            bucket.stamp = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True
