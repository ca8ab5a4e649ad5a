"""The session's shortcuts around the guard (``proxyworker/session/``), without sockets: a
``ClientSession`` whose transports record what is written, as ``bench/relay.py``.

- settings that decide whether text can be read are looked at again after every
  ParameterStatus (fail closed once they change);
- a repeated Parse body is handled exactly as a first one (property);
- a Bind is passed over only when nothing is armed;
- a request whose audit needs no tags or rows still reports a refusal by the guard.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from proxyworker.config.events import AuditEvent
from proxyworker.guard.catalog import Catalog, Relation
from proxyworker.guard.checks import GUARD_SQLSTATE
from proxyworker.guard.gate import Gate
from proxyworker.protocol import messages as m
from proxyworker.session import ClientSession
from proxyworker.session.state import AuditSlot
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
pool_mode = "session"

[signatures]
enabled = true

[table_limits]
accounts = 100
"""

_SAFE = frozenset({"now", "abs", "lower", "upper", "length", "coalesce"})


def _catalog() -> Catalog:
    def table(oid: int, name: str, key: str) -> Relation:
        return Relation(oid, "public", name, "r", None, False, False, (frozenset({key}),), False)

    return Catalog(_SAFE, (table(16384, "accounts", "aid"), table(16385, "notes", "id")))


def _session(config: str = _CONFIG) -> tuple[ClientSession, ServerConnection, list[AuditEvent]]:
    session, server, events = sansio.session(config)
    assert session.pool is not None
    pool = session.pool
    pool.catalog.use(_catalog())
    session.gate = Gate(
        session.policy, "app", "app", sticky=pool.limited, catalog=pool.catalog.current
    )
    return session, server, events


_sent = sansio.sent


_SELECT = m.query("SELECT 1")
_ANSWER = (
    m.message(m.ROW_DESCRIPTION, b"\x00\x00")
    + m.message(m.COMMAND_COMPLETE, b"SELECT 1\x00")
    + m.ready_for_query(b"I")
)


def _last_slot(session: ClientSession) -> AuditSlot:
    """What the request sent last leaves to audit."""
    return [*session._audit_pending][-1]


def test_text_settings_are_looked_at_again_after_a_parameter_status() -> None:
    session, server, _ = _session()
    for name, value in (("standard_conforming_strings", "off"), ("client_encoding", "SJIS")):
        session.data_received(_SELECT)
        assert _sent(server) == _SELECT  # readable: allowed as sent
        session.server_data(server, _ANSWER)
        session.server_data(server, m.parameter_status(name, value))
        session.data_received(_SELECT)
        refused = _sent(server)
        assert refused != _SELECT and GUARD_SQLSTATE.encode() in refused
        session.server_data(server, _ANSWER)
        # Back to a readable value: allowed again.
        session.server_data(
            server, m.parameter_status(name, "on" if name.startswith("standard") else "UTF8")
        )
        session.data_received(_SELECT)
        assert _sent(server) == _SELECT
        session.server_data(server, _ANSWER)


_TEXTS = (
    "SELECT * FROM notes WHERE id = $1",
    "SELECT pg_read_file('/etc/passwd')",
    "UPDATE accounts SET aid = aid WHERE aid = $1",
    "UPDATE accounts SET aid = aid",
    "SELECT 1; SELECT 2",
    "SELECT (",
    "SET search_path = other",
)


def _parse(name: str, sql: str) -> bytes:
    return m.parse(name, sql) + m.message(m.SYNC)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(("", "s1")), st.sampled_from(_TEXTS)), max_size=12))
def test_a_repeated_parse_body_is_handled_as_a_first_one(
    parses: list[tuple[str, str]],
) -> None:
    session, server, _ = _session()
    for name, sql in parses:
        request = _parse(name, sql)
        session.data_received(request)
        fresh, fresh_server, _ = _session()
        fresh.gate.search_path = session.gate.search_path  # type: ignore[union-attr]
        fresh.data_received(request)
        assert _sent(server) == _sent(fresh_server)
        assert (name in session._checked_statements) == (name in fresh._checked_statements)


