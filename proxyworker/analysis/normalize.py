"""Statement text for audit and grouping: fingerprints, normalized text, nested statement text.

Normalized text is what may be logged and shown, so it must never carry a data value: every
literal the server's scanner sees (strings of every quoting style, numbers, bit strings)
becomes a $n placeholder, and comments, which can carry anything, are dropped. It is built from
pglast's scanner rather than the parse tree because literals also hide where the tree keeps
plain strings (PASSWORD 'x', DO bodies, COPY file names). A hand-written regex lexer was tried
for speed and measured no faster than the scanner, so the scanner, which is exact, stays.
"""

from __future__ import annotations

from pglast.parser import Token, scan
from pglast.parser import fingerprint as _pglast_fingerprint

_LITERALS = frozenset({"SCONST", "USCONST", "ICONST", "FCONST", "BCONST", "XCONST"})
_COMMENTS = frozenset({"C_COMMENT", "SQL_COMMENT"})
_OPEN_PAREN = "ASCII_40"
_CLOSE_PAREN = "ASCII_41"
_EXPLAIN_OPTIONS = frozenset({"ANALYZE", "ANALYSE", "VERBOSE"})


def fingerprint(text: str) -> str:
    return str(_pglast_fingerprint(text))


def normalize(text: str) -> str:
    """`text` with literals replaced by $n, comments removed and whitespace runs collapsed.

    Placeholders are numbered after the highest $n already present, as pg_stat_statements does,
    so a normalized statement never reuses a client's parameter number. A minus sign stays
    outside the placeholder (-$1): telling unary from binary minus needs the grammar.
    """
    tokens = scan(text)
    next_param = 1
    if "$" in text:
        for start, end, name, _ in tokens:
            if name == "PARAM" and text[start + 1 : end + 1].isdigit():
                next_param = max(next_param, int(text[start + 1 : end + 1]) + 1)
    out: list[str] = []
    position = 0
    # Tokens unpack faster than their attributes read: this loop is on the uncached path.
    for start, end, name, _ in tokens:
        if name in _COMMENTS:
            continue
        if start > position and out:
            out.append(" ")
        if name in _LITERALS:
            out.append(f"${next_param}")
            next_param += 1
        else:
            out.append(text[start : end + 1])
        position = end + 1
    return "".join(out)


def inner_statement_text(text: str, wrapper: str) -> str:
    """The text of the statement EXPLAIN, PREPARE or DECLARE wraps; "" if it cannot be found.

    The parse tree keeps no location for the start of the wrapped statement, so the wrapper's
    own syntax is skipped token by token: EXPLAIN's options, PREPARE's `name (types) AS`,
    DECLARE's `name ... CURSOR ... FOR`.
    """
    if not text:
        return ""
    tokens = [token for token in scan(text) if token.name not in _COMMENTS]
    index = None
    if wrapper == "EXPLAIN":
        index = 1
        if index < len(tokens) and tokens[index].name == _OPEN_PAREN:
            index = _after_parens(tokens, index)
        while index < len(tokens) and tokens[index].name in _EXPLAIN_OPTIONS:
            index += 1
    elif wrapper in ("PREPARE", "DECLARE"):
        keyword = "AS" if wrapper == "PREPARE" else "FOR"
        depth = 0
        for position, token in enumerate(tokens):
            if token.name == _OPEN_PAREN:
                depth += 1
            elif token.name == _CLOSE_PAREN:
                depth -= 1
            elif depth == 0 and token.name == keyword:
                index = position + 1
                break
    if index is None or index >= len(tokens):
        return ""
    return text[tokens[index].start :].strip()


def _after_parens(tokens: list[Token], index: int) -> int:
    depth = 0
    for position in range(index, len(tokens)):
        name = tokens[position].name
        if name == _OPEN_PAREN:
            depth += 1
        elif name == _CLOSE_PAREN:
            depth -= 1
            if depth == 0:
                return position + 1
    return len(tokens)
