"""Audit: the decisions workers report, stored for history, statistics and retention."""
