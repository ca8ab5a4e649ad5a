"""Harm checks: what an attack does when nothing stops it, observed after the fact.

A harm looks at what the client received, at the database over a direct superuser
connection, at the attacker's own session (follow-up queries), at files and at a victim
backend, and returns a sentence describing the damage it found, or None. The direct test
asserts every attack's harm is found; the worker test asserts none is. A harm must never pass
on a side effect of the harness itself (e.g. the error text echoing the statement): secrets
never appear verbatim in corpus SQL, which test_corpus_shape checks.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg

from tests.guard import fixture
from tests.guard.clients import Received


class Victim:
    """A direct backend (application_name guard_victim) busy in pg_sleep, for signal attacks.

    It is "hit" when its query ends early: pg_cancel_backend and pg_terminate_backend both
    do that. Always `stop()` it."""

    def __init__(self, dsn: str, admin: psycopg.Connection[tuple]) -> None:
        self.conn = psycopg.connect(f"{dsn} application_name={fixture.VICTIM_APP}", autocommit=True)
        self.pid = self.conn.info.backend_pid
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._sleep, name="victim", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not admin.execute(
            "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND state = 'active' "
            "AND query LIKE 'SELECT pg_sleep%%'",
            [self.pid],
        ).fetchone():
            assert time.monotonic() < deadline, "victim never started sleeping"
            time.sleep(0.02)

    def _sleep(self) -> None:
        try:
            self.conn.execute("SELECT pg_sleep(60)")
        except BaseException as exc:
            self.error = exc

    def hit(self, wait: float) -> bool:
        self.thread.join(wait)
        return not self.thread.is_alive()

    def stop(self, admin: psycopg.Connection[tuple]) -> None:
        if self.thread.is_alive():
            admin.execute("SELECT pg_terminate_backend(%s)", [self.pid])
        self.thread.join(10)
        self.conn.close()


@dataclass
class Observation:
    received: Received
    admin: psycopg.Connection[tuple]
    before: fixture.Snapshot
    datadir: str
    # Follow-up query results on the attacker's session, by SQL text (see Harm.probes).
    probes: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    victim: Victim | None = None
    # True in the direct test: wait for slow evidence (a signalled victim) to show.
    expect_harm: bool = True


class Harm:
    description = ""
    # SQL the harness runs on the attacker's session after the attack (see SessionValue).
    probes: tuple[str, ...] = ()

    def found(self, obs: Observation) -> str | None:
        raise NotImplementedError


@dataclass(frozen=True)
class RowsChanged(Harm):
    """More rows of a guarded table updated or deleted (or truncated, dropped) than allowed."""

    table: str
    limit: int

    @property
    def description(self) -> str:
        return f"more than {self.limit} rows of {self.table} updated or deleted"

    def found(self, obs: Observation) -> str | None:
        changed = fixture.rows_changed(obs.admin, obs.before.tables[self.table])
        if changed > self.limit:
            return f"{changed} rows of {self.table} updated or deleted (limit {self.limit})"
        return None


def over_limit(table: str) -> RowsChanged:
    return RowsChanged(table, fixture.LIMITS[table])


@dataclass(frozen=True)
class Reached(Harm):
    """One of these values reached the client: rows, COPY data, notices, error, parameters."""

    values: tuple[str, ...]
    what: str

    @property
    def description(self) -> str:
        return f"{self.what} reached the client"

    def found(self, obs: Observation) -> str | None:
        haystack = obs.received.haystack()
        hits = [v for v in self.values if v in haystack]
        return f"{self.what} reached the client: {hits}" if hits else None


SECRET_ROWS = Reached(fixture.SECRET_VALUES, "secret_keys rows")
CANARY = Reached((fixture.CANARY,), "the honeytoken value")
FILE_CONTENTS = Reached((fixture.FILE_SECRET,), "a server file's contents")


@dataclass(frozen=True)
class FileWritten(Harm):
    name: str

    @property
    def description(self) -> str:
        return f"the server wrote {self.name}"

    def found(self, obs: Observation) -> str | None:
        path = os.path.join(obs.datadir, self.name)
        return f"the server wrote {path}" if os.path.exists(path) else None


@dataclass(frozen=True)
class Slept(Harm):
    seconds: float = fixture.SLEEP

    @property
    def description(self) -> str:
        return f"the statement held a backend for {self.seconds}s"

    def found(self, obs: Observation) -> str | None:
        elapsed = obs.received.elapsed
        return f"the statement took {elapsed:.2f}s" if elapsed >= self.seconds else None


@dataclass(frozen=True)
class SessionValue(Harm):
    """A follow-up query on the attacker's session returns the value the attack set."""

    query: str
    value: str

    @property
    def description(self) -> str:
        return f"{self.query} returns {self.value!r} afterwards"

    @property
    def probes(self) -> tuple[str, ...]:
        return (self.query,)

    def found(self, obs: Observation) -> str | None:
        rows = obs.probes.get(self.query, [])
        if rows and str(rows[0][0]) == self.value:
            return f"{self.query} returned {self.value!r} on the attacker's session"
        return None


