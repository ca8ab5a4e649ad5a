"""Third-party driver test suites (asyncpg, psycopg) run directly against PostgreSQL and
through a worker, and compared (``make conformance``; see docs/conformance.md).

Nothing here is collected by the default ``pytest`` run except ``test_asyncpg_subset.py``,
which is marked ``conformance`` and excluded unless asked for.
"""
