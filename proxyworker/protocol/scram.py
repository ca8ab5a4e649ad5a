"""SCRAM-SHA-256 (RFC 5802/7677) as PostgreSQL speaks it, both ends, sans-io.

The worker is the SCRAM *server* towards clients (checking against stored verifiers, so no
plaintext password is needed at rest) and the SCRAM *client* towards upstream servers.
Channel binding (SCRAM-SHA-256-PLUS) is not offered; clients fall back to plain SCRAM.

Verifiers use the server's own format, so a ``rolpassword`` from ``pg_authid`` works as is:
``SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`` (base64 fields).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import stringprep
import unicodedata
from dataclasses import dataclass

MECHANISM = "SCRAM-SHA-256"
DEFAULT_ITERATIONS = 4096


class ScramError(Exception):
    """The exchange failed: wrong password, tampered message, or a protocol violation."""


@dataclass(frozen=True, slots=True)
class ScramVerifier:
    iterations: int
    salt: bytes
    stored_key: bytes
    server_key: bytes

    def __str__(self) -> str:
        b64 = _b64
        return (
            f"{MECHANISM}${self.iterations}:{b64(self.salt)}"
            f"${b64(self.stored_key)}:{b64(self.server_key)}"
        )


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def saslprep(password: str) -> bytes:
    """RFC 4013 SASLprep, falling back to the raw bytes when it does not apply (as the server
    does), so a verifier made here matches one made by ``ALTER ROLE ... PASSWORD``."""
    if password.isascii():
        return password.encode()
    mapped = "".join(
        " " if stringprep.in_table_c12(c) else c for c in password if not stringprep.in_table_b1(c)
    )
    normalized = unicodedata.normalize("NFKC", mapped)
    prohibited = (
        stringprep.in_table_c12,
        stringprep.in_table_c21_c22,
        stringprep.in_table_c3,
        stringprep.in_table_c4,
        stringprep.in_table_c5,
        stringprep.in_table_c6,
        stringprep.in_table_c7,
        stringprep.in_table_c8,
        stringprep.in_table_c9,
        stringprep.in_table_a1,
    )
    if not normalized or any(check(c) for c in normalized for check in prohibited):
        return password.encode()
    return normalized.encode()


def _salted(password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", saslprep(password), salt, iterations)


def make_verifier(
    password: str, *, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None
) -> ScramVerifier:
    salt = salt if salt is not None else secrets.token_bytes(16)
    salted = _salted(password, salt, iterations)
    stored_key = hashlib.sha256(_hmac(salted, b"Client Key")).digest()
    server_key = _hmac(salted, b"Server Key")
    return ScramVerifier(iterations, salt, stored_key, server_key)


def parse_verifier(text: str) -> ScramVerifier:
    try:
        mech, iter_salt, keys = text.split("$")
        iterations, salt = iter_salt.split(":")
        stored_key, server_key = keys.split(":")
        if mech != MECHANISM:
            raise ValueError(f"mechanism is {mech!r}")
        verifier = ScramVerifier(
            int(iterations),
            base64.b64decode(salt, validate=True),
            base64.b64decode(stored_key, validate=True),
            base64.b64decode(server_key, validate=True),
        )
    except ValueError as exc:
        raise ValueError(
            f"not a SCRAM-SHA-256 verifier ({exc}); expected "
            "SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>"
        ) from None
    if verifier.iterations < 1 or len(verifier.stored_key) != 32 or len(verifier.server_key) != 32:
        raise ValueError("SCRAM-SHA-256 verifier has a bad iteration count or key length")
    return verifier


def _attributes(text: str) -> dict[str, str]:
    attrs: dict[str, str] = {}
    for part in text.split(","):
        if len(part) < 2 or part[1] != "=":
            raise ScramError(f"malformed SCRAM attribute {part[:20]!r}")
        attrs[part[0]] = part[2:]
    return attrs


class ScramServer:
    """The worker's side when a client authenticates to it."""

    def __init__(self, verifier: ScramVerifier) -> None:
        self._verifier = verifier
        self._nonce = ""
        self._client_first_bare = ""
        self._server_first = ""
        self._gs2 = ""

    def first(self, client_first: bytes) -> bytes:
        try:
            text = client_first.decode()
        except UnicodeDecodeError:
            raise ScramError("client-first-message is not UTF-8") from None
        if text.startswith("p="):
            raise ScramError("channel binding was not offered by the server")
        if not text.startswith(("n,", "y,")):
            raise ScramError("malformed GS2 header in client-first-message")
        gs2_end = text.find(",", 2)
        if gs2_end < 0:
            raise ScramError("malformed GS2 header in client-first-message")
        self._gs2 = text[: gs2_end + 1]
        self._client_first_bare = text[gs2_end + 1 :]
        client_nonce = _attributes(self._client_first_bare).get("r")
        if not client_nonce:
            raise ScramError("client-first-message has no nonce")
        self._nonce = client_nonce + base64.b64encode(secrets.token_bytes(18)).decode()
        v = self._verifier
        self._server_first = f"r={self._nonce},s={_b64(v.salt)},i={v.iterations}"
        return self._server_first.encode()

    def final(self, client_final: bytes) -> bytes:
        try:
            text = client_final.decode()
        except UnicodeDecodeError:
            raise ScramError("client-final-message is not UTF-8") from None
        without_proof, sep, proof_attr = text.rpartition(",p=")
        if not sep:
            raise ScramError("client-final-message has no proof")
        attrs = _attributes(without_proof)
        if attrs.get("c") != base64.b64encode(self._gs2.encode()).decode():
            raise ScramError("channel binding data does not match the GS2 header")
        if attrs.get("r") != self._nonce:
            raise ScramError("nonce does not match")
        try:
            proof = base64.b64decode(proof_attr, validate=True)
        except ValueError:
            raise ScramError("proof is not base64") from None
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        v = self._verifier
        signature = _hmac(v.stored_key, auth_message)
        if len(proof) != len(signature):
            raise ScramError("password authentication failed")
        client_key = _xor(proof, signature)
        if not hmac.compare_digest(hashlib.sha256(client_key).digest(), v.stored_key):
            raise ScramError("password authentication failed")
        return f"v={_b64(_hmac(v.server_key, auth_message))}".encode()


