#!/usr/bin/env python3
"""Container health probe, installed in the image as ``sqlproxy-probe``.

    sqlproxy-probe http://127.0.0.1:9187/readyz   healthy when the answer is 2xx
    sqlproxy-probe tcp://127.0.0.1:8000           healthy when a connection opens

Exit status 0 when healthy, 1 otherwise (with the reason on stderr). Used by the image's
HEALTHCHECK and compose.yml's health checks, which Docker runs inside the container, where the
image has no curl or wget; on 127.0.0.1, which the worker's admin endpoint serves whether it
listens on loopback (the default) or on every address (``--admin-host 0.0.0.0``). The Helm
chart's probes are the kubelet's own ``httpGet`` and ``tcpSocket``.

Standard library only, never a proxy from the environment, nothing but the one request.
"""

from __future__ import annotations

import socket
import sys
import urllib.error
import urllib.request
from urllib.parse import urlsplit

TIMEOUT = 3.0


def probe(url: str, timeout: float = TIMEOUT) -> str | None:
    """None when ``url`` is healthy, otherwise why not."""
    parts = urlsplit(url)
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        return f"{url}: invalid port"
    if not host or port is None:
        return f"{url}: expected http://HOST:PORT/PATH or tcp://HOST:PORT"
    if parts.scheme == "tcp":
        try:
            socket.create_connection((host, port), timeout=timeout).close()
        except OSError as exc:
            return f"{url}: {exc}"
        return None
    if parts.scheme != "http":
        return f"{url}: expected http://HOST:PORT/PATH or tcp://HOST:PORT"
    # No ProxyHandler settings: an http_proxy in the environment must not carry the probe away.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            status = response.status
            response.read()
    except urllib.error.HTTPError as exc:
        return f"{url}: HTTP {exc.code}: {exc.read(500).decode(errors='replace').strip()}"
    except OSError as exc:  # URLError, timeouts, refused connections
        return f"{url}: {exc}"
    return None if 200 <= status < 300 else f"{url}: HTTP {status}"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: sqlproxy-probe http://HOST:PORT/PATH | tcp://HOST:PORT", file=sys.stderr)
        return 2
    problem = probe(argv[0])
    if problem is not None:
        print(problem, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
