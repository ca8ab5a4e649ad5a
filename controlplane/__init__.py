"""The SQL Proxy control plane: a Django project that governs a fleet of workers.

It compiles tenants' databases, proxy users and policies into the worker's config snapshot
(``proxyworker.config``, the only part of the worker it may import), publishes it over Redis,
and ingests the audit events and heartbeats the workers send back.
"""

from __future__ import annotations

from controlplane.celery import app as celery_app

__all__ = ["celery_app"]
