"""Run-time verification: the catalog cache, and the checks the server runs for us.

Text is evadable; the server's counters are not. ``pg_stat_get_xact_tuples_updated/deleted``
count, for the current transaction, every row changed in a relation however it happened
(views, functions, DO blocks, dynamic SQL, cascades, triggers, rules).
"""

from __future__ import annotations
