"""The pool's idle connections of one key (``pool._Idle``): a stack over a list that keeps its
array, so its bookkeeping must hold however connections come and go."""

from __future__ import annotations

from proxyworker.config.loader import loads
from proxyworker.config.schema import parse_upstream
from proxyworker.upstream.connection import ServerConnection, pool_key
from proxyworker.upstream.pool import Pool, _Idle

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


def _pool() -> Pool:
    config = loads(
        '[listen]\nport = 1\n\n[[users]]\nname = "u"\npassword = "p"\n\n[[databases]]\n'
        'name = "app"\nupstream = "postgresql://app@127.0.0.1:5432/app"\n'
    )
    return Pool(config.databases[0])


def test_pools_never_share_idle_connections() -> None:
    one, other = _pool(), _pool()
    conn = ServerConnection(TARGET, "")  # (any key: the empty one too)
    one.release(conn)
    assert other.acquire_idle("") is None
    assert one.acquire_idle("") is conn


def test_the_pool_forgets_keys_left_without_idle_connections() -> None:
    """Each client with parameters of its own adds a key; housekeeping drops those with no
    connection idle, and a key used again afterwards still finds what it gives back."""
    pool = _pool()
    a, b = (ServerConnection(TARGET, pool_key({"application_name": name})) for name in "ab")
    for conn in (a, b):
        pool.release(conn)
    assert pool.acquire_idle(a.key) is a  # (a's key is the one used last now)
    pool.close_idle(older_than=3600)
    assert list(pool.idle) == [b.key]
    pool.release(a)  # (seen by housekeeping too, not only as the key used last)
    assert sorted(pool.idle) == sorted([a.key, b.key])
    assert pool.acquire_idle(a.key) is a
    assert pool.acquire_idle(b.key) is b
    pool.close_idle()
    assert pool.idle == {}
