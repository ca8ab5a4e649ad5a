"""PostgreSQL v3 message codes, builders and parsers.

Builders return ``bytes`` ready for the wire; parsers take a message *body* (the bytes after the
5-byte type+length header) and never copy more than the fields they return. Nothing here does
I/O.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

# Frontend (client -> server) message types.
QUERY: Final[int] = ord("Q")
PARSE: Final[int] = ord("P")
BIND: Final[int] = ord("B")
DESCRIBE: Final[int] = ord("D")
EXECUTE: Final[int] = ord("E")
CLOSE: Final[int] = ord("C")
SYNC: Final[int] = ord("S")
FLUSH: Final[int] = ord("H")
FUNCTION_CALL: Final[int] = ord("F")
TERMINATE: Final[int] = ord("X")
COPY_DATA: Final[int] = ord("d")
COPY_DONE: Final[int] = ord("c")
COPY_FAIL: Final[int] = ord("f")
PASSWORD: Final[int] = ord("p")  # PasswordMessage, SASLInitialResponse, SASLResponse

# Backend (server -> client) message types.
AUTHENTICATION: Final[int] = ord("R")
BACKEND_KEY_DATA: Final[int] = ord("K")
PARAMETER_STATUS: Final[int] = ord("S")
READY_FOR_QUERY: Final[int] = ord("Z")
ERROR_RESPONSE: Final[int] = ord("E")
NOTICE_RESPONSE: Final[int] = ord("N")
NOTIFICATION_RESPONSE: Final[int] = ord("A")
NEGOTIATE_PROTOCOL_VERSION: Final[int] = ord("v")
PARSE_COMPLETE: Final[int] = ord("1")
BIND_COMPLETE: Final[int] = ord("2")
CLOSE_COMPLETE: Final[int] = ord("3")
COMMAND_COMPLETE: Final[int] = ord("C")
DATA_ROW: Final[int] = ord("D")
ROW_DESCRIPTION: Final[int] = ord("T")
PARAMETER_DESCRIPTION: Final[int] = ord("t")
NO_DATA: Final[int] = ord("n")
EMPTY_QUERY: Final[int] = ord("I")
PORTAL_SUSPENDED: Final[int] = ord("s")
COPY_IN_RESPONSE: Final[int] = ord("G")
COPY_OUT_RESPONSE: Final[int] = ord("H")
COPY_BOTH_RESPONSE: Final[int] = ord("W")
FUNCTION_CALL_RESPONSE: Final[int] = ord("V")

# Authentication request codes (body of 'R').
AUTH_OK: Final = 0
AUTH_CLEARTEXT: Final = 3
AUTH_MD5: Final = 5
AUTH_SASL: Final = 10
AUTH_SASL_CONTINUE: Final = 11
AUTH_SASL_FINAL: Final = 12

# Special startup-packet codes.
PROTOCOL_3_0: Final = 196608  # 3 << 16
SSL_REQUEST: Final = 80877103
GSSENC_REQUEST: Final = 80877104
CANCEL_REQUEST: Final = 80877102

_I32: Final = struct.Struct("!i")
_HDR: Final = struct.Struct("!ci")


def message(kind: int, body: bytes = b"") -> bytes:
    """Frame ``body`` as a typed message."""
    return bytes((kind,)) + _I32.pack(len(body) + 4) + body


def i32(value: int) -> bytes:
    return _I32.pack(value)


def cstr(value: str) -> bytes:
    return value.encode() + b"\x00"


# --- backend messages the worker writes itself -------------------------------------------


def auth_request(code: int, extra: bytes = b"") -> bytes:
    return message(AUTHENTICATION, _I32.pack(code) + extra)


def auth_ok() -> bytes:
    return auth_request(AUTH_OK)


def parameter_status(name: str, value: str) -> bytes:
    return message(PARAMETER_STATUS, cstr(name) + cstr(value))


def backend_key_data(pid: int, secret: int) -> bytes:
    return message(BACKEND_KEY_DATA, _I32.pack(pid) + _I32.pack(secret))


def ready_for_query(status: bytes = b"I") -> bytes:
    return message(READY_FOR_QUERY, status)


def negotiate_protocol_version(newest_minor: int, unrecognized: Iterable[str]) -> bytes:
    names = list(unrecognized)
    body = _I32.pack(newest_minor) + _I32.pack(len(names)) + b"".join(cstr(n) for n in names)
    return message(NEGOTIATE_PROTOCOL_VERSION, body)


def _fields(severity: str, code: str, text: str, detail: str | None, hint: str | None) -> bytes:
    parts = [b"S" + cstr(severity), b"V" + cstr(severity), b"C" + cstr(code), b"M" + cstr(text)]
    if detail:
        parts.append(b"D" + cstr(detail))
    if hint:
        parts.append(b"H" + cstr(hint))
    return b"".join(parts) + b"\x00"


def error_response(
    code: str,
    text: str,
    *,
    severity: str = "ERROR",
    detail: str | None = None,
    hint: str | None = None,
) -> bytes:
    return message(ERROR_RESPONSE, _fields(severity, code, text, detail, hint))


# --- frontend messages the worker writes to servers --------------------------------------


def startup_message(params: Mapping[str, str]) -> bytes:
    body = _I32.pack(PROTOCOL_3_0)
    body += b"".join(cstr(k) + cstr(v) for k, v in params.items()) + b"\x00"
    return _I32.pack(len(body) + 4) + body


def ssl_request() -> bytes:
    return _I32.pack(8) + _I32.pack(SSL_REQUEST)


def cancel_request(pid: int, secret: int) -> bytes:
    return _I32.pack(16) + _I32.pack(CANCEL_REQUEST) + _I32.pack(pid) + _I32.pack(secret)


def query(sql: str) -> bytes:
    return message(QUERY, cstr(sql))


def password_message(payload: bytes) -> bytes:
    return message(PASSWORD, payload)


def sasl_initial_response(mechanism: str, payload: bytes) -> bytes:
    return message(PASSWORD, cstr(mechanism) + _I32.pack(len(payload)) + payload)


def parse(name: str, sql: str, param_types: bytes = b"\x00\x00") -> bytes:
    return message(PARSE, cstr(name) + cstr(sql) + param_types)


def terminate() -> bytes:
    return message(TERMINATE)


# --- parsers -----------------------------------------------------------------------------


class MalformedMessage(ValueError):
    """A message body does not follow the protocol (SQLSTATE 08P01)."""


def read_cstr(body: bytes | memoryview, offset: int) -> tuple[str, int]:
    """Read a NUL-terminated string at ``offset``; return it and the offset after the NUL."""
    raw = bytes(body) if isinstance(body, memoryview) else body
    end = raw.find(b"\x00", offset)
    if end < 0:
        raise MalformedMessage("string is not NUL-terminated")
    try:
        return raw[offset:end].decode(), end + 1
    except UnicodeDecodeError as exc:
        raise MalformedMessage(f"string is not valid UTF-8: {exc.reason}") from None


def read_i32(body: bytes | memoryview, offset: int) -> int:
    if offset + 4 > len(body):
        raise MalformedMessage("message is truncated")
    value: int = _I32.unpack_from(body, offset)[0]
    return value


@dataclass(frozen=True, slots=True)
class ParseMessage:
    name: str
    sql: str
    param_types: bytes  # Int16 count + Int32 OIDs, kept raw for re-framing


def parse_parse(body: bytes | memoryview) -> ParseMessage:
    body = bytes(body)  # once, not in each read_cstr
    name, pos = read_cstr(body, 0)
    sql, pos = read_cstr(body, pos)
    types = bytes(body[pos:])
    if len(types) < 2 or len(types) != 2 + 4 * struct.unpack_from("!h", types, 0)[0]:
        raise MalformedMessage("Parse parameter type list does not match its count")
    return ParseMessage(name, sql, types)


def split_bind(body: bytes | memoryview) -> tuple[str, str, int]:
    """Return (portal, statement, offset of the rest) of a Bind body."""
    if len(body) >= 2 and body[0] == 0 and body[1] == 0:  # unnamed portal and statement
        return "", "", 2
    portal, pos = read_cstr(body, 0)
    statement, pos = read_cstr(body, pos)
    return portal, statement, pos


def parse_target(body: bytes | memoryview) -> tuple[int, str]:
    """Describe/Close body: ('S' or 'P', name)."""
    if len(body) < 2 or body[0] not in (ord("S"), ord("P")):
        raise MalformedMessage("Describe/Close must name 'S' (statement) or 'P' (portal)")
    name, _ = read_cstr(body, 1)
    return body[0], name


def parse_fields(body: bytes | memoryview) -> dict[str, str]:
    """ErrorResponse/NoticeResponse fields keyed by their one-letter code.

    Never raises: the text is in the session's client_encoding, which need not be UTF-8, so
    what does not decode is replaced rather than treated as a protocol violation."""
    raw = bytes(body)
    fields: dict[str, str] = {}
    pos = 0
    while pos < len(raw) and raw[pos] != 0:
        end = raw.find(b"\x00", pos + 1)
        if end < 0:
            break
        fields[chr(raw[pos])] = raw[pos + 1 : end].decode("utf-8", errors="replace")
        pos = end + 1
    return fields


def parse_parameter_status(body: bytes | memoryview) -> tuple[str, str]:
    name, pos = read_cstr(body, 0)
    value, _ = read_cstr(body, pos)
    return name, value


def header(data: bytes | memoryview, offset: int = 0) -> tuple[int, int]:
    """(type, length including the length field) of the message starting at ``offset``."""
    kind, length = _HDR.unpack_from(data, offset)
    return kind[0], length