class ScramClient:
    """The worker's side when it authenticates to an upstream server."""

    def __init__(self, password: str, user: str = "", nonce: str | None = None) -> None:
        # PostgreSQL takes the user from the startup packet and ignores the SCRAM one.
        self._password = password
        self._nonce = nonce or base64.b64encode(secrets.token_bytes(18)).decode()
        self._client_first_bare = f"n={user},r={self._nonce}"
        self._server_signature = b""

    def first(self) -> bytes:
        return f"n,,{self._client_first_bare}".encode()

    def final(self, server_first: bytes) -> bytes:
        text = server_first.decode()
        attrs = _attributes(text)
        nonce, salt, iterations = attrs.get("r", ""), attrs.get("s"), attrs.get("i", "0")
        if not nonce.startswith(self._nonce) or salt is None or not iterations.isdigit():
            raise ScramError("server-first-message is malformed or its nonce does not match")
        salted = _salted(self._password, base64.b64decode(salt), int(iterations))
        client_key = _hmac(salted, b"Client Key")
        without_proof = f"c=biws,r={nonce}"
        auth_message = f"{self._client_first_bare},{text},{without_proof}".encode()
        signature = _hmac(hashlib.sha256(client_key).digest(), auth_message)
        self._server_signature = _hmac(_hmac(salted, b"Server Key"), auth_message)
        return f"{without_proof},p={_b64(_xor(client_key, signature))}".encode()

    def verify(self, server_final: bytes) -> None:
        attrs = _attributes(server_final.decode())
        if "e" in attrs:
            raise ScramError(f"server rejected authentication: {attrs['e']}")
        expected = _b64(self._server_signature)
        if not hmac.compare_digest(attrs.get("v", ""), expected):
            raise ScramError("server signature does not match: the server is not who it claims")


def md5_password(user: str, password: str, salt: bytes) -> bytes:
    """The payload of a PasswordMessage answering AuthenticationMD5Password."""
    inner = hashlib.md5((password + user).encode()).hexdigest()
    return b"md5" + hashlib.md5(inner.encode() + salt).hexdigest().encode() + b"\x00"
