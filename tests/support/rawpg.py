"""A deliberately small, independent PostgreSQL client over a plain socket, for byte-level
tests that real drivers cannot express (malformed messages, FunctionCall, odd startup
packets). SCRAM comes from the ``scramp`` library, not from the worker's own code."""

from __future__ import annotations

import socket
import struct

import scramp


class RawConnection:
    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_message(self, kind: bytes, body: bytes = b"") -> None:
        self.send(kind + struct.pack("!i", len(body) + 4) + body)

    def recv_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("connection closed by the worker")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_message(self) -> tuple[bytes, bytes]:
        kind = self.recv_exact(1)
        (length,) = struct.unpack("!i", self.recv_exact(4))
        return kind, self.recv_exact(length - 4)

    def read_until_ready(self) -> list[tuple[bytes, bytes]]:
        out = []
        while True:
            kind, body = self.read_message()
            out.append((kind, body))
            if kind == b"Z" or (kind == b"E" and fields(body).get("S") == "FATAL"):
                return out

    def startup(self, user: str, database: str, minor: int = 0, **params: str) -> None:
        pairs = {"user": user, "database": database, **params}
        body = struct.pack("!i", (3 << 16) | minor)
        body += b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in pairs.items()) + b"\0"
        self.send(struct.pack("!i", len(body) + 4) + body)

    def login(
        self, user: str, password: str, database: str, **params: str
    ) -> list[tuple[bytes, bytes]]:
        """Startup and SCRAM; returns the messages after AuthenticationOk through ReadyForQuery."""
        self.startup(user, database, **params)
        kind, body = self.read_message()
        while kind == b"v":
            kind, body = self.read_message()
        assert kind == b"R" and struct.unpack("!i", body[:4])[0] == 10, (kind, body)
        client = scramp.ScramClient(["SCRAM-SHA-256"], user, password)
        first = client.get_client_first().encode()
        self.send_message(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(first)) + first)
        kind, body = self.read_message()
        if kind == b"E":
            return [(kind, body)]
        client.set_server_first(body[4:].decode())
        self.send_message(b"p", client.get_client_final().encode())
        kind, body = self.read_message()
        if kind == b"E":
            return [(kind, body)]
        client.set_server_final(body[4:].decode())
        return self.read_until_ready()

    def query(self, sql: str) -> list[tuple[bytes, bytes]]:
        self.send_message(b"Q", sql.encode() + b"\0")
        return self.read_until_ready()

    def close(self) -> None:
        self.sock.close()


def fields(body: bytes) -> dict[str, str]:
    """ErrorResponse/NoticeResponse fields by code letter."""
    out = {}
    for part in body.split(b"\0"):
        if part:
            out[chr(part[0])] = part[1:].decode()
    return out
