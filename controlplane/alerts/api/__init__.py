"""REST API of ``alerts``."""
