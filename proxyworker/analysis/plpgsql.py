"""PL/pgSQL bodies (DO blocks, CREATE FUNCTION/PROCEDURE ... LANGUAGE plpgsql) as SQL statements.

pglast's PL/pgSQL parser yields the body's structure with every embedded SQL statement and
expression as text; each is analysed as SQL here (expressions as SELECTs, which is how the
server evaluates them). EXECUTE of a string built only from literals is analysed like any other
statement; anything else is dynamic and flagged, because this module must never pretend to know
what a computed string will contain.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec
from pglast.parser import ParseError, parse_plpgsql_json, parse_sql_json, scan

from .effects import Nested, Node
from .settings import constant
from .statement import AnalysisError, StatementInfo
from .walker import name_parts

_decode = msgspec.json.Decoder().decode

# RawParseMode values the PL/pgSQL parser records for each expression.
_RAW_PARSE_DEFAULT = 0
_RAW_PARSE_TYPE_NAME = 1
_RAW_PARSE_PLPGSQL_EXPR = 2
_RAW_PARSE_PLPGSQL_ASSIGNS = (3, 4, 5)
_DYNAMIC_QUERY_OWNERS = frozenset({"PLpgSQL_stmt_dynexecute", "PLpgSQL_stmt_dynfors"})
_TRANSACTION_CONTROL = {"PLpgSQL_stmt_commit": "COMMIT", "PLpgSQL_stmt_rollback": "ROLLBACK"}
_OPEN = {"ASCII_40", "ASCII_91"}
_CLOSE = {"ASCII_41", "ASCII_93"}
_ASSIGN = {"COLON_EQUALS", "ASCII_61"}
_BARE_SELECT_FIELDS = frozenset({"targetList", "limitOption", "op"})


class Body(NamedTuple):
    statements: tuple[StatementInfo, ...]
    dynamic: bool  # some EXECUTE runs a string that is not a constant


def analyze_body(statement_text: str, nested: Nested, where: str) -> Body:
    """Analyse the PL/pgSQL of one DO or CREATE FUNCTION statement, given its full text."""
    try:
        functions = _decode(parse_plpgsql_json(statement_text))
    except ParseError as exc:
        raise AnalysisError(f"{where}: {exc.args[0]}") from None
    if not any("action" in item.get("PLpgSQL_function", {}) for item in functions):
        raise AnalysisError(f"{where}: the PL/pgSQL parser found no body")
    collector = _Collector(nested, where)
    collector.collect(functions)
    return Body(tuple(collector.statements), collector.dynamic)


class _Collector:
    def __init__(self, nested: Nested, where: str) -> None:
        self.nested = nested
        self.where = where
        self.statements: list[StatementInfo] = []
        self.dynamic = False
        # Declarations appear both in the datum list and where they are used.
        self.seen: set[tuple[str, int, bool]] = set()

    def collect(self, tree: Any) -> None:
        stack: list[tuple[Any, str, str]] = [(tree, "", "")]
        while stack:
            value, owner, key = stack.pop()
            if type(value) is list:
                stack.extend((item, owner, key) for item in reversed(value))
                continue
            if type(value) is not dict:
                continue
            if len(value) == 1:
                node_type, fields = next(iter(value.items()))
                if type(fields) is dict and node_type.startswith("PLpgSQL_"):
                    if node_type == "PLpgSQL_expr":
                        self.expression(fields, owner, key)
                    elif node_type in _TRANSACTION_CONTROL:
                        command = _TRANSACTION_CONTROL[node_type]
                        chained = f"{command} AND CHAIN" if fields.get("chain") else command
                        self.sql(chained)
                    else:
                        items = reversed(fields.items())
                        stack.extend((child, node_type, name) for name, child in items)
                    continue
            stack.extend((child, owner, name) for name, child in reversed(value.items()))

    def sql(self, text: str) -> None:
        self.statements.extend(self.nested.nested_text(text, self.where))

    def expression(self, fields: Node, owner: str, key: str) -> None:
        query = fields.get("query", "")
        mode = fields.get("parseMode", _RAW_PARSE_DEFAULT)
        dynamic = key == "dynquery" or (key == "query" and owner in _DYNAMIC_QUERY_OWNERS)
        marker = (query, mode, dynamic)
        if marker in self.seen:
            return
        self.seen.add(marker)
        if dynamic:
            # The string expression itself is evaluated (it may call functions) ...
            self.sql("SELECT " + query)
            # ... and then run as SQL, which can only be known when it is a constant.
            text = _constant_string(query)
            if text is None:
                self.dynamic = True
            else:
                self.sql(text)
        elif mode == _RAW_PARSE_DEFAULT:
            self.sql(query)
        elif mode == _RAW_PARSE_PLPGSQL_EXPR:
            self.sql("SELECT " + query)
        elif mode in _RAW_PARSE_PLPGSQL_ASSIGNS:
            target, value = _split_assignment(query, self.where)
            if "(" in target:  # a subscript can call functions: a[f(x)] := ...
                self.sql("SELECT " + target)
            self.sql("SELECT " + value)
        elif mode != _RAW_PARSE_TYPE_NAME:
            raise AnalysisError(f"{self.where}: unknown PL/pgSQL expression kind {mode}")


def _split_assignment(query: str, where: str) -> tuple[str, str]:
    """Split `target := value` (or `target = value`) at the first top-level assignment."""
    depth = 0
    for token in scan(query):
        if token.name in _OPEN:
            depth += 1
        elif token.name in _CLOSE:
            depth -= 1
        elif depth == 0 and token.name in _ASSIGN:
            return query[: token.start], query[token.end + 1 :]
    raise AnalysisError(f"{where}: cannot find the assignment in {query!r}")


def _constant_string(expression: str) -> str | None:
    """The SQL an EXECUTE expression evaluates to, when it is made of literals and ||."""
    stmts = _decode(parse_sql_json("SELECT " + expression)).get("stmts", [])
    if len(stmts) != 1:
        return None
    select = stmts[0].get("stmt", {}).get("SelectStmt", {})
    targets = select.get("targetList", [])
    # Only a bare expression: a FROM or WHERE would make the string depend on table data.
    if len(targets) != 1 or set(select) - _BARE_SELECT_FIELDS:
        return None
    return _fold(targets[0].get("ResTarget", {}).get("val"))


def _fold(node: Any) -> str | None:
    value = constant(node)
    if value is not None:
        return value.text
    expr = node.get("A_Expr") if type(node) is dict else None
    if not expr or expr.get("kind") != "AEXPR_OP" or name_parts(expr.get("name", [])) != ("||",):
        return None
    left, right = _fold(expr.get("lexpr")), _fold(expr.get("rexpr"))
    return None if left is None or right is None else left + right
