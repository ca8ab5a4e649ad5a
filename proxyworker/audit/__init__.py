"""Audit: every decision becomes an event, emitted without blocking the relay."""

from __future__ import annotations

from proxyworker.audit.sink import AuditSink

__all__ = ["AuditSink"]
