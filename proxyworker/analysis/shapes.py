"""Statement shapes: finding a result again for a text that differs only in its constants.

Drivers and ORMs that interpolate values send a new text for every statement
(``... WHERE aid = 48213``). ``ShapeCache`` finds what was computed for an earlier text of the
same shape in about the time of one dict lookup, without parsing:

- The lookup key is a hash of the text's bytes between its runs of digits, each run counting
  only as being there (``scan.shape_hash``, in C), so ``aid = 7`` finds what was stored for
  ``aid = 123456``. What the key finds is compared with the text (below): texts of two shapes
  may share a key, and then the one stored last is the one found.
- A stored text remembers which of its runs of digits are *not* inside a literal (names such
  as ``t1``, parameters ``$1``, anything this module cannot place). A text found by the key
  is a hit only if those runs are equal (``scan.same_shape``, in C, compares the two texts run
  by run). A run is inside a literal or outside as a whole (a number is never next to a
  digit, a string ends at a quote), so the texts then lex into the same tokens but for
  literal values.
- Before any key is made, the text is compared with the one found right after the last text
  the last time it was found (a session repeats its sequence of statements: BEGIN, UPDATE,
  SELECT, ..., END), then with the one last found for a text of its length (modulo 64): a
  session mostly sends the same few statements with other values, and a comparison costs less
  than making the key and looking it up. Before even that, a text that is the very object
  found last (the session keeps an unchanged Parse message's text) is found without comparing.
- Locating literals is one regex pass, done when a result is stored. It recognises plain
  string literals ('...', quotes doubled), numbers, and quoted identifiers (kept). Anything
  that could make its reading differ from the server's — comments, dollar quotes, prefixed
  strings (E'', B'', X'', N'', U&''), NUL — leaves a trace outside the literals it found, and
  the text is then stored for its exact text only.

Whether a result may stand for every text of its shape is the caller's decision
(``literal_invariant`` for analyses); otherwise it is stored for the exact text. Texts must be
read with standard_conforming_strings on, as every analysis assumes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final, Generic, TypeVar

from proxyworker import scan
from proxyworker.scan import OTHER_SHAPE, SAME_SHAPE, SAME_TEXT

from .statement import StatementInfo, StatementKind

_T = TypeVar("_T")

MAX_SHAPED_TEXT: Final = 8192
"""Longer texts are not stored: they are rarely repeated and would pin memory."""

_DIGIT_FLAGS: Final = bytes(0xFF if 0x30 <= byte <= 0x39 else 0 for byte in range(256))
_NUL: Final = 0
_QUOTE: Final = 0x27
_RUN: Final = re.compile(rb"[0-9]+")
shape_hash: Final = scan.shape_hash
_RECENT: Final = 64
same_shape: Final = scan.same_shape

# Leftmost match wins, as in the server's lexer: a quoted identifier is consumed whole, a
# string with doubled quotes is one literal, a number must stand alone (neither neighbour could
# continue it: letters, digits, _, $, ., non-ASCII).
_LITERAL: Final = re.compile(
    rb'(?P<ident>"[^"]*")'
    rb"|'[^']*(?:''[^']*)*'"
    rb"|(?<![\w$.\x80-\xff])(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?![\w$.\x80-\xff])"
)
# Outside the literals found (strings as NUL): what the regex may not read as the server does.
_UNSAFE: Final = re.compile(rb"--|/\*|\$(?!\d)|[\w$&\x80-\xff]\x00")


def fixed_runs(raw: bytes) -> bytes | None:
    """Which runs of digits of ``raw`` are outside its literals: one byte per run, 0xFF for
    such a run (empty when there is none); None when the literals cannot be located safely.
    One regex pass: the literals found are blanked in a mask of the digits and replaced in
    the text that ``_UNSAFE`` reads (names stay, a string becomes NUL so a prefix letter
    before it shows, a number a space)."""
    if _NUL in raw:
        return None
    mask = bytearray(raw.translate(_DIGIT_FLAGS))
    outside: list[bytes] = []
    position = 0
    for found in _LITERAL.finditer(raw):
        start, end = found.span()
        outside.append(raw[position:start])
        if found.lastgroup == "ident":
            outside.append(raw[start:end])
        else:
            outside.append(b"\x00" if raw[start] == _QUOTE else b" ")
            mask[start:end] = bytes(end - start)
        position = end
    outside.append(raw[position:])
    if _UNSAFE.search(b"".join(outside)) is not None:
        return None
    if not any(mask):
        return b""
    return bytes(mask[run.start()] for run in _RUN.finditer(raw))


class _Entry(Generic[_T]):
    """What a key finds. (An object, not a tuple: compiled, reading a tuple's items checks
    and converts each one, and keeping one aside boxes it again.)"""

    __slots__ = ("fixed", "live", "next", "reference", "value")

    def __init__(self, value: _T, reference: bytes, fixed: bytes | None) -> None:
        self.value = value
        self.reference = reference
        """The text the value was stored for."""
        self.fixed = fixed
        """Its runs of digits outside literals (``fixed_runs``); None: only that text."""
        self.next: _Entry[_T] | None = None
        """The entry found after this one, the last time one was found after it."""
        self.live = True
        """False once cleared or replaced: another entry's ``next`` may still lead to it, and
        it must not be found then."""


class ShapeCache(Generic[_T]):
    """Values (never None) by text; a value stored as ``shaped`` is found again by any text
    of its shape. ``get`` also says whether the text found is the one stored; ``find``, for
    the hot path, says it in ``own`` instead of making a tuple; ``find_in`` finds a text where
    it lies inside a message."""

    __slots__ = ("_entries", "_last", "_last_raw", "_maxsize", "_recent", "own")

    def __init__(self, maxsize: int) -> None:
        self._entries: dict[int, _Entry[_T]] = {}
        self._maxsize = maxsize
        self._recent: list[_Entry[_T] | None] = [None] * _RECENT
        """The entry last stored or found for a text of each length (modulo ``_RECENT``),
        compared first: a session sends the same few statements with other values. (An entry
        since replaced stays until its slot is filled again: ``live`` tells.)"""
        self._last: _Entry[_T] | None = None
        """The entry last found or stored: its ``next`` is compared first of all."""
        self._last_raw: bytes | None = None
        """The text ``_last`` was last found for (that very object; None after a store, or
        when it was found inside a message): a text that is it compares as it did, and is
        found without comparing (a session's unchanged Parse message is one object, kept by
        the session)."""
        self.own = False
        """After ``find`` found a value: was it stored for that very text? (Set only when a
        value is found.)"""

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, raw: bytes) -> tuple[_T, bool] | None:
        value = self.find(raw)
        return None if value is None else (value, self.own)

    def find(self, raw: bytes) -> _T | None:
        return self.find_in(raw, 0, len(raw))

    def find_in(self, data: bytes, start: int, end: int) -> _T | None:
        """``find`` for the text ``data[start:end]`` (a statement's inside the message that
        carries it): compared where it lies, copied only to make its key."""
        whole = start == 0 and end == len(data)
        last = self._last
        if last is not None:
            if whole and data is self._last_raw and last.live:
                last.next = last  # (as if found by comparing: ``_follows``)
                return last.value  # (and ``own`` is still what it was then)
            entry = last.next
            if entry is not None and entry.live:
                match = same_shape(data, entry.reference, entry.fixed, start, end)
                if match != OTHER_SHAPE:
                    return self._found(entry, match, data if whole else None)
        length = end - start
        slot = length % _RECENT
        entry = self._recent[slot]
        if entry is not None and entry.live:  # (a slot may keep an entry since replaced)
            match = same_shape(data, entry.reference, entry.fixed, start, end)
            if match != OTHER_SHAPE:
                return self._found(entry, match, data if whole else None)
        if length > MAX_SHAPED_TEXT:
            return None
        raw = data if whole else data[start:end]
        entry = self._entries.get(shape_hash(raw))
        if entry is None:
            return None
        self._recent[slot] = entry
        return self._found(entry, same_shape(raw, entry.reference, entry.fixed), raw)

    def _found(self, entry: _Entry[_T], match: int, raw: bytes | None) -> _T | None:
        """What ``find`` returns for a text that compared with ``entry``'s as ``match``
        (``raw``: the text, when it is an object of its own)."""
        if match < SAME_SHAPE:  # (OTHER_SHAPE or FIXED_DIFFERS)
            return None
        self.own = match == SAME_TEXT
        self._follows(entry)
        self._last_raw = raw
        return entry.value

    def _follows(self, entry: _Entry[_T]) -> None:
        last = self._last
        if last is not None:
            last.next = entry
        self._last = entry

    def put(self, raw: bytes, value: _T, shaped: bool) -> None:
        if len(raw) > MAX_SHAPED_TEXT:
            return
        if len(self._entries) >= self._maxsize:
            self.clear()
        entry = _Entry(value, raw, fixed_runs(raw) if shaped else None)
        key = shape_hash(raw)
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
        self._recent = [None] * _RECENT
        self._last = self._last_raw = None


# Statement kinds whose effects depend on names and structure only, never on literal values.
_SHAPED: Final = frozenset(
    {
        StatementKind.SELECT,
        StatementKind.INSERT,
        StatementKind.UPDATE,
        StatementKind.DELETE,
        StatementKind.MERGE,
    }
)


def literal_invariant(statements: Sequence[StatementInfo]) -> bool:
    """May this analysis stand for every text of the same shape? Only a lone query or DML
    statement: no settings (SET, set_config take names and values from literals), no bodies
    (DO, function bodies are literals), no dynamic SQL."""
    if len(statements) != 1:
        return False
    info = statements[0]
    return info.kind in _SHAPED and not info.body and not info.settings and not info.dynamic_sql
