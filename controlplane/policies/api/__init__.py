"""REST API of ``policies``."""
