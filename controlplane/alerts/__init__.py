"""Alerts: rules over audit events (dedup, throttling) and webhook deliveries (Celery)."""
