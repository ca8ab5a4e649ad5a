"""Run one corpus case end to end: a database in the fixture's state, setup, the SQL through a
driver (directly or through the worker), harm checks, checksums, teardown.

Two ways to give a case a database in the fixture's state:

- ``fresh``: a new copy of the template, dropped afterwards. Every case through the worker
  gets one, so the worker never meets a database (or a catalog) another case changed.
- ``reused``: the direct test's database, kept while cases leave it exactly as the template
  (checksums including sequences) and replaced by a fresh copy when one does not. Where a case
  allows it (psycopg, no transaction control in its text, no statement that refuses to run in
  a transaction block, no harm that waits for COMMIT), setup, attack and harm check run in one
  transaction on the attacker's session that is rolled back afterwards, so most direct cases
  leave nothing behind and cost no copy at all.

Setup and checks go over direct superuser connections (or, when rolled back, the attacker's
own session, whose traffic before and after the case's SQL is not counted as received).
`refusal_problems` is the verdict on how a worker answered an attack.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import itertools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg

from tests.guard import fixture
from tests.guard.clients import (
    Endpoint,
    PsqlSession,
    PsycopgSession,
    Received,
    Session,
    open_session,
    statements,
)
from tests.guard.entry import HONEYTOKEN_TABLE, HONEYTOKEN_VALUE, TABLE_LIMIT, Attack, Benign
from tests.guard.harm import CANARY, FILE_CONTENTS, SECRET_ROWS, Observation, Victim, over_limit
from tests.support.pgcluster import PgCluster

# Everything that must never reach a client of the worker.
SECRETS = (*fixture.SECRET_VALUES, fixture.FILE_SECRET)
# Statements the server refuses inside a transaction block.
_NO_TRANSACTION_BLOCK = frozenset({"AlterSystemStmt", "VacuumStmt", "CreatedbStmt", "DropdbStmt"})


@dataclass(frozen=True)
class Target:
    """Where clients connect: PostgreSQL itself or a worker in front of it."""

    name: str
    port: int
    user: str
    password: str | None


@dataclass
class Lab:
    """The cluster with the template in place; hands out databases in the fixture's state."""

    cluster: PgCluster
    maintenance: psycopg.Connection[tuple]
    _counter: Iterator[int] = field(default_factory=itertools.count)
    _reusable: Lease | None = None
    _pristine: dict[str, str] | None = None

    @property
    def direct(self) -> Target:
        return Target("direct", self.cluster.port, "postgres", None)

    @property
    def datadir(self) -> str:
        return self.cluster.datadir

    def admin(self, dbname: str) -> psycopg.Connection[tuple]:
        return self.cluster.connect(dbname)

    @contextlib.contextmanager
    def fresh(self, name: str) -> Iterator[str]:
        with fixture.fresh_database(self.maintenance, name):
            yield name

    @contextlib.contextmanager
    def reused(self) -> Iterator[Lease]:
        """The direct test's database, with an admin connection kept open on it; replaced
        afterwards unless still in the template's state (a case reports the state it left in
        `Lease.state`)."""
        if self._reusable is None:
            name = f"guard_direct{next(self._counter)}"
            self.maintenance.execute(f"CREATE DATABASE {name} TEMPLATE {fixture.TEMPLATE}")
            self._reusable = Lease(name, self.admin(name))
        lease = self._reusable
        lease.state = None
        try:
            yield lease
        finally:
            if lease.state is None:
                lease.state = fixture.checksums(lease.admin, self.datadir, sequences=True)
            if self._pristine is None:
                self._pristine = self._template_state()
            if lease.state != self._pristine:
                self._reusable = None
                lease.admin.close()
                self.maintenance.execute(f"DROP DATABASE {lease.name} WITH (FORCE)")

    def _template_state(self) -> dict[str, str]:
        with self.fresh("guard_pristine"), self.admin("guard_pristine") as admin:
            return fixture.checksums(admin, self.datadir, sequences=True)