@dataclass(frozen=True)
class AutoConf(Harm):
    """ALTER SYSTEM wrote a setting into postgresql.auto.conf."""

    name: str
    value: str

    @property
    def description(self) -> str:
        return f"postgresql.auto.conf sets {self.name} = {self.value}"

    def found(self, obs: Observation) -> str | None:
        row = obs.admin.execute(
            "SELECT setting FROM pg_file_settings WHERE name = %s "
            "AND sourcefile LIKE '%%postgresql.auto.conf'",
            [self.name],
        ).fetchone()
        if row and row[0] == self.value:
            return f"postgresql.auto.conf now sets {self.name} = {self.value}"
        return None


@dataclass(frozen=True)
class VictimHit(Harm):
    description = "another backend was cancelled or terminated"

    def found(self, obs: Observation) -> str | None:
        assert obs.victim is not None, "this attack needs a victim"
        if obs.victim.hit(3.0 if obs.expect_harm else 0.3):
            return f"the victim backend was signalled: {obs.victim.error!r}"
        return None


@dataclass(frozen=True)
class NewLargeObject(Harm):
    """A large object that was not there before now holds this text."""

    text: str

    @property
    def description(self) -> str:
        return f"a new large object holds {self.text!r}"

    def found(self, obs: Observation) -> str | None:
        for oid in fixture.large_objects(obs.admin) - obs.before.large_objects:
            row = obs.admin.execute("SELECT lo_get(%s)", [oid]).fetchone()
            if row and self.text.encode() in bytes(row[0]):
                return f"large object {oid} now holds the file's contents"
        return None


@dataclass(frozen=True)
class Orphans(Harm):
    """orders rows whose user is gone: FK enforcement was switched off."""

    description = "orders reference users that no longer exist"

    def found(self, obs: Observation) -> str | None:
        row = obs.admin.execute(
            "SELECT count(*) FROM orders o WHERE NOT EXISTS "
            "(SELECT 1 FROM users u WHERE u.id = o.user_id)"
        ).fetchone()
        return f"{row[0]} orphaned orders" if row and row[0] else None


@dataclass(frozen=True)
class AnyOf(Harm):
    harms: tuple[Harm, ...]

    @property
    def description(self) -> str:
        return " or ".join(h.description for h in self.harms)

    @property
    def probes(self) -> tuple[str, ...]:
        return tuple(p for h in self.harms for p in h.probes)

    def found(self, obs: Observation) -> str | None:
        for harm in self.harms:
            result = harm.found(obs)
            if result:
                return result
        return None


def any_of(*harms: Harm) -> AnyOf:
    return AnyOf(harms)


def current_role(role: str = fixture.LOW_ROLE) -> SessionValue:
    return SessionValue("SELECT current_user::text", role)


def session_role(role: str = fixture.LOW_ROLE) -> SessionValue:
    return SessionValue("SELECT session_user::text", role)


REPLICA = SessionValue("SELECT current_setting('session_replication_role')", "replica")
