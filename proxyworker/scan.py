"""Byte scans of the relay's hot path: what they answer, in Python, and in C when built.

Compiled Python reads a byte at a time through a bounds-checked call, and the relay used to
walk a chunk once per question it asked of it (are these whole messages? of which kinds? what
does each request?). Each function here answers for a whole chunk in one call; ``ShapeCache``
finds a statement text's remembered result in one call, comparing the text where it lies.
``proxyworker/_scan.c`` implements them for the worker (``make build``); the Python versions
below say exactly what they compute, run when the extension is not built, and are what the
tests hold the C to (``tests/test_scan.py``, ``tests/analysis/test_shapes.py``).
"""

from __future__ import annotations

import re
from typing import Final, Generic, TypeVar

__all__ = [
    "FIXED_DIFFERS",
    "OTHER_SHAPE",
    "SAME_SHAPE",
    "SAME_TEXT",
    "Frames",
    "ShapeCache",
    "contains_any",
    "same_shape",
    "shape_hash",
]

OTHER_SHAPE: Final = -1
"""``same_shape``: the texts differ other than in their runs of digits."""
FIXED_DIFFERS: Final = 0
"""``same_shape``: the texts differ only in runs of digits, and a fixed one is among them."""
SAME_SHAPE: Final = 1
"""``same_shape``: the texts differ only in runs of digits, none of them fixed."""
SAME_TEXT: Final = 2
"""``same_shape``: the texts are equal."""

_RUNS = re.compile(rb"([0-9]+)")
_T = TypeVar("_T")


class FramesPy:
    """``Frames(limit, shortest)``, called with a chunk: when ``data`` is made of whole
    protocol messages (kind byte, 4-byte big-endian length counting itself, body), each
    declaring a length from 4 to ``limit`` and being at least ``shortest[kind]`` bytes long (0:
    a kind not accepted), the last one ending where ``data`` ends, two bytes per message: its
    kind and the first byte of its body (0 for an empty body). None for any other chunk. (An
    object made once per connection, so the C version converts its limit and table once.)"""

    __slots__ = ("_limit", "_shortest")

    def __init__(self, limit: int, shortest: bytes) -> None:
        if len(shortest) != 256:
            raise ValueError("Frames() argument 'shortest' must be 256 bytes")
        self._limit = limit
        self._shortest = bytes(shortest)

    def __call__(self, data: bytes) -> bytes | None:
        out = bytearray()
        pos = 0
        n = len(data)
        while pos < n:
            if n - pos < 5:
                return None
            kind = data[pos]
            length = int.from_bytes(data[pos + 1 : pos + 5], "big")
            least = self._shortest[kind]
            if not least or length < 4 or length > self._limit or 1 + length < least:
                return None
            out += bytes((kind, data[pos + 5] if length > 4 and pos + 5 < n else 0))
            pos += 1 + length
        return bytes(out) if pos == n else None


_MASK: Final = (1 << 64) - 1
_HASH_START: Final = 0xCBF29CE484222325
_HASH_PRIME: Final = 0x9E3779B97F4A7C15
_SEGMENT_END: Final = 1 << 63


def _mix(h: int, word: int) -> int:
    h = ((h ^ word) * _HASH_PRIME) & _MASK
    return h ^ (h >> 29)


def shape_hash_py(raw: bytes) -> int:
    """A 64-bit hash of ``raw``'s shape: its bytes between runs of ASCII digits, each run
    counting only as being there. Texts of one shape (``same_shape`` does not answer
    ``OTHER_SHAPE``) have the same hash; texts of two shapes may too, rarely, so what the hash
    finds is compared before it is used. Each stretch between runs is mixed in as 8-byte
    little-endian words (the last one padded with zeros) and then its length; the result
    goes through a final avalanche. Not a defence against texts made to collide: those only
    make a cache miss."""
    h = _HASH_START
    for segment in _RUNS.split(raw)[0::2]:
        for at in range(0, len(segment), 8):
            h = _mix(h, int.from_bytes(segment[at : at + 8], "little"))
        h = _mix(h, _SEGMENT_END | len(segment))
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & _MASK
    return h ^ (h >> 33)


