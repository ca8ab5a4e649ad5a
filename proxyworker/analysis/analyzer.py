"""analyze(): query text -> one StatementInfo per statement, cached by text, failing closed.

This is the only entry point the request path calls. It splits a (possibly multi-statement)
query string with the server's own grammar, analyses each statement, and turns every failure
into AnalysisError so the caller can deny: an exception of any other type must never escape,
whatever the input. Results are immutable and cached by exact text; nothing here depends on
the session, so one cache serves every connection in the process.

Two session facts change how the server lexes text, so the caller must check them before
trusting a result: the text must be decoded from the client_encoding (not assumed UTF-8),
and standard_conforming_strings must be on, as libpg_query assumes. With it off, 'a\'' ends
a string in a different place and a statement can hide inside what the parser sees as a
literal; a session must deny while the server reports it off.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import AnyStr, NamedTuple

import msgspec
from pglast.parser import ParseError, parse_sql_json

from . import commands, normalize
from .effects import Effects, Node
from .shapes import ShapeCache, fixed_runs, literal_invariant
from .statement import AnalysisError, StatementInfo
from .walker import Walker

DEFAULT_CACHE_SIZE = 10_000
# Longer texts (bulk INSERTs) are analysed each time instead of pinning megabytes in the cache.
MAX_CACHED_TEXT = 64 * 1024
# Statements inside bodies inside EXECUTE strings inside bodies ...: deeper than this is denied.
MAX_NESTING = 8

# msgspec decodes pglast's JSON about three times faster than json.loads.
_decode = msgspec.json.Decoder().decode


class _Failure(NamedTuple):
    message: str
    position: int | None


_Result = tuple[StatementInfo, ...] | _Failure


def analyze(sql: str) -> tuple[StatementInfo, ...]:
    """Analyse a query string; raise AnalysisError if any part of it cannot be analysed.

    An empty string, or one holding only comments and semicolons, yields ().
    """
    if type(sql) is not str:
        raise AnalysisError(f"statement text must be str, not {type(sql).__name__}")
    result = _analyze_or_failure(sql) if len(sql) > MAX_CACHED_TEXT else _cached(sql)
    if isinstance(result, _Failure):
        raise AnalysisError(result.message, result.position)
    return result


def configure_cache(maxsize: int) -> None:
    """Replace the result cache with an empty one holding at most `maxsize` texts."""
    global _cached
    _cached = functools.lru_cache(maxsize=maxsize)(_analyze_or_failure)
    _shapes.clear()
    _keyed.clear()


def cache_info() -> functools._CacheInfo:
    return _cached.cache_info()


MAX_SHAPES = 10_000
# Results by normalized text (literals replaced, comments dropped, every identifier kept), for
# statements whose effects cannot depend on their literals: traffic that differs only in
# constants costs one scan instead of a full analysis. Not pglast's fingerprint: it ignores
# schema qualifiers, so public.users and audit.users would share an entry.
_shapes: dict[str, tuple[StatementInfo, ...]] = {}
# The same results by shape (shapes.ShapeCache), which is cheaper to find than the normalized
# text is to make.
_keyed: ShapeCache[tuple[StatementInfo, ...]] = ShapeCache(MAX_SHAPES)
_FIELDS = tuple(f.name for f in dataclasses.fields(StatementInfo))


def _with_text(info: StatementInfo, text: str) -> StatementInfo:
    copied = object.__new__(StatementInfo)
    for name in _FIELDS:
        object.__setattr__(copied, name, getattr(info, name))
    object.__setattr__(copied, "text", text)
    return copied


def _literal_free(result: _Result) -> bool:
    return not isinstance(result, _Failure) and literal_invariant(result)


def _analyze_or_failure(sql: str) -> _Result:
    # First by shape (shapes.py: one translate and a dict lookup), then by normalized text
    # (pglast's scanner, which also sees through comments and whitespace).
    raw = sql.encode() if sql.isascii() else None
    if raw is not None:
        found = _keyed.find(raw)
        if found is not None:
            return (_with_text(found[0], sql),)
    shape: str | None = None
    if "\x00" not in sql:  # a NUL would end the C string the scanner sees
        try:
            shape = normalize.normalize(sql)
        except Exception:  # the full analysis below reports the parser's message
            shape = None
    if shape is not None:
        known = _shapes.get(shape)
        if known is not None:
            # Same text but for literals and comments: the same effects, this statement's text.
            if raw is not None:
                _keyed.put(raw, known, fixed_runs(raw))
            return (_with_text(known[0], sql),)
    result = _analyze_fully(sql)
    if shape is not None and _literal_free(result):
        assert not isinstance(result, _Failure)
        if len(_shapes) >= MAX_SHAPES:
            _shapes.clear()
        _shapes[shape] = result
        if raw is not None:
            _keyed.put(raw, result, fixed_runs(raw))
    return result


def _analyze_fully(sql: str) -> _Result:
    # Failures are cached too: a client repeating a bad statement costs one parse, not many.
    try:
        return _Context(0).analyze_text(sql)
    except AnalysisError as exc:
        return _Failure(exc.message, exc.position)
    except RecursionError:
        return _Failure("statement is nested too deeply to analyze", None)
    except Exception as exc:  # fail closed on anything the analyser did not foresee
        return _Failure(f"internal error while analyzing statement: {exc!r}", None)


_cached: functools._lru_cache_wrapper[_Result] = functools.lru_cache(maxsize=DEFAULT_CACHE_SIZE)(
    _analyze_or_failure
)


class _Context:
    """One nesting level of analysis; implements effects.Nested for the statement handlers."""

    __slots__ = ("depth",)

    def __init__(self, depth: int) -> None:
        self.depth = depth

    def analyze_text(self, sql: str) -> tuple[StatementInfo, ...]:
        return tuple(self.statement(node, text) for node, text in _split(sql))

    def statement(self, node: Node, text: str) -> StatementInfo:
        if type(node) is not dict or len(node) != 1:
            raise AnalysisError("unexpected parse tree shape")
        node_type, fields = next(iter(node.items()))
        effects = Effects()
        kind, command = commands.dispatch(Walker(effects), node_type, fields, self, text)
        return effects.freeze(kind, command, text)

    def nested_statement(self, node: Node, text: str) -> StatementInfo:
        return self._child().statement(node, text)

    def nested_text(self, sql: str, where: str) -> tuple[StatementInfo, ...]:
        child = self._child()
        try:
            return child.analyze_text(sql)
        except AnalysisError as exc:
            raise AnalysisError(f"{where}: {exc.message}") from None

    def _child(self) -> _Context:
        if self.depth >= MAX_NESTING:
            raise AnalysisError(f"statements nested more than {MAX_NESTING} levels deep")
        return _Context(self.depth + 1)


def _split(sql: str) -> list[tuple[Node, str]]:
    """Parse `sql` and pair each raw statement with its own slice of the text."""
    if "\x00" in sql:
        # libpg_query reads a C string: everything after a NUL would go unseen.
        raise AnalysisError("statement text contains a NUL character", sql.index("\x00"))
    try:
        tree = _decode(parse_sql_json(sql))
    except ParseError as exc:
        message, position = (*exc.args, None)[:2]
        raise AnalysisError(str(message), position) from None
    except UnicodeEncodeError as exc:
        raise AnalysisError("statement text is not valid Unicode", exc.start) from None
    stmts = tree.get("stmts", [])
    if len(stmts) == 1 and "stmt_location" not in stmts[0] and "stmt_len" not in stmts[0]:
        return [(stmts[0]["stmt"], sql)]
    # Locations are byte offsets into the UTF-8 text; for ASCII text they are also str indexes.
    if sql.isascii():
        return [(s["stmt"], _slice(sql, s).strip()) for s in stmts]
    raw = sql.encode("utf-8")
    return [(s["stmt"], _slice(raw, s).decode("utf-8").strip()) for s in stmts]


def _slice(text: AnyStr, stmt: Node) -> AnyStr:
    start = stmt.get("stmt_location", 0)
    length = stmt.get("stmt_len", 0)
    return text[start : start + length] if length else text[start:]
