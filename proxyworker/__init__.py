"""SQL Proxy worker: a PostgreSQL wire-protocol proxy that analyzes every statement.

Vocabulary used across the package:

- *client*: an application connected to the worker (frontend in PostgreSQL terms).
- *server*: an upstream PostgreSQL backend the worker connected to.
- *session*: one client connection's state machine (the ``session`` package); it owns that
  client's socket and, while linked, the server connection's output.
- *pool*: idle server connections per database (``upstream/pool.py``).

This package never imports Django: the control plane talks to it only through
``proxyworker.config`` (the contract).
"""

from __future__ import annotations

from proxyworker.compiled import check

__version__ = "0.1.0"

COMPILED = check()
"""Whether the relay's hot path runs compiled (``proxyworker/compiled.py``)."""
