"""Byte scans of the relay's hot path: what they answer, in Python, and in C when built.

Compiled Python reads a byte at a time through a bounds-checked call, and the relay used to
walk a chunk once per question it asked of it (are these whole messages? of which kinds? what
does each request?). Each function here answers for a whole chunk in one call.
``proxyworker/_scan.c`` implements them for the worker (``make build``); the Python versions
below say exactly what they compute, run when the extension is not built, and are what the
tests hold the C to (``tests/test_scan.py``).
"""

from __future__ import annotations

import re
from typing import Final

__all__ = [
    "FIXED_DIFFERS",
    "OTHER_SHAPE",
    "SAME_SHAPE",
    "SAME_TEXT",
    "Frames",
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


def contains_any_py(data: bytes, chars: bytes) -> bool:
    """Whether any byte of ``chars`` occurs in ``data``."""
    return any(char in data for char in chars)


try:
    from proxyworker._scan import Frames, contains_any, same_shape, shape_hash
except ImportError:  # not built: the Python versions
    Frames = FramesPy  # type: ignore[assignment,misc]
    same_shape, shape_hash, contains_any = same_shape_py, shape_hash_py, contains_any_py
