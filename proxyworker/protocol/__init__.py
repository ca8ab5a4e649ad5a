"""Sans-io PostgreSQL v3 protocol: message codes, builders, parsers, framing, SCRAM.

Nothing in this package touches a socket or an event loop: it turns bytes into values and
values into bytes, so it can be tested with byte-level playbooks. ``session/`` and
``upstream/`` own the I/O.
"""

from __future__ import annotations
