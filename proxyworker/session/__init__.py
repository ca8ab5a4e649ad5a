"""One client connection: startup, authentication, then the relay to a server connection.

``ClientSession`` is the single owner of I/O for its client and, while linked, for the server
connection's output: it decides what is written where, and it is the one place where the
guard's decisions are enforced, for the simple and the extended protocol alike. The states are
explicit (``Phase``); the handshake is a coroutine reading framed packets, the relay runs in
``data_received`` callbacks with no task switch per message.

The class is assembled from layers, one module each, every layer building on the one before:

- ``state``: the session's state (every attribute, set in one ``__init__``), writing to the
  client, FATAL errors, requests the worker injects itself;
- ``pooling``: linking and releasing server connections (transaction mode: a server per
  transaction, the client's settings carried over, prepared statements renamed and replayed);
- ``guarded``: the guard's decision for each Query and Parse (``Gate``), dry run and preview,
  audit events, rate limits, rows changed;
- ``responses``: server to client — what each answer is for (``ResponseTracker``), what is
  forwarded as is, withheld until a check decides, rewritten or dropped;
- ``requests``: client to server — framing, one request unit at a time, forwarding the
  client's own bytes when nothing changes;
- ``handshake``: SSLRequest, CancelRequest, StartupMessage, SCRAM, the first server;
- ``client``: the asyncio callbacks and the end of the connection.

Request tracking (both pool modes): every Query and Sync forwarded counts as one request that
ends at the server's ReadyForQuery. In transaction mode the server connection goes back to the
pool when no request is in flight, no extended-protocol message awaits its Sync, and the server
reports 'I' (idle, outside a transaction block).

Prepared statements in transaction mode: a client's named statement gets a server-side name
unique to the client (``_sqlp<session>_<n>``). Bind/Describe/Close are renamed on the way. If
the client lands on a server connection that never saw the statement, its Parse is replayed
just before first use and the resulting ParseComplete is swallowed. ParseComplete messages
arrive in the order the Parses were sent, so a queue matches each one to its Parse.
"""

from __future__ import annotations

from proxyworker.session.client import ClientSession
from proxyworker.session.state import ClientError, Phase

__all__ = ["ClientError", "ClientSession", "Phase"]
