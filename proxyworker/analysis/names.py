"""Identifier rules of the PostgreSQL server, for names that do not come out of the parser.

The parser already folds, de-escapes and truncates identifiers in statements. What it does not
see are names carried inside string values: a search_path set with set_config(), a GUC name,
a function name a policy file mentions. These helpers apply the server's rules to those, so a
name compares equal to the server's idea of it. They must never consult a catalog: which
schema actually holds a relation is the catalog cache's business.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from pglast.keywords import COL_NAME_KEYWORDS, RESERVED_KEYWORDS, TYPE_FUNC_NAME_KEYWORDS

from .statement import RelationRef

NAMEDATALEN = 64
_MAX_IDENTIFIER_BYTES = NAMEDATALEN - 1
# A character is at most 4 UTF-8 bytes, so shorter strings never need the byte count.
_ALWAYS_FITS = _MAX_IDENTIFIER_BYTES // 4

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_SAFE_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")
_NEEDS_QUOTES = frozenset(RESERVED_KEYWORDS | COL_NAME_KEYWORDS | TYPE_FUNC_NAME_KEYWORDS)
# scanner_isspace() in the server: the whitespace SplitIdentifierString skips.
_SPACE = " \t\n\r\f\v"


def truncate_identifier(name: str) -> str:
    """Cut `name` to NAMEDATALEN-1 bytes of UTF-8 without splitting a character."""
    if len(name) <= _ALWAYS_FITS:
        return name
    raw = name.encode("utf-8", "surrogatepass")
    if len(raw) <= _MAX_IDENTIFIER_BYTES:
        return name
    return raw[:_MAX_IDENTIFIER_BYTES].decode("utf-8", "ignore")


def ascii_lower(text: str) -> str:
    """Lower-case ASCII letters only, as the server does for identifiers in UTF-8 databases."""
    return text.translate(_ASCII_LOWER)


def quote_identifier(name: str) -> str:
    """The server's quote_identifier(): quotes unless the name reads back unchanged bare."""
    if _SAFE_IDENTIFIER.fullmatch(name) and name not in _NEEDS_QUOTES:
        return name
    return '"' + name.replace('"', '""') + '"'


def qualified_name(parts: Iterable[str]) -> str:
    """Join name parts with dots, quoting a part only where a dot or quote would be ambiguous.

    Parts are not case-folded here: "Upper"() is a different function from upper(), and
    reporting both as `upper` would let a user-defined function pass for a built-in.
    """
    return ".".join(
        part
        if part and "." not in part and '"' not in part
        else '"' + part.replace('"', '""') + '"'
        for part in parts
    )


def relation_from_parts(parts: Sequence[str]) -> RelationRef | None:
    """RelationRef for a dotted name list as DROP TABLE and friends carry it."""
    if not parts or len(parts) > 3:
        return None
    name = truncate_identifier(parts[-1])
    schema = truncate_identifier(parts[-2]) if len(parts) > 1 else None
    return RelationRef(schema, name)


def split_identifier_list(value: str) -> tuple[str, ...]:
    """Parse a list-of-identifiers setting such as search_path, as SplitIdentifierString does.

    Unquoted names are ASCII-lower-cased, quoted names keep their case and may contain commas
    and spaces, both are truncated to 63 bytes. Raises ValueError where the server would
    reject the value.
    """
    names: list[str] = []
    pos, end = 0, len(value)
    while pos < end and value[pos] in _SPACE:
        pos += 1
    if pos == end:
        return ()
    while True:
        if value[pos] == '"':
            chunks: list[str] = []
            pos += 1
            while True:
                close = value.find('"', pos)
                if close < 0:
                    raise ValueError(f"unterminated quoted name in {value!r}")
                chunks.append(value[pos:close])
                pos = close + 1
                if pos < end and value[pos] == '"':
                    chunks.append('"')
                    pos += 1
                    continue
                break
            name = "".join(chunks)
            if not name:
                raise ValueError(f"empty quoted name in {value!r}")
        else:
            start = pos
            while pos < end and value[pos] != "," and value[pos] not in _SPACE:
                pos += 1
            if pos == start:
                raise ValueError(f"empty name in {value!r}")
            name = ascii_lower(value[start:pos])
        names.append(truncate_identifier(name))
        while pos < end and value[pos] in _SPACE:
            pos += 1
        if pos == end:
            return tuple(names)
        if value[pos] != ",":
            raise ValueError(f"expected a comma after {names[-1]!r} in {value!r}")
        pos += 1
        while pos < end and value[pos] in _SPACE:
            pos += 1
        if pos == end:
            raise ValueError(f"empty name at the end of {value!r}")


def relation_search_order(
    search_path: Sequence[str], *, user: str | None = None, temp_schema: bool = True
) -> tuple[str, ...]:
    """Schemas the server tries, in order, for an unqualified relation name.

    `search_path` is the parsed setting (see split_identifier_list). The session's temporary
    schema (reported as "pg_temp") and pg_catalog are searched first unless the path names
    them; "$user" stands for `user`. Whether each schema exists is for the catalog to decide.
    This order is for relations only: functions never look in pg_temp implicitly.
    """
    explicit: list[str] = []
    for entry in search_path:
        if entry == "$user":
            if user is None:
                continue
            entry = user
        if entry not in explicit:
            explicit.append(entry)
    implicit: list[str] = []
    if temp_schema and "pg_temp" not in explicit:
        implicit.append("pg_temp")
    if "pg_catalog" not in explicit:
        implicit.append("pg_catalog")
    return (*implicit, *explicit)