def test_a_bind_is_passed_over_only_when_nothing_is_armed() -> None:
    session, server, _ = _session()
    bind = m.message(m.BIND, b"\x00s1\x00\x00\x00\x00\x00\x00\x00")
    session.data_received(m.parse("s1", "SELECT * FROM notes WHERE id = 1") + m.message(m.SYNC))
    _sent(server)
    assert not session._bind_armed()
    session.data_received(bind)
    assert _sent(server) == bind
    # Not provably bounded: the Bind arms the check and gets the baseline before it.
    session.data_received(m.parse("s1", "UPDATE accounts SET aid = aid") + m.message(m.SYNC))
    _sent(server)
    assert session._bind_armed()
    session.data_received(bind)
    armed = _sent(server)
    assert armed.endswith(bind) and len(armed) > len(bind)
    assert session._check_pending


def _refusal() -> bytes:
    return m.error_response(GUARD_SQLSTATE, "sqlproxy: statement refused by table_limits")


_STATIC_WRITE = "UPDATE accounts SET aid = aid WHERE aid = 7"  # static: nothing to verify


def test_an_unsampled_request_still_reports_a_refusal() -> None:
    session, server, events = _session()
    # Extended protocol: another statement's check at the same Sync could refuse this one.
    write = (
        m.parse("", _STATIC_WRITE)
        + m.message(m.BIND, b"\x00\x00\x00\x00\x00\x00\x00\x00")
        + m.message(m.EXECUTE, b"\x00" + m.i32(0))
        + m.message(m.SYNC)
    )
    session.data_received(write)
    assert _sent(server) == write
    slot = _last_slot(session)
    assert slot is not None and slot[1] is False  # unsampled: tags and rows not needed
    session.server_data(
        server,
        m.message(m.PARSE_COMPLETE)
        + m.message(m.BIND_COMPLETE)
        + m.message(m.COMMAND_COMPLETE, b"UPDATE 1\x00"),
    )
    session.server_data(server, m.ready_for_query(b"I"))
    assert events == [] and session._last_tag == b"" and session._tag_rows == 0
    session.data_received(write)
    session.server_data(server, _refusal() + m.ready_for_query(b"I"))
    assert [(e.decision, e.rule) for e in events] == [("deny", "table_limit")]
    assert session._guard_refusal is None
    # A request with no decision to audit: nothing is queued, a refusal is forgotten.
    session.data_received(_SELECT)
    assert _last_slot(session) is None
    session.server_data(server, _refusal() + m.ready_for_query(b"I"))
    assert len(events) == 1 and session._guard_refusal is None


def test_a_static_query_keeps_no_event_nothing_can_refuse_it() -> None:
    session, server, events = _session()
    session.data_received(m.query(_STATIC_WRITE))
    assert _sent(server) == m.query(_STATIC_WRITE)  # no check sent with it
    assert _last_slot(session) is None
    session.server_data(
        server, m.message(m.COMMAND_COMPLETE, b"UPDATE 1\x00") + m.ready_for_query(b"I")
    )
    assert events == [] and not session._audit_pending
    # Not when it is sampled, or with honeytoken values (the value check can end its block).
    for extra in ("\n[audit]\nsample_allowed = 1.0\n", '\n[honeytokens]\nvalues = ["canary-1"]\n'):
        session, server, events = _session(_CONFIG + extra)
        session.data_received(m.query(_STATIC_WRITE))
        assert _last_slot(session) is not None


def test_sampled_requests_keep_their_tags_and_rows() -> None:
    session, server, events = _session(_CONFIG + "\n[audit]\nsample_allowed = 1.0\n")
    session.data_received(m.query(_STATIC_WRITE))
    slot = _last_slot(session)
    assert slot is not None and slot[1]
    session.server_data(
        server, m.message(m.COMMAND_COMPLETE, b"UPDATE 1\x00") + m.ready_for_query(b"I")
    )
    (event,) = events
    assert event.decision == "allow" and event.command_tag == "UPDATE 1"
    assert event.rows == {"public.accounts": 1}


def test_a_malformed_parse_is_never_taken_for_a_remembered_one() -> None:
    for body in (b"", b"\x00SELECT 1\x00\x00\x01"):
        session, server, _ = _session()
        session.data_received(m.message(m.PARSE, body) + m.message(m.SYNC))
        answer = sansio.sent_to_client(session)
        assert answer[:1] == b"E" and m.parse_fields(answer[5:])["C"] == "08P01"
        assert session._parse_message != m.message(m.PARSE, body) and sansio.sent(server) == b""
