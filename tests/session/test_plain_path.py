"""The client side's plain path (``Requests._forward_plain``), without sockets: a chunk of
Query, Sync and extended-protocol messages goes to the server as it came, with the same
bookkeeping as the message-by-message path (``Requests._forward``) — what the server is sent,
what answers are expected, the requests timed and counted, the guard's decisions counted and
audited — and any chunk that needs more (the worker's own settings, transaction mode's
renaming, COPY, FunctionCall, Terminate, a statement the guard has not decided yet or must
check) takes the message-by-message path."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxyworker.guard.catalog import Catalog, Relation
from proxyworker.guard.gate import Gate
from proxyworker.protocol import messages as m
from proxyworker.session import ClientSession, guarded
from proxyworker.upstream.connection import ServerConnection
from tests.support import sansio

_CONFIG = """\
[listen]
host = "127.0.0.1"
port = 1

[[users]]
name = "app"
password = "app-secret"

[[databases]]
name = "app"
upstream = "postgresql://app:pw@127.0.0.1:5432/app?sslmode=disable"
pool_mode = "{mode}"

[signatures]
enabled = {guard}

[table_limits]
{limits}
"""


def _config(mode: str, guard: bool) -> str:
    limits = "accounts = 100" if guard else ""
    return _CONFIG.format(mode=mode, guard=str(guard).lower(), limits=limits)


def _session(mode: str, guard: bool) -> tuple[ClientSession, ServerConnection]:
    session, server, _ = sansio.session(_config(mode, guard))
    if guard:
        assert session.pool is not None
        pool = session.pool
        accounts = Relation(
            16384, "public", "accounts", "r", None, False, False, (frozenset({"aid"}),), False
        )
        pool.catalog.use(Catalog(frozenset({"abs"}), (accounts,)))
        session.gate = Gate(
            session.policy, "app", "app", sticky=pool.limited, catalog=pool.catalog.current
        )
    return session, server


def _bind(portal: str, statement: str) -> bytes:
    body = m.cstr(portal) + m.cstr(statement) + b"\x00\x00" + b"\x00\x00" + b"\x00\x00"
    return m.message(m.BIND, body)


def _target(kind: int, what: str, name: str) -> bytes:
    return m.message(kind, what.encode() + m.cstr(name))


def _execute(portal: str) -> bytes:
    return m.message(m.EXECUTE, m.cstr(portal) + m.i32(0))


_MESSAGES = [
    m.query("SELECT 1"),
    m.query("SELECT 1; SELECT 2"),
    m.query("DEALLOCATE ALL"),
    m.query("SET sqlproxy.dry_run = off"),
    m.query("SELECT v FROM accounts WHERE aid = 7"),
    m.query("UPDATE accounts SET v = 1 WHERE aid = 4"),  # bounded: proven, not checked
    m.query("UPDATE accounts SET v = 2"),  # checked by the server's counters
    m.query("SELECT pg_sleep(1)"),  # a signature: denied
    m.parse("", "SELECT $1::int"),
    m.parse("", "SELECT v FROM accounts WHERE aid = 12"),
    m.parse("", "UPDATE accounts SET v = 1 WHERE aid = 3"),  # bounded: proven, not checked
    m.parse("", "UPDATE accounts SET v = 1"),  # checked by the server's counters
    m.parse("", "SELECT pg_sleep(0)"),  # a signature: denied
    m.parse("s1", "SELECT 2"),
    _bind("", ""),
    _bind("p1", "s1"),
    _target(m.DESCRIBE, "S", ""),
    _target(m.DESCRIBE, "P", ""),
    _target(m.DESCRIBE, "S", "s1"),
    _target(m.CLOSE, "S", "s1"),
    _target(m.CLOSE, "P", "p1"),
    _execute(""),
    _execute("p1"),
    m.message(m.FLUSH),
    m.message(m.SYNC),
    m.message(ord("d"), b"1\t2\n"),  # CopyData (as asyncpg sends it after a COPY ... FROM)
    m.message(ord("F"), b"\x00\x00\x00\x01"),  # FunctionCall
]


def _paths() -> dict[str, float]:
    return {path: counter.value for path, counter in guarded._GUARD_PATHS.items()}


def _state(session: ClientSession, server: ServerConnection) -> tuple[object, ...]:
    assert session._labels is not None
    return (
        [None if slot is None else (len(slot[0]), slot[1]) for slot in session._audit_pending],
        len(session._unit_events),
        sorted(session._checked_statements),
        sansio.sent(server),
        session.tracker._queue[session.tracker._head :],
        len(session._started),
        session._labels.queries.value,
        session._unsynced,
        sorted(server.prepared),
        session.server is server,
    )


def _message_by_message(session: ClientSession, server: ServerConnection, chunk: bytes) -> None:
    """What ``_client_data`` did before the plain path, for a client with its server."""
    if session.server is None:
        assert session.pool is not None
        assert session.pool.acquire_idle(session.pool_key) is server
        session._link(server)
    msgs = session.framer.feed(chunk)
    session._forward(msgs, chunk if session.framer.aligned else None)


@pytest.mark.parametrize("guard", [False, True], ids=["no policy", "guarded"])
@pytest.mark.parametrize("mode", ["session", "transaction"])
@given(chunks=st.lists(st.lists(st.sampled_from(_MESSAGES), min_size=1, max_size=6), max_size=6))
@settings(max_examples=150, deadline=None)
def test_the_plain_path_does_what_message_by_message_does(
    mode: str, guard: bool, chunks: list[list[bytes]]
) -> None:
    plain, plain_server = _session(mode, guard)
    each, each_server = _session(mode, guard)
    for server in (plain_server, each_server):
        server.prepared["_sqlp9_1"] = None  # another client's statement, on the same server
    for messages in chunks:
        chunk = b"".join(messages)
        before = _paths()
        plain._client_data(chunk)
        middle = _paths()
        _message_by_message(each, each_server, chunk)
        after = _paths()
        assert _state(plain, plain_server) == _state(each, each_server)
        assert sansio.sent_to_client(plain) == sansio.sent_to_client(each)
        assert {p: middle[p] - before[p] for p in before} == {
            p: after[p] - middle[p] for p in before
        }


def test_an_extended_batch_goes_out_as_it_came() -> None:
    session, server = _session("session", guard=False)
    chunk = b"".join(
        [
            m.parse("", "SELECT $1::int"),
            _bind("", ""),
            _target(m.DESCRIBE, "P", ""),
            _execute(""),
            m.message(m.SYNC),
        ]
    )
    session._client_data(chunk)
    assert sansio.sent(server) == chunk
    assert [e.request.name for e in session.tracker._queue[session.tracker._head :]] == [
        "PARSE",
        "BIND",
        "DESCRIBE_PORTAL",
        "EXECUTE",
        "SYNC",
    ]
    assert len(session._started) == 1 and not session._unsynced


def test_transaction_mode_takes_a_server_and_renames_named_statements() -> None:
    session, server = _session("transaction", guard=False)
    assert session.server is None
    session._client_data(m.query("SELECT 1"))
    assert session.server is server
    assert sansio.sent(server).endswith(m.query("SELECT 1"))
    # A named statement is not the plain path's: the server gets it under its own name.
    session._client_data(m.parse("s1", "SELECT 2") + m.message(m.SYNC))
    sent = sansio.sent(server)
    assert b"s1\x00" not in sent and b"SELECT 2" in sent


@pytest.mark.parametrize("guard", [False, True], ids=["no policy", "guarded"])
@pytest.mark.parametrize("mode", ["session", "transaction"])
@pytest.mark.parametrize(
    ("chunk", "message"),
    [
        (m.message(m.DESCRIBE) + m.message(m.SYNC), "Describe names no statement or portal"),
        (m.message(m.DESCRIBE, b"S"), "Describe names no statement or portal"),
        (m.parse("", "SELECT 1") + m.message(m.DESCRIBE), "Describe names no statement"),
        (m.message(m.PARSE, b"\x00SELECT 1"), "not NUL-terminated"),
        (m.message(m.EXECUTE, b"portal"), "not NUL-terminated"),
    ],
    ids=["empty describe", "describe cut short", "parse, empty describe", "parse", "execute"],
)
def test_a_malformed_message_ends_the_session_with_08P01(
    mode: str, guard: bool, chunk: bytes, message: str
) -> None:
    """Neither path lets a broken message raise out of the protocol callback: the client is
    told why (FATAL 08P01, as the server would say) and the server connection, which may have
    got part of the chunk, is not reused."""
    session, server = _session(mode, guard)
    session._portal_tags["portal"] = (b"SELECT", False)  # (an Execute is read for its tag)
    session._client_data(chunk)
    answer = sansio.sent_to_client(session)
    if b"E" not in answer[:1]:
        # Not the worker's to read (a Parse in a session without a policy): the server
        # answers it, and the session goes on.
        assert not guard and chunk[0] == m.PARSE
        return
    fields = m.parse_fields(answer[5:])
    assert (fields["S"], fields["C"]) == ("FATAL", "08P01")
    assert message in fields["M"] and fields["M"].startswith("sqlproxy: ")
    transport = session.transport
    assert transport is not None and transport.is_closing()
    session.connection_lost(None)
    assert server.closed and server.linked is None
