"""Upstream side: connections to PostgreSQL servers and the pools that share them."""

from __future__ import annotations
