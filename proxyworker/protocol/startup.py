"""The untyped first packets of a connection: SSLRequest, GSSENCRequest, CancelRequest and
StartupMessage.

``parse_startup`` takes one complete packet (length prefix included) and returns what it is.
Lengths are capped at ``MAX_STARTUP_PACKET`` like the server does.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from proxyworker.protocol.messages import (
    CANCEL_REQUEST,
    GSSENC_REQUEST,
    SSL_REQUEST,
    MalformedMessage,
    read_cstr,
)

MAX_STARTUP_PACKET = 10000
_II = struct.Struct("!ii")


@dataclass(frozen=True, slots=True)
class SSLRequest:
    pass


@dataclass(frozen=True, slots=True)
class GSSEncRequest:
    pass


@dataclass(frozen=True, slots=True)
class CancelRequest:
    pid: int
    secret: int


@dataclass(frozen=True, slots=True)
class StartupMessage:
    major: int
    minor: int
    params: dict[str, str]


StartupPacket = SSLRequest | GSSEncRequest | CancelRequest | StartupMessage


def packet_length(data: bytes) -> int | None:
    """Declared length of the packet at the start of ``data``, or None if fewer than 4 bytes."""
    if len(data) < 4:
        return None
    length: int = struct.unpack_from("!i", data, 0)[0]
    if length < 8 or length > MAX_STARTUP_PACKET:
        raise MalformedMessage(f"invalid startup packet length {length}")
    return length


def parse_startup(packet: bytes) -> StartupPacket:
    length, code = _II.unpack_from(packet, 0)
    if code == SSL_REQUEST and length == 8:
        return SSLRequest()
    if code == GSSENC_REQUEST and length == 8:
        return GSSEncRequest()
    if code == CANCEL_REQUEST and length == 16:
        pid, secret = _II.unpack_from(packet, 8)
        return CancelRequest(pid, secret)
    major, minor = code >> 16, code & 0xFFFF
    if major != 3:
        raise MalformedMessage(
            f"unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.0"
        )
    params: dict[str, str] = {}
    pos = 8
    while pos < length and packet[pos] != 0:
        name, pos = read_cstr(packet, pos)
        if pos >= length:
            raise MalformedMessage(f"startup parameter {name!r} has no value")
        value, pos = read_cstr(packet, pos)
        params[name] = value
    if pos != length - 1:
        raise MalformedMessage("startup packet has trailing bytes after its terminator")
    if "user" not in params:
        raise MalformedMessage("no PostgreSQL user name specified in startup packet")
    return StartupMessage(major, minor, params)
