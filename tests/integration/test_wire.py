"""Byte-level behaviour of a real worker: startup negotiation, malformed input, FunctionCall,
cancel keys — the cases drivers never produce. After every bad input the worker must answer
with a precise error and keep serving everyone else."""

from __future__ import annotations

import struct

import psycopg
import pytest

from tests.support.rawpg import RawConnection, fields
from tests.support.worker import APP_PASSWORD, APP_USER, WorkerProcess


def still_serving(worker: WorkerProcess) -> bool:
    with psycopg.connect(worker.dsn("app"), connect_timeout=5) as conn:
        return conn.execute("SELECT 42").fetchone() == (42,)


def error_of(messages: list[tuple[bytes, bytes]]) -> dict[str, str]:
    errors = [fields(body) for kind, body in messages if kind == b"E"]
    assert errors, f"expected an ErrorResponse, got {[k for k, _ in messages]}"
    return errors[0]


def test_it_logs_in_and_answers_a_query(worker: WorkerProcess) -> None:
    raw = RawConnection(worker.port)
    after_auth = raw.login(APP_USER, APP_PASSWORD, "app")
    kinds = [k for k, _ in after_auth]
    assert kinds[0] == b"R" and b"K" in kinds and kinds[-1] == b"Z"
    params = dict(body.split(b"\0")[:2] for kind, body in after_auth if kind == b"S")
    assert params[b"server_encoding"] == b"UTF8"
    rows = [body for kind, body in raw.query("SELECT 'ok'") if kind == b"D"]
    assert rows == [struct.pack("!hi", 1, 2) + b"ok"]
    raw.close()


def test_it_negotiates_down_a_newer_minor_version(worker: WorkerProcess) -> None:
    raw = RawConnection(worker.port)
    raw.startup(APP_USER, "app", minor=2, _pq_test_option="x", **{"_pq_.compression": "on"})
    kind, body = raw.read_message()
    assert kind == b"v"
    newest_minor, count = struct.unpack("!ii", body[:8])
    assert (newest_minor, count) == (0, 1)
    assert body[8:] == b"_pq_.compression\0"
    raw.close()


def test_it_declines_gss_encryption_and_continues(worker: WorkerProcess) -> None:
    raw = RawConnection(worker.port)
    raw.send(struct.pack("!ii", 8, 80877104))
    assert raw.recv_exact(1) == b"N"
    assert raw.login(APP_USER, APP_PASSWORD, "app")[-1][0] == b"Z"
    raw.close()


def test_it_refuses_ssl_when_not_configured(worker: WorkerProcess) -> None:
    raw = RawConnection(worker.port)
    raw.send(struct.pack("!ii", 8, 80877103))
    assert raw.recv_exact(1) == b"N"
    raw.close()


def test_it_rejects_a_wrong_password_without_naming_the_cause(worker: WorkerProcess) -> None:
    for user in (APP_USER, "nobody"):
        raw = RawConnection(worker.port)
        error = error_of(raw.login(user, "wrong", "app"))
        assert error["C"] == "28P01"
        assert error["M"] == f'password authentication failed for user "{user}"'
        raw.close()


def test_it_rejects_an_unknown_database_after_authentication(worker: WorkerProcess) -> None:
    raw = RawConnection(worker.port)
    error = error_of(raw.login(APP_USER, APP_PASSWORD, "nope"))
    assert (error["C"], error["S"]) == ("3D000", "FATAL")
    assert 'database "nope" does not exist' in error["M"]
    raw.close()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"Q" + struct.pack("!i", 3), "declares 3 bytes"),
        (b"Q" + struct.pack("!i", 0x7FFFFFF0), "the limit is"),
        (b"D" + struct.pack("!i", 4) + b"S\x00\x00\x00\x04", "Describe names no statement"),
        (b"D" + struct.pack("!i", 4), "Describe names no statement"),
    ],
    ids=["length-too-small", "length-too-large", "empty-describe-then-sync", "empty-describe"],
)
def test_it_answers_malformed_messages_with_08P01(
    worker: WorkerProcess, payload: bytes, message: str
) -> None:
    raw = RawConnection(worker.port)
    raw.login(APP_USER, APP_PASSWORD, "app")
    raw.send(payload)
    kind, body = raw.read_message()
    error = fields(body)
    assert (kind, error["C"], error["S"]) == (b"E", "08P01", "FATAL")
    assert message in error["M"]
    with pytest.raises(ConnectionError):
        raw.read_message()
    assert still_serving(worker)


def test_it_rejects_an_invalid_startup_packet(worker: WorkerProcess) -> None:
    raw = RawConnection(worker.port)
    raw.send(struct.pack("!ii", 8, 4 << 16))  # protocol 4.0
    error = fields(raw.read_message()[1])
    assert error["C"] == "08P01"
    assert "unsupported frontend protocol 4.0" in error["M"]
    assert still_serving(worker)


def test_it_rejects_startup_without_a_user(worker: WorkerProcess) -> None:
    raw = RawConnection(worker.port)
    body = struct.pack("!i", 3 << 16) + b"database\0app\0\0"
    raw.send(struct.pack("!i", len(body) + 4) + body)
    error = fields(raw.read_message()[1])
    assert (error["C"], error["M"]) == (
        "08P01",
        "sqlproxy: no PostgreSQL user name specified in startup packet",
    )


def test_it_denies_function_call_and_stays_usable(worker: WorkerProcess, db: str) -> None:
    raw = RawConnection(worker.port)
    raw.login(APP_USER, APP_PASSWORD, db)
    # FunctionCall: oid of pg_catalog.now() (1299), no arguments, text result.
    raw.send_message(b"F", struct.pack("!ihhh", 1299, 0, 0, 0))
    reply = raw.read_until_ready()
    error = error_of(reply)
    assert error["C"] == "42501"
    assert error["M"] == "sqlproxy: the FunctionCall protocol message is not allowed"
    assert "allow_function_call" in error["H"]
    assert reply[-1] == (b"Z", b"I")
    assert [k for k, _ in raw.query("SELECT 1")][-1] == b"Z"
    raw.close()


def test_it_ignores_a_cancel_with_an_unknown_key(worker: WorkerProcess) -> None:
    raw = RawConnection(worker.port)
    raw.send(struct.pack("!iiii", 16, 80877102, 12345, 678))
    with pytest.raises(ConnectionError):
        raw.recv_exact(1)
    assert still_serving(worker)
