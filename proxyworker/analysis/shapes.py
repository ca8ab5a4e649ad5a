"""Statement shapes: finding a result again for a text that differs only in its constants.

Drivers and ORMs that interpolate values send a new text for every statement
(``... WHERE aid = 48213``). ``ShapeCache`` (``proxyworker/scan.py``; in C when built: a
lookup is one call) finds what was computed for an earlier text of the same shape in about the
time of one dict lookup, without parsing:

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
- Locating literals (``fixed_runs``) is one regex pass, done when a result is stored. It
  recognises plain string literals ('...', quotes doubled), numbers, and quoted identifiers
  (kept). Anything that could make its reading differ from the server's — comments, dollar
  quotes, prefixed strings (E'', B'', X'', N'', U&''), NUL — leaves a trace outside the
  literals it found, and the text is then stored for its exact text only.

Whether a result may stand for every text of its shape is the caller's decision
(``literal_invariant`` for analyses): it stores the result with the text's ``fixed_runs``, or
with None for the exact text only. Texts must be read with standard_conforming_strings on, as
every analysis assumes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from proxyworker.scan import ShapeCache

from .statement import StatementInfo, StatementKind

__all__ = ["ShapeCache", "fixed_runs", "literal_invariant"]

_DIGIT_FLAGS: Final = bytes(0xFF if 0x30 <= byte <= 0x39 else 0 for byte in range(256))
_NUL: Final = 0
_QUOTE: Final = 0x27
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