def same_shape_py(
    raw: bytes, reference: bytes, fixed: bytes | None, start: int = 0, end: int | None = None
) -> int:
    """How ``raw`` compares with ``reference``, run of digits by run of digits: ``SAME_TEXT``;
    ``SAME_SHAPE`` when they differ only in runs of digits (where both have one) that are not
    fixed; ``FIXED_DIFFERS`` when they differ only in runs of digits but a fixed one is among
    them; else ``OTHER_SHAPE``. Run ``k`` of ``reference`` is fixed when ``fixed[k]`` is not
    0 (runs past the end of ``fixed`` are not; None: every run is). With ``start`` and
    ``end``, the text compared is ``raw[start:end]`` (a statement's text inside a message,
    not copied out of it), within ``raw``."""
    end = len(raw) if end is None else end
    if not 0 <= start <= end <= len(raw):
        raise ValueError(f"same_shape(): {start}:{end} is not within {len(raw)} bytes")
    raw = raw[start:end]
    ours, theirs = _RUNS.split(raw), _RUNS.split(reference)  # text, run, text, ... text
    if len(ours) != len(theirs) or ours[0::2] != theirs[0::2]:
        return OTHER_SHAPE
    if raw == reference:
        return SAME_TEXT
    for index, (run, other) in enumerate(zip(ours[1::2], theirs[1::2], strict=True)):
        if run != other and (fixed is None or (index < len(fixed) and fixed[index])):
            return FIXED_DIFFERS
    return SAME_SHAPE


MAX_SHAPED_TEXT: Final = 8192
"""``ShapeCache``: longer texts are not stored (rarely repeated, they would pin memory)."""
_RECENT: Final = 64


class _Entry(Generic[_T]):
    """What a key finds."""

    __slots__ = ("elsewhere", "fixed", "live", "next", "reference", "value")

    def __init__(self, value: _T, elsewhere: _T, reference: bytes, fixed: bytes | None) -> None:
        self.value = value
        """Found for the text stored."""
        self.elsewhere = elsewhere
        """Found for other texts of its shape."""
        self.reference = reference
        """The text the value was stored for."""
        self.fixed = fixed
        """Its runs of digits outside literals; None: only that text."""
        self.next: _Entry[_T] | None = None
        """The entry found after this one, the last time one was found after it."""
        self.live = True
        """False once cleared or replaced: another entry's ``next`` or a slot of ``recent``
        may still lead to it, and it must not be found then."""


