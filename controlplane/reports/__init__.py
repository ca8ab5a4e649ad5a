"""Reports and usage statistics per tenant, database and user; scheduled HTML reports."""
