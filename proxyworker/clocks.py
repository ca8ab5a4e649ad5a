"""The clocks the hot path reads, bound once.

Compiled, a ``Final`` is a C variable: ``clocks.monotonic()`` is a call, where
``time.monotonic()`` first looks the function up on the module (about 270 instructions), and
``perf_counter`` imported by name is looked up in the importing module's dict on every call.
"""

from __future__ import annotations

import time
from typing import Final

monotonic: Final = time.monotonic
"""Seconds for intervals and deadlines (pool idle times, catalog age, rate windows)."""

perf_counter: Final = time.perf_counter
"""The clock request latencies are measured with."""