class ShapeCachePy(Generic[_T]):
    """``ShapeCache(maxsize)``: values (never None) by text, each found again by the text
    stored and — unless stored for that text only — by any text of its shape (``same_shape``
    does not answer ``OTHER_SHAPE`` or ``FIXED_DIFFERS``). ``proxyworker/analysis/shapes.py``
    says what it is for and how texts are found.

    - ``put(raw, value, fixed[, elsewhere])`` stores ``value`` for ``raw``, and ``elsewhere``
      (None or left out: ``value``) for the other texts of its shape; ``fixed`` marks the
      runs of digits that must be equal (``shapes.fixed_runs``), None stores it for ``raw``
      only. Texts over ``MAX_SHAPED_TEXT`` bytes are not stored; after ``maxsize`` values
      stored, storing one more first clears the cache (values replaced count until then).
    - ``find(raw)`` returns the value found, or None; ``own`` then says whether it was stored
      for that very text. ``find_in(data, start, end)`` finds the text ``data[start:end]``
      where it lies inside a message, ``find_query(data)`` the text of the Query message
      ``data`` starts with (its bounds read from its length: one call for the simple
      protocol's request); ``get(raw)`` returns ``(value, own)`` or None.
    - ``_put_under``, ``_forget_order``, ``_forget_keys``: for tests (a key given, as if
      another text's hash collided; what the lookups keep forgotten).
    """

    __slots__ = ("_entries", "_last", "_last_raw", "_maxsize", "_recent", "_stored", "own")

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("ShapeCache() argument 'maxsize' must be at least 1")
        self._entries: dict[int, _Entry[_T]] = {}
        self._maxsize = maxsize
        self._stored = 0
        """Values stored since the cache was last cleared."""
        self._recent: list[_Entry[_T] | None] = [None] * _RECENT
        """The entry last stored or found for a text of each length (modulo ``_RECENT``),
        compared before the key is made: a session sends the same few statements with other
        values."""
        self._last: _Entry[_T] | None = None
        """The entry last found or stored: its ``next`` is compared first of all (a session
        repeats its sequence of statements)."""
        self._last_raw: bytes | None = None
        """The text ``_last`` was last found for (that very object; None after a store, or
        when it was found inside a message): a text that is it compares as it did, and is
        found without comparing (a session keeps an unchanged Parse message's text)."""
        self.own = False

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, raw: bytes) -> tuple[_T, bool] | None:
        value = self.find(raw)
        return None if value is None else (value, self.own)

    def find(self, raw: bytes) -> _T | None:
        return self.find_in(raw, 0, len(raw))

    def find_query(self, data: bytes) -> _T | None:
        length = int.from_bytes(data[1:5], "big") if len(data) >= 6 else 0
        if data[:1] != b"Q" or not 5 <= length < len(data) or data[length] != 0:
            raise ValueError("find_query(): data does not start with a whole Query message")
        return self.find_in(data, 5, length)

    def find_in(self, data: bytes, start: int, end: int) -> _T | None:
        if not 0 <= start <= end <= len(data):
            raise ValueError(f"find_in(): {start}:{end} is not within {len(data)} bytes")
        whole = data if start == 0 and end == len(data) else None
        last = self._last
        if last is not None:
            # (Storing or clearing forgets ``_last_raw``: ``last`` is live when it is set.)
            if whole is not None and whole is self._last_raw:
                last.next = last  # (as if found by comparing: ``_follows``)
                return last.value if self.own else last.elsewhere
            entry = last.next
            if entry is not None and entry.live:
                match = same_shape_py(data, entry.reference, entry.fixed, start, end)
                if match != OTHER_SHAPE:
                    return self._found(entry, match, whole)
        length = end - start
        slot = length % _RECENT
        entry = self._recent[slot]
        if entry is not None and entry.live:
            match = same_shape_py(data, entry.reference, entry.fixed, start, end)
            if match != OTHER_SHAPE:
                return self._found(entry, match, whole)
        if length > MAX_SHAPED_TEXT:
            return None
        entry = self._entries.get(shape_hash_py(data[start:end]))
        if entry is None:
            return None
        self._recent[slot] = entry
        match = same_shape_py(data, entry.reference, entry.fixed, start, end)
        return self._found(entry, match, whole)

    def _found(self, entry: _Entry[_T], match: int, raw: bytes | None) -> _T | None:
        if match < SAME_SHAPE:  # (OTHER_SHAPE or FIXED_DIFFERS)
            return None
        self.own = match == SAME_TEXT
        self._follows(entry)
        self._last_raw = raw
        return entry.value if self.own else entry.elsewhere

    def _follows(self, entry: _Entry[_T]) -> None:
        last = self._last
        if last is not None:
            last.next = entry
        self._last = entry

    def put(
        self,
        raw: bytes,
        value: _T,
        fixed: bytes | None,
        elsewhere: _T | None = None,
    ) -> None:
        self._put_under(shape_hash_py(raw), raw, value, fixed, elsewhere)

    def _put_under(
        self,
        key: int,
        raw: bytes,
        value: _T,
        fixed: bytes | None,
        elsewhere: _T | None = None,
    ) -> None:
        if value is None:
            raise ValueError("put(): a value may not be None")
        if len(raw) > MAX_SHAPED_TEXT:
            return
        if self._stored >= self._maxsize:
            self.clear()
        self._stored += 1
        entry = _Entry(value, value if elsewhere is None else elsewhere, raw, fixed)
        replaced = self._entries.get(key)
        if replaced is not None:  # (never found again: recent slots and ``next`` may keep it)
            replaced.live, replaced.next = False, None
        self._entries[key] = entry
        self._recent[len(raw) % _RECENT] = entry
        self._follows(entry)  # (stored after a find missed it: as if found)
        self._last_raw = None

    def clear(self) -> None:
        for entry in self._entries.values():
            entry.live, entry.next = False, None  # (no cycles left for the collector)
        self._entries.clear()
        self._stored = 0
        self._forget_order()

    def _forget_order(self) -> None:
        self._recent = [None] * _RECENT
        self._last = self._last_raw = None

    def _forget_keys(self) -> None:
        self._entries = {}
        self._recent = [None] * _RECENT


def contains_any_py(data: bytes, chars: bytes) -> bool:
    """Whether any byte of ``chars`` occurs in ``data``."""
    return any(char in data for char in chars)


try:
    from proxyworker._scan import Frames, ShapeCache, contains_any, same_shape, shape_hash
except ImportError:  # not built: the Python versions
    Frames = FramesPy  # type: ignore[assignment,misc]
    ShapeCache = ShapeCachePy  # type: ignore[assignment,misc]
    same_shape, shape_hash, contains_any = same_shape_py, shape_hash_py, contains_any_py
