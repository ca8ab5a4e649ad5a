"""REST API of ``tenants``: authentication, tenant scoping, tokens."""
