"""Lists the relay keeps instead of making new ones for every request.

A list allocates its array on its first append and frees it when it is emptied (``clear()``,
``pop()`` of the last item): a list made per chunk, or a queue that empties after every
request, costs an allocation and a free each time — several per transaction on the relay's
hot path, more than the rest of the bookkeeping of a forwarded chunk. These keep their arrays.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final, Generic, TypeVar

T = TypeVar("T")

_COMPACT_AT: Final = 64
"""Items taken from the front of a ``Fifo`` before its list is compacted."""


def put(items: list[T], index: int, item: T) -> None:
    """``items[index] = item`` for a list reused as scratch space (``index`` is at most its
    length): it grows as needed and never shrinks; what lies past the part in use is stale."""
    if index < len(items):
        items[index] = item
    else:
        items.append(item)


class Fifo(Generic[T]):
    """A first-in first-out queue on a list with a moving head: the front is
    ``_items[_head]``. Taking from the front only moves the head; the list is compacted once
    ``_COMPACT_AT`` items were taken, so it keeps its array while requests come and go. (A
    ``deque`` keeps its blocks too, but compiled code calls its methods by name.)"""

    __slots__ = ("_head", "_items")

    def __init__(self) -> None:
        self._items: list[T] = []
        self._head = 0

    def __len__(self) -> int:
        return len(self._items) - self._head

    def __bool__(self) -> bool:
        return len(self._items) > self._head

    def __getitem__(self, index: int) -> T:
        """The item ``index`` places from the front (from the back when negative)."""
        if index < 0:
            if -index > len(self._items) - self._head:
                raise IndexError(index)
            return self._items[index]
        return self._items[self._head + index]

    def __iter__(self) -> Iterator[T]:
        return iter(self._items[self._head :])

    def append(self, item: T) -> None:
        self._items.append(item)

    def popleft(self) -> T:
        """Take the front item; IndexError when empty."""
        items = self._items
        head = self._head
        item = items[head]
        head += 1
        if head >= _COMPACT_AT:
            del items[:head]
            head = 0
        self._head = head
        return item

    def clear(self) -> None:
        self._items.clear()
        self._head = 0
