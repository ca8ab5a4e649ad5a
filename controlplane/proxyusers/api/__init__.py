"""REST API of ``proxyusers``."""
