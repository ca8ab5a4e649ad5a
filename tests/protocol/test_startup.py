"""Startup packets, sans-io."""

from __future__ import annotations

import struct

import pytest

from proxyworker.protocol import messages as m
from proxyworker.protocol.startup import (
    CancelRequest,
    GSSEncRequest,
    SSLRequest,
    StartupMessage,
    packet_length,
    parse_startup,
)


def test_it_reads_the_special_requests() -> None:
    assert parse_startup(struct.pack("!ii", 8, 80877103)) == SSLRequest()
    assert parse_startup(struct.pack("!ii", 8, 80877104)) == GSSEncRequest()
    assert parse_startup(struct.pack("!iiii", 16, 80877102, 7, -9)) == CancelRequest(7, -9)


def test_it_reads_a_startup_message_with_options() -> None:
    packet = m.startup_message({"user": "u", "database": "d", "options": "-c search_path=x"})
    assert parse_startup(packet) == StartupMessage(
        3, 0, {"user": "u", "database": "d", "options": "-c search_path=x"}
    )
    assert packet_length(packet[:4]) == len(packet)
    assert packet_length(packet[:3]) is None


@pytest.mark.parametrize(
    ("packet", "message"),
    [
        (struct.pack("!ii", 8, 2 << 16), "unsupported frontend protocol 2.0"),
        (struct.pack("!ii", 13, 3 << 16) + b"user\0", "has no value"),
        (struct.pack("!ii", 17, 3 << 16) + b"user\0u\0\0\0\0", "trailing bytes"),
        (struct.pack("!ii", 9, 3 << 16) + b"\0", "no PostgreSQL user name"),
    ],
)
def test_it_rejects_malformed_startup_packets(packet: bytes, message: str) -> None:
    with pytest.raises(m.MalformedMessage, match=message):
        parse_startup(packet)


@pytest.mark.parametrize("length", [4, 7, 10001])
def test_it_caps_startup_packet_lengths(length: int) -> None:
    with pytest.raises(m.MalformedMessage, match="invalid startup packet length"):
        packet_length(struct.pack("!i", length))


def test_error_fields_in_another_encoding_never_raise() -> None:
    # latin9 text from a server whose client_encoding is not UTF-8
    body = b"SERROR\x00VFATAL\x00C22021\x00Mcaf\xe9 \xa4\x00\x00"
    fields = m.parse_fields(body)
    assert (fields["V"], fields["C"]) == ("FATAL", "22021")
    assert fields["M"].startswith("caf")