class FreshDatabases:
    """Fresh copies of the template named prefix0, prefix1, ... in order, at most `count`.

    A background thread (with its own connection) creates the next `ahead` databases while
    the current case runs and drops used ones behind it: a copy costs tens to hundreds of
    milliseconds of server I/O that would otherwise add to every case through the worker.
    """

    def __init__(self, cluster: PgCluster, prefix: str, count: int, ahead: int = 2) -> None:
        self.cluster = cluster
        self.prefix = prefix
        self.count = count
        self.ahead = ahead
        self._next = 0
        self._pending: dict[int, concurrent.futures.Future[None]] = {}
        self._executor = concurrent.futures.ThreadPoolExecutor(1, "guard-databases")
        self._conn: psycopg.Connection[tuple] | None = None

    def names(self) -> list[str]:
        return [f"{self.prefix}{i}" for i in range(self.count)]

    def _maintenance(self) -> psycopg.Connection[tuple]:
        if self._conn is None:  # only ever used on the executor's thread
            self._conn = self.cluster.connect("postgres")
        return self._conn

    def _create(self, name: str) -> None:
        conn = self._maintenance()
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {fixture.TEMPLATE} STRATEGY FILE_COPY")

    def _drop(self, name: str) -> None:
        self._maintenance().execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def _schedule(self, index: int) -> concurrent.futures.Future[None]:
        if index not in self._pending:
            self._pending[index] = self._executor.submit(self._create, f"{self.prefix}{index}")
        return self._pending[index]

    @contextlib.contextmanager
    def lease(self) -> Iterator[str]:
        index = self._next
        assert index < self.count, "raise the number of databases the worker lists"
        self._next += 1
        created = self._schedule(index)
        for upcoming in range(index + 1, min(index + 1 + self.ahead, self.count)):
            self._schedule(upcoming)
        created.result()
        del self._pending[index]
        name = f"{self.prefix}{index}"
        try:
            yield name
        finally:
            self._executor.submit(self._drop, name)

    def close(self) -> None:
        for index in list(self._pending):
            self._executor.submit(self._drop, f"{self.prefix}{index}")
        self._executor.shutdown(wait=True)
        if self._conn is not None:
            self._conn.close()


@dataclass
class Lease:
    name: str
    admin: psycopg.Connection[tuple]
    state: dict[str, str] | None = None


@dataclass
class CaseResult:
    received: Received
    harm: str | None
    before: dict[str, str]
    after: dict[str, str]
    alive: bool
    probes: dict[str, list[tuple[Any, ...]]]

    def leaked(self) -> list[str]:
        haystack = self.received.haystack()
        return [secret for secret in SECRETS if secret in haystack]


@dataclass(frozen=True)
class Case:
    """What the harness needs of an Attack or a Benign entry."""

    sql: str
    setup: str = ""
    copy_data: bytes | None = None
    victim: bool = False
    probes: tuple[str, ...] = ()
    teardown: tuple[str, ...] = ()
    commits: bool = False

    def can_roll_back(self, driver: str) -> bool:
        if driver not in ("simple", "extended") or self.commits:
            return False
        return not any(
            s.transaction_control or s.kind in _NO_TRANSACTION_BLOCK for s in statements(self.sql)
        )


def attack_case(attack: Attack) -> Case:
    return Case(
        attack.sql, attack.setup, attack.copy_data, attack.victim, attack.harm.probes,
        attack.teardown, attack.commits,
    )  # fmt: skip


def benign_case(benign: Benign) -> Case:
    return Case(benign.sql, benign.setup, benign.copy_data)


# Benign statements must show none of these: checked directly, so a "benign" entry that would
# really trip a rule cannot make the worker look wrong.
BENIGN_HARMS = (
    over_limit("users"),
    over_limit("orders"),
    over_limit("sensitive_data"),
    SECRET_ROWS,
    CANARY,
    FILE_CONTENTS,
)


def benign_harm(obs: Observation) -> str | None:
    found = [harm.found(obs) for harm in BENIGN_HARMS]
    return "; ".join(f for f in found if f) or None


Judge = Callable[[Observation], str | None]


def run_direct(
    lab: Lab, case: Case, driver: str, judge: Judge, *, roll_back: bool = True
) -> CaseResult:
    """A case on a direct connection, in the reused database; rolled back when it can be and
    `roll_back` allows (a benign reference run must commit, to compare effects)."""
    with lab.reused() as lease:
        admin = contextlib.nullcontext(lease.admin)
        if roll_back and case.can_roll_back(driver):
            result = _rolled_back(lab, case, driver, lease.name, admin, judge)
        else:
            result = _committed(
                lab, case, driver, lab.direct, lease.name, admin, judge, expect_harm=True
            )
        lease.state = result.after
        return result


def run_through(
    lab: Lab, case: Case, driver: str, target: Target, databases: FreshDatabases, judge: Judge
) -> CaseResult:
    """A case through `target` (the worker, whose config lists `databases`) on a fresh copy."""
    with databases.lease() as dbname:
        admin = lab.admin(dbname)
        return _committed(lab, case, driver, target, dbname, admin, judge, expect_harm=False)


@contextlib.contextmanager
def _side_effects(lab: Lab, case: Case) -> Iterator[None]:
    fixture.remove_outputs(lab.datadir)
    try:
        yield
    finally:
        for statement in case.teardown:
            lab.maintenance.execute(statement)
        fixture.remove_outputs(lab.datadir)


Admin = contextlib.AbstractContextManager[psycopg.Connection[tuple]]


