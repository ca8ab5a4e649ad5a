"""REST API of ``audit``."""
