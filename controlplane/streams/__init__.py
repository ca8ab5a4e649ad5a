"""The live stream ``/api/v1/stream``: audit tail, fleet metrics and queries through a worker,
over one WebSocket per client (Channels, served by daphne). docs/stream.md is the protocol."""
