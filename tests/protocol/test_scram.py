"""SCRAM-SHA-256, both ends, against RFC 7677's test vector and an independent client."""

from __future__ import annotations

import base64

import pytest
import scramp

from proxyworker.protocol.scram import (
    ScramClient,
    ScramError,
    ScramServer,
    make_verifier,
    md5_password,
    parse_verifier,
)

# RFC 7677 section 3: user "user", password "pencil".
RFC_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
RFC_CLIENT_FIRST_BARE = "n=user,r=rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_FIRST = (
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)
RFC_CLIENT_FINAL = (
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
RFC_SERVER_FINAL = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def rfc_server() -> ScramServer:
    server = ScramServer(make_verifier("pencil", salt=RFC_SALT))
    server.first(("n,," + RFC_CLIENT_FIRST_BARE).encode())
    # Pin the server nonce to the RFC's so the proof matches the published one.
    server._nonce = RFC_SERVER_FIRST.split(",")[0][2:]
    server._server_first = RFC_SERVER_FIRST
    return server


def test_it_verifies_the_rfc_7677_exchange() -> None:
    assert rfc_server().final(RFC_CLIENT_FINAL.encode()).decode() == RFC_SERVER_FINAL


def test_it_rejects_a_wrong_proof() -> None:
    bad = RFC_CLIENT_FINAL[:-5] + "AAAA="
    with pytest.raises(ScramError, match="password authentication failed"):
        rfc_server().final(bad.encode())


def test_it_rejects_a_replayed_nonce() -> None:
    server = ScramServer(make_verifier("pencil"))
    server.first(b"n,,n=,r=abc")
    with pytest.raises(ScramError, match="nonce does not match"):
        server.final(b"c=biws,r=abcXYZ,p=AAAA")


def test_it_refuses_channel_binding_it_did_not_offer() -> None:
    with pytest.raises(ScramError, match="channel binding"):
        ScramServer(make_verifier("x")).first(b"p=tls-server-end-point,,n=,r=abc")


def test_the_server_accepts_an_independent_client() -> None:
    server = ScramServer(make_verifier("s3cret"))
    client = scramp.ScramClient(["SCRAM-SHA-256"], "someone", "s3cret")
    first = server.first(client.get_client_first().encode())
    client.set_server_first(first.decode())
    final = server.final(client.get_client_final().encode())
    client.set_server_final(final.decode())  # raises if the server's signature is wrong


def test_the_client_produces_the_rfc_7677_exchange() -> None:
    client = ScramClient("pencil", user="user", nonce="rOprNGfwEbeRWgbNEkqO")
    assert client.first().decode() == "n,," + RFC_CLIENT_FIRST_BARE
    assert client.final(RFC_SERVER_FIRST.encode()).decode() == RFC_CLIENT_FINAL
    client.verify(RFC_SERVER_FINAL.encode())
    with pytest.raises(ScramError, match="server signature does not match"):
        client.verify(b"v=" + base64.b64encode(b"x" * 32))


def test_the_client_detects_a_server_that_does_not_know_the_password() -> None:
    client = ScramClient("s3cret")
    impostor = ScramServer(make_verifier("other"))
    server_first = impostor.first(client.first())
    with pytest.raises(ScramError):
        impostor.final(client.final(server_first))


def test_verifiers_round_trip_in_the_servers_format() -> None:
    verifier = make_verifier("pw", salt=b"0123456789abcdef")
    text = str(verifier)
    assert text.startswith("SCRAM-SHA-256$4096:MDEyMzQ1Njc4OWFiY2RlZg==$")
    assert parse_verifier(text) == verifier
    with pytest.raises(ValueError, match="not a SCRAM-SHA-256 verifier"):
        parse_verifier("md5abc")


def test_md5_matches_the_servers_formula() -> None:
    # md5(md5("secret" + "alice") + salt), as libpq computes it.
    assert md5_password("alice", "secret", b"\x01\x02\x03\x04") == (
        b"md598a0412b9c31436fc53776e863350083\x00"
    )
