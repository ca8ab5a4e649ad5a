"""REST API of ``databases``."""
