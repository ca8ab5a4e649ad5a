"""Management commands of ``audit``."""