def _committed(
    lab: Lab, case: Case, driver: str, target: Target, dbname: str, admin_cm: Admin,
    judge: Judge, *, expect_harm: bool,
) -> CaseResult:  # fmt: skip
    with _side_effects(lab, case), admin_cm as admin:
        if case.setup:
            admin.execute(case.setup)
        before = fixture.snapshot(admin, lab.datadir)
        victim = Victim(f"{lab.cluster.dsn} dbname={dbname}", admin) if case.victim else None
        try:
            session = open_session(
                driver, target.port, Endpoint(dbname, target.user, target.password)
            )
            try:
                sql = case.sql.replace(fixture.DATADIR, lab.datadir)
                if isinstance(session, PsqlSession):
                    received, results, _ = session.run_script(sql, case.copy_data, case.probes)
                    answers = dict(zip(case.probes, results, strict=False))
                    alive = results[-1] == [("1",)]
                else:
                    received = session.run(sql, case.copy_data)
                    answers = {q: _probe(session.query, q) for q in case.probes}
                    alive = _alive(session)
                obs = Observation(
                    received, admin, before, lab.datadir, answers, victim, expect_harm
                )
                harm = judge(obs)
            finally:
                session.close()
            after = fixture.checksums(admin, lab.datadir, sequences=True)
        finally:
            if victim is not None:
                victim.stop(admin)
    return CaseResult(received, harm, before.checksums, after, alive, answers)


def _rolled_back(
    lab: Lab, case: Case, driver: str, dbname: str, admin_cm: Admin, judge: Judge
) -> CaseResult:
    with _side_effects(lab, case), admin_cm as admin:
        session = open_session(driver, lab.cluster.port, Endpoint(dbname, "postgres", None))
        assert isinstance(session, PsycopgSession)
        conn = session.conn
        victim = None
        try:
            conn.execute("BEGIN")
            if case.setup:
                conn.execute(case.setup)
            before = fixture.snapshot(conn, lab.datadir, state=False)
            victim = Victim(f"{lab.cluster.dsn} dbname={dbname}", admin) if case.victim else None
            received = session.run(case.sql.replace(fixture.DATADIR, lab.datadir), case.copy_data)
            # No recovery here: a ROLLBACK would undo the very harm being looked for.
            answers = {q: _probe(lambda sql: conn.execute(sql).fetchall(), q) for q in case.probes}
            obs = Observation(received, conn, before, lab.datadir, answers, victim, True)
            try:
                harm = judge(obs)
            except psycopg.errors.InFailedSqlTransaction:
                harm = None  # the case's SQL failed and took the transaction with it
            conn.execute("ROLLBACK")
            alive = _alive(session)
        finally:
            if victim is not None:
                victim.stop(admin)
            session.close()
        after = fixture.checksums(admin, lab.datadir, sequences=True)
    return CaseResult(received, harm, before.checksums, after, alive, answers)


def _alive(session: Session) -> bool:
    try:
        return session.alive()
    except Exception:
        return False


def _probe(query: Callable[[str], Any], sql: str) -> list[tuple[Any, ...]]:
    # A follow-up that fails (dead connection, aborted transaction) simply shows nothing.
    try:
        return [tuple(row) for row in query(sql)]
    except Exception:
        return []


# -- verdicts ----------------------------------------------------------------------------------

# What a refusal must say to name its rule family (compared after normalize()).
_FAMILY_WORDS = {
    TABLE_LIMIT: "table limit",
    HONEYTOKEN_TABLE: "honeytoken",
    HONEYTOKEN_VALUE: "honeytoken",
}


def normalize(text: str) -> str:
    return re.sub(r"[\s_\-]+", " ", text.lower())


def rule_words(rule: str) -> str:
    """table_limit -> "table limit"; signature:server-file-access -> "server file access"."""
    return _FAMILY_WORDS.get(rule) or normalize(rule.removeprefix("signature:"))


def refusal_problems(result: CaseResult, rules: tuple[str, ...]) -> list[str]:
    """Everything wrong with how the worker handled an attack; empty when it was refused."""
    problems = []
    error = result.received.error
    if error is None:
        problems.append(
            f"not refused: it ran (tags {result.received.statuses}, "
            f"{len(result.received.rows)} rows, {len(result.received.copy_out)} COPY bytes)"
        )
    elif error.get("sqlstate") != "42501" or not error.get("message", "").startswith("sqlproxy: "):
        problems.append(
            f"not refused by the worker: {error.get('sqlstate')} {error.get('message')}"
        )
    else:
        said = normalize(" ".join(error.get(k, "") for k in ("message", "detail", "hint")))
        if not any(rule_words(rule) in said for rule in rules):
            problems.append(f"refused without naming {' or '.join(rules)}: {error}")
    if result.harm:
        problems.append(f"harm done: {result.harm}")
    changed = fixture.diff(result.before, result.after)
    if changed:
        problems.append(f"database changed: {changed}")
    leaked = result.leaked()
    if leaked:
        problems.append(f"secrets reached the client: {leaked}")
    if not result.alive:
        problems.append("the session no longer answers SELECT 1")
    return problems
