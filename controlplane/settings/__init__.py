"""Settings modules: ``env`` (typed environment readers), ``base`` (every setting, read from the
environment), ``runtime`` (base + required secrets; the default) and ``test`` (the suite's)."""
