"""Tenants: who owns databases, users and policies; members and API tokens."""
