"""Statement shapes: finding a result again for a text that differs only in its constants.

Drivers and ORMs that interpolate values send a new text for every statement
(``... WHERE aid = 48213``). ``ShapeCache`` finds what was computed for an earlier text of the
same shape in about the time of one dict lookup, without parsing:

- The lookup key is the text with every digit turned into ``0`` (``bytes.translate``, in C).
  Texts with the same key have the same bytes everywhere but at digit positions.
- A stored text remembers which of its digits are *not* inside a literal (names such as
  ``t1``, parameters ``$1``, anything this module cannot place). A text found by the key is a
  hit only if it has the same digits there. The texts then differ only in digits inside
  literals, so the server lexes both into the same tokens but for those literals' values.
- When that key finds nothing, a second one collapses every run of digits into one ``0`` (a
  regex substitution, ~10 times the cost of ``translate``), so ``aid = 7`` finds what was
  stored for ``aid = 123456``. Texts with the same second key have the same bytes between
  their runs of digits; a hit needs the runs outside literals to be equal. A run is inside a
  literal or outside as a whole (a number is never next to a digit, a string ends at a
  quote), so the texts again lex into the same tokens but for literal values. The text found
  this way is then stored under its first key, so the next text of its length costs one
  lookup; which of its digits are outside literals follows from the stored text's runs,
  without reading its literals again.
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

from .statement import StatementInfo, StatementKind

_T = TypeVar("_T")

MAX_SHAPED_TEXT: Final = 8192
"""Longer texts are not stored: they are rarely repeated and would pin memory."""

_ZEROS: Final = bytes.maketrans(b"0123456789", b"0000000000")
_DIGIT_FLAGS: Final = bytes(0xFF if 0x30 <= byte <= 0x39 else 0 for byte in range(256))
_FIXED_RUN: Final = b"\xff" * MAX_SHAPED_TEXT
_NUL: Final = 0
_QUOTE: Final = 0x27
_EXACT: Final = -1
"""A stored text that only the same text finds."""
_RUN: Final = re.compile(rb"[0-9]+")

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


def fixed_digits(raw: bytes) -> int | None:
    """A mask (one 0xFF byte per position, big-endian like ``int.from_bytes``) of the digits
    of ``raw`` outside its literals; None when the literals cannot be located safely. One
    regex pass: the literals found are blanked in the mask and replaced in the text that
    ``_UNSAFE`` reads (names stay, a string becomes NUL so a prefix letter before it shows,
    a number a space)."""
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
    return int.from_bytes(mask, "big")


class _Entry(Generic[_T]):
    """What a first key finds. (An object, not a tuple: compiled, reading a tuple's items
    checks and converts each one, and keeping one aside boxes it again.)"""

    __slots__ = ("fixed", "own", "reference", "value")

    def __init__(self, value: _T, reference: bytes, fixed: int, own: bool) -> None:
        self.value = value
        self.reference = reference
        """A text of that key."""
        self.fixed = fixed
        """Mask of its digits outside literals (``fixed_digits``); _EXACT: only that text."""
        self.own = own
        """Was the value made for that very text?"""

    def finds(self, raw: bytes) -> bool | None:
        """Whether ``raw`` (a text of this entry's key) finds the value: None if not, else
        whether the value was made for ``raw`` itself."""
        reference, fixed = self.reference, self.fixed
        if raw == reference:
            return self.own
        if fixed == 0 or (
            fixed > 0
            and not (int.from_bytes(raw, "big") ^ int.from_bytes(reference, "big")) & fixed
        ):
            return False
        return None


class ShapeCache(Generic[_T]):
    """Values (never None) by text; a value stored as ``shaped`` is found again by any text
    of its shape. ``get`` also says whether the text found is the one stored; ``find``, for
    the hot path, says it in ``own`` instead of making a tuple."""

    __slots__ = (
        "_by_runs",
        "_entries",
        "_last_entry",
        "_last_key",
        "_last_raw",
        "_maxsize",
        "own",
    )

    def __init__(self, maxsize: int) -> None:
        self._entries: dict[bytes, _Entry[_T]] = {}
        # Second key -> (value, the text stored, its runs of digits outside literals by index).
        self._by_runs: dict[bytes, tuple[_T, bytes, tuple[tuple[int, bytes], ...]]] = {}
        self._maxsize = maxsize
        # The last key found with its entry, and the last text that entry found (``own`` is
        # still that text's): a session mostly sends what it sent last (a Parse of the same
        # text; the same statement with other values), and comparing bytes costs less than
        # hashing them for the dict.
        self._last_key = b""
        self._last_entry: _Entry[_T] | None = None
        self._last_raw: bytes | None = None
        self.own = False
        """After ``find`` found a value: was it made for that very text? (Set only when a
        value is found.)"""

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, raw: bytes) -> tuple[_T, bool] | None:
        value = self.find(raw)
        return None if value is None else (value, self.own)

    def find(self, raw: bytes) -> _T | None:
        entry = self._last_entry
        if entry is not None and raw == self._last_raw:
            return entry.value
        key = raw.translate(_ZEROS)
        if entry is None or key != self._last_key:
            entry = self._entries.get(key)
            if entry is None:
                return self._by_run_key(raw, key)
            self._last_key, self._last_entry, self._last_raw = key, entry, None
        own = entry.finds(raw)
        if own is None:
            return None
        self._last_raw, self.own = raw, own
        return entry.value

    def _by_run_key(self, raw: bytes, key: bytes) -> _T | None:
        """``find`` when the first key found nothing."""
        if not self._by_runs or len(raw) > MAX_SHAPED_TEXT:
            return None
        found = self._by_runs.get(_RUN.sub(b"0", raw))
        if found is None:
            return None
        value, _, fixed_runs = found
        # Its digits outside literals are its runs where the stored text's are: the texts
        # lex alike. (What fixed_digits would find, without reading the literals again.)
        mask = 0
        if fixed_runs:
            runs = list(_RUN.finditer(raw))
            flags = bytearray(len(raw))
            for index, digits in fixed_runs:
                run = runs[index]
                if run[0] != digits:
                    return None
                start, end = run.span()
                flags[start:end] = _FIXED_RUN[: end - start]
            mask = int.from_bytes(flags, "big")
        self._store(key, _Entry(value, raw, mask, False))
        self.own = False
        return value

    def put(self, raw: bytes, value: _T, shaped: bool) -> None:
        if len(raw) > MAX_SHAPED_TEXT:
            return
        fixed = fixed_digits(raw) if shaped else None
        entry = _Entry(value, raw, _EXACT if fixed is None else fixed, True)
        self._store(raw.translate(_ZEROS), entry)
        if fixed is not None:
            last = len(raw) - 1
            runs = tuple(
                (index, run[0])
                for index, run in enumerate(_RUN.finditer(raw))
                if fixed >> (8 * (last - run.start())) & 0xFF
            )
            self._by_runs[_RUN.sub(b"0", raw)] = (value, raw, runs)

    def _store(self, key: bytes, entry: _Entry[_T]) -> None:
        if len(self._entries) >= self._maxsize:
            self.clear()
        self._entries[key] = entry
        self._last_entry = self._last_raw = None  # (the key may have had another entry)

    def clear(self) -> None:
        self._entries.clear()
        self._by_runs.clear()
        self._last_entry = self._last_raw = None


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
