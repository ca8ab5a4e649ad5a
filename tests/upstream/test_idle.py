"""The pool's idle connections of one key (``pool._Idle``): a stack over a list that keeps its
array, so its bookkeeping must hold however connections come and go."""

from __future__ import annotations

from proxyworker.config.schema import parse_upstream
from proxyworker.upstream.connection import ServerConnection
from proxyworker.upstream.pool import _Idle

TARGET = parse_upstream("postgresql://app@127.0.0.1:5432/app")


def _conns(count: int) -> list[ServerConnection]:
    return [ServerConnection(TARGET, "key") for _ in range(count)]


def test_the_connection_given_back_last_is_taken_first() -> None:
    idle = _Idle("key")
    a, b, c = _conns(3)
    for conn in (a, b, c):
        idle.push(conn)
    assert [idle.pop(), idle.pop()] == [c, b]
    idle.push(c)
    assert [idle.pop(), idle.pop(), idle.pop()] == [c, a, None]
    assert idle.count == 0
    assert idle.conns == [None, None, None]  # (the array kept, holding no connection)


def test_the_oldest_is_the_one_evicted() -> None:
    idle = _Idle("key")
    a, b, c = _conns(3)
    for conn in (a, b, c):
        idle.push(conn)
    assert idle.pop() == c  # (a stale slot now)
    assert idle.pop_oldest() == a
    assert idle.count == 1
    idle.push(a)
    assert [idle.pop(), idle.pop(), idle.pop_oldest()] == [a, b, None]


def test_keep_drops_the_unwanted_and_keeps_the_order_of_the_rest() -> None:
    idle = _Idle("key")
    conns = _conns(5)
    for conn in conns:
        idle.push(conn)
    dropped = idle.keep(lambda conn: conns.index(conn) % 2 == 0)
    assert dropped == [conns[1], conns[3]]
    assert idle.count == 3
    assert idle.conns == [conns[0], conns[2], conns[4], None, None]
    assert idle.keep(lambda conn: False) == [conns[0], conns[2], conns[4]]
    assert idle.pop() is None
