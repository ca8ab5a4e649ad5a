"""Transaction pooling carries a client's session settings to whichever server connection
serves it: what one client SETs neither leaks to the next client of that connection nor is lost
when the client moves to another one. With one server connection every client shares it."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tests.support.pgcluster import PgCluster
from tests.support.worker import WorkerProcess, launch

SECRET = "public.carried_secret"


def one_connection(upstream: PgCluster) -> str:
    return f"""
[[databases]]
name = "one"
upstream = "{upstream.url("postgres")}"
pool_mode = "transaction"
pool_size = 1
"""


@pytest.fixture(scope="module")
def shared(upstream: PgCluster) -> Iterator[WorkerProcess]:
    proc = launch(one_connection(upstream))
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def guarded(upstream: PgCluster) -> Iterator[WorkerProcess]:
    with upstream.connect() as direct:
        direct.execute(
            "DROP SCHEMA IF EXISTS carried CASCADE; CREATE SCHEMA carried;"
            f"DROP TABLE IF EXISTS {SECRET}; CREATE TABLE {SECRET} (k text);"
            f"INSERT INTO {SECRET} VALUES ('canary')"
        )
    proc = launch(one_connection(upstream), policy=f'[honeytokens]\ntables = ["{SECRET}"]\n')
    yield proc
    proc.stop()


def show(conn: psycopg.Connection, name: str) -> str:
    row = conn.execute(f"SHOW {name}").fetchone()
    assert row is not None
    return str(row[0])


def test_a_clients_settings_stay_its_own(shared: WorkerProcess) -> None:
    with (
        psycopg.connect(shared.dsn("one"), autocommit=True) as a,
        psycopg.connect(shared.dsn("one"), autocommit=True) as b,
    ):
        a.execute("SET TimeZone TO 'Asia/Tokyo'")
        a.execute("SET DateStyle TO 'German, DMY'")
        a.execute("SET default_transaction_read_only TO on")
        a.execute("SET application_name TO 'client-a'")
        # b shares the only server connection: it must not inherit any of that.
        assert show(b, "TimeZone") != "Asia/Tokyo"
        assert show(b, "DateStyle") == "ISO, MDY"
        assert show(b, "default_transaction_read_only") == "off"
        b.execute("CREATE TEMP TABLE writes_allowed (x int)")  # not a read-only transaction
        b.execute("DROP TABLE writes_allowed")
        # ...and a gets its own back on the same connection.
        assert show(a, "TimeZone") == "Asia/Tokyo"
        assert show(a, "DateStyle") == "German, DMY"
        assert show(a, "default_transaction_read_only") == "on"
        assert show(a, "application_name") == "client-a"
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            a.execute("CREATE TEMP TABLE refused (x int)")


def test_the_client_encoding_follows_the_client(shared: WorkerProcess) -> None:
    with (
        psycopg.connect(shared.dsn("one"), autocommit=True) as a,
        psycopg.connect(shared.dsn("one"), autocommit=True) as b,
    ):
        a.execute("SET client_encoding TO 'LATIN1'")
        # b still speaks UTF8: under a's LATIN1 the server would read the two bytes of é
        # as two characters.
        assert b.execute("SELECT length('é')").fetchone() == (1,)
        assert show(a, "client_encoding") == "LATIN1"
        assert a.execute("SELECT 'é'").fetchone() == ("é",)
        # Set back before a's request, as if a had just sent it: the euro sign has no LATIN1
        # form, in binary results too.
        assert b.execute("SELECT 1").fetchone() == (1,)
        with pytest.raises(psycopg.DataError, match="no equivalent in encoding"):
            a.cursor(binary=True).execute("SELECT chr(%s)::text", [8364])
    with psycopg.connect(shared.dsn("one"), autocommit=True) as c:
        # A new client is told the startup settings, and gets them, on the same connection.
        assert c.info.encoding == "utf-8"
        assert c.execute("SELECT length('€')").fetchone() == (1,)


def test_search_path_follows_what_the_guard_resolved_names_with(guarded: WorkerProcess) -> None:
    """Without this, a client could SET search_path on one server connection, land on
    another with the default path, and read public.carried_secret by an unqualified name
    that the guard had resolved in its own schema."""
    with (
        psycopg.connect(guarded.dsn("one"), autocommit=True) as attacker,
        psycopg.connect(guarded.dsn("one"), autocommit=True) as other,
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            attacker.execute("SELECT k FROM carried_secret")  # public: the honeytoken
        attacker.execute("SET search_path TO carried")
        assert show(other, "search_path") == '"$user", public'  # not the attacker's
        other.execute("RESET search_path")
        # The guard let this through because carried.carried_secret is not protected; the
        # server must resolve it in the same schema, where no such table exists.
        with pytest.raises(psycopg.errors.UndefinedTable):
            attacker.execute("SELECT k FROM carried_secret")
        assert show(attacker, "search_path") == "carried"
