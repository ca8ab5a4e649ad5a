"""Table patterns as written in the policy: ``name``, ``schema.name``, globs (``sensitive_*``)
and regular expressions (``re:^audit_.*$``).

An unqualified pattern matches the table name in any schema. A qualified pattern (one with a
dot) matches ``schema.name``; for a reference the statement did not qualify, every schema the
server could resolve it to (the session's search path) is tried — erring towards a match.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TablePattern:
    text: str
    regex: re.Pattern[str]
    qualified: bool

    @classmethod
    def compile(cls, text: str) -> TablePattern:
        if text.startswith("re:"):
            return cls(text, re.compile(text[3:]), r"\." in text or "." in text[3:])
        return cls(text, re.compile(fnmatch.translate(text)), "." in text)

    def matches(self, schema: str | None, name: str, search_path: Sequence[str]) -> bool:
        if not self.qualified:
            return self.regex.fullmatch(name) is not None
        schemas = (schema,) if schema is not None else search_path
        return any(self.regex.fullmatch(f"{s}.{name}") for s in schemas)


class TableLimits:
    """The first pattern (in file order) that matches a table gives its limit."""

    def __init__(self, limits: Mapping[str, int]) -> None:
        self.patterns = [(TablePattern.compile(p), limit) for p, limit in limits.items()]

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def limit(self, schema: str | None, name: str, search_path: Sequence[str]) -> int | None:
        for pattern, limit in self.patterns:
            if pattern.matches(schema, name, search_path):
                return limit
        return None


class TableSet:
    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = [TablePattern.compile(p) for p in patterns]

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def matches(self, schema: str | None, name: str, search_path: Sequence[str]) -> bool:
        return any(p.matches(schema, name, search_path) for p in self.patterns)
