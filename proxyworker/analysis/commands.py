"""Top-level statements: kind, command tag and the effects only the statement type reveals.

One handler per statement type that needs more than the generic walk: what a COPY reads or
writes depends on its direction, EXPLAIN/PREPARE/DECLARE/CREATE RULE wrap whole statements,
SET and transaction control change session state, function and DO bodies are code. DDL lives
in ddl.py; anything without a handler is walked generically, so an unknown statement still
reports the relations it names. This module must never guess a benign answer for an
unexpected shape: a missing field makes effects larger or fails the analysis, never smaller.
"""

from __future__ import annotations

from typing import Any

from . import ddl, normalize, plpgsql
from .ddl import Handler, Outcome
from .effects import Nested, Node
from .names import qualified_name
from .settings import constant, from_set_statement, parse_bool
from .statement import SettingChange, StatementKind, TransactionOp
from .walker import DDL, READ, Walker, name_parts, relation_ref

K = StatementKind

_TRANSACTIONS = {
    "TRANS_STMT_BEGIN": (TransactionOp.BEGIN, "BEGIN"),
    "TRANS_STMT_START": (TransactionOp.BEGIN, "START TRANSACTION"),
    "TRANS_STMT_COMMIT": (TransactionOp.COMMIT, "COMMIT"),
    "TRANS_STMT_ROLLBACK": (TransactionOp.ROLLBACK, "ROLLBACK"),
    "TRANS_STMT_SAVEPOINT": (TransactionOp.SAVEPOINT, "SAVEPOINT"),
    "TRANS_STMT_RELEASE": (TransactionOp.RELEASE, "RELEASE"),
    "TRANS_STMT_ROLLBACK_TO": (TransactionOp.ROLLBACK_TO, "ROLLBACK"),
    "TRANS_STMT_PREPARE": (TransactionOp.PREPARE_TRANSACTION, "PREPARE TRANSACTION"),
    "TRANS_STMT_COMMIT_PREPARED": (TransactionOp.COMMIT_PREPARED, "COMMIT PREPARED"),
    "TRANS_STMT_ROLLBACK_PREPARED": (TransactionOp.ROLLBACK_PREPARED, "ROLLBACK PREPARED"),
}


def dispatch(w: Walker, node_type: str, fields: Node, nested: Nested, text: str) -> Outcome:
    handler = _HANDLERS.get(node_type)
    if handler is not None:
        return handler(w, fields, nested, text)
    kind, command = ddl.plain_outcome(node_type)
    w.walk(fields, DDL if kind in (K.DDL, K.UTILITY) else READ)
    return kind, command


def _returning(fields: Node) -> bool:
    return bool(fields.get("returningClause") or fields.get("returningList"))


# -- queries and DML ---------------------------------------------------------------------------


def _select(w: Walker, f: Node, nested: Nested, text: str) -> Outcome:
    w.walk({"SelectStmt": f})
    return (K.DDL, "SELECT INTO") if f.get("intoClause") else (K.SELECT, "SELECT")


def _dml(kind: StatementKind, node_type: str) -> Handler:
    def handle(w: Walker, f: Node, nested: Nested, text: str) -> Outcome:
        w.walk({node_type: f})
        w.effects.has_where = "whereClause" in f and kind in (K.UPDATE, K.DELETE)
        if w.effects.has_where:
            w.effects.key_columns = key_columns(f["whereClause"])
        conflict = f.get("onConflictClause")
        w.effects.upsert = conflict is not None and conflict.get("action") == "ONCONFLICT_UPDATE"
        w.effects.returning = _returning(f)
        return kind, kind.name

    return handle


_CONSTANT = ("A_Const", "ParamRef")


def _constant(node: Node) -> bool:
    ((kind, fields),) = node.items()
    if kind == "TypeCast":
        return _constant(fields["arg"])
    return kind in _CONSTANT


def key_columns(where: Node) -> frozenset[str]:
    """Columns a WHERE clause pins to a constant or parameter with `=` in a top-level AND."""
    ((kind, fields),) = where.items()
    conjuncts = (
        fields["args"] if kind == "BoolExpr" and fields.get("boolop") == "AND_EXPR" else [where]
    )
    pinned = set()
    for conjunct in conjuncts:
        ((ckind, expr),) = conjunct.items()
        if ckind != "A_Expr" or expr.get("kind") != "AEXPR_OP":
            continue
        name = expr.get("name") or []
        if not name or name[-1].get("String", {}).get("sval") != "=":
            continue
        sides = (expr.get("lexpr"), expr.get("rexpr"))
        for column, other in (sides, sides[::-1]):
            if column and other and "ColumnRef" in column and _constant(other):
                last = column["ColumnRef"]["fields"][-1]
                if "String" in last:
                    pinned.add(last["String"]["sval"])
    return frozenset(pinned)


def _copy(w: Walker, f: Node, nested: Nested, text: str) -> Outcome:
    relation = f.get("relation")
    if relation:
        target = relation_ref(relation)
        (w.effects.writes if f.get("is_from") else w.effects.reads).add(target)
    # COPY (DELETE ... RETURNING *) TO is a write; the query walk records it.
    w.walk([f.get("query"), f.get("whereClause"), f.get("options")])
    if f.get("is_program"):
        w.effects.copy_program = True
    elif f.get("filename") is not None:
        w.effects.copy_server_file = True
    return K.COPY, "COPY"


# -- statements wrapping statements ------------------------------------------------------------


def _explain(w: Walker, f: Node, nested: Nested, text: str) -> Outcome:
    analyze = False
    for option in f.get("options", []):
        elem = option.get("DefElem", {})
        if elem.get("defname") == "analyze":
            # Anything not clearly false counts as ANALYZE: erring on "it runs" is safe.
            analyze = _option_bool(elem) is not False
    inner = nested.nested_statement(f["query"], normalize.inner_statement_text(text, "EXPLAIN"))
    w.effects.executes = analyze
    w.effects.add_body(inner, runs_now=analyze)
    w.effects.prepared_name = inner.prepared_name
    return K.EXPLAIN, "EXPLAIN"


def _option_bool(elem: Node) -> bool | None:
    """defGetBoolean(): a bare option is true; otherwise parse the word or 0/1."""
    arg = elem.get("arg")
    if arg is None:
        return True
    if "String" in arg:
        return parse_bool(arg["String"].get("sval", ""))
    if "Integer" in arg:
        return {0: False, 1: True}.get(arg["Integer"].get("ival", 0))
    if "Boolean" in arg:
        return bool(arg["Boolean"].get("boolval"))
    value = constant(arg)
    return parse_bool(value.text) if value is not None and value.text is not None else None


def _prepare(w: Walker, f: Node, nested: Nested, text: str) -> Outcome:
    inner = nested.nested_statement(f["query"], normalize.inner_statement_text(text, "PREPARE"))
    w.effects.add_body(inner, runs_now=False)
    w.effects.prepared_name = f.get("name")
    return K.PREPARE, "PREPARE"


def _execute(w: Walker, f: Node, nested: Nested, text: str) -> Outcome:
    w.effects.prepared_name = f.get("name")
    w.walk(f.get("params", []))
    return K.EXECUTE, "EXECUTE"


def _deallocate(w: Walker, f: Node, nested: Nested, text: str) -> Outcome:
    w.effects.prepared_name = f.get("name")
    return K.DEALLOCATE, "DEALLOCATE ALL" if f.get("isall") else "DEALLOCATE"


def _declare(w: Walker, f: Node, nested: Nested, text: str) -> Outcome:
    inner = nested.nested_statement(f["query"], normalize.inner_statement_text(text, "DECLARE"))
    w.effects.add_body(inner, runs_now=False)
    w.effects.portal_name = f.get("portalname")
    return K.DECLARE, "DECLARE CURSOR"


def _fetch(w: Walker, f: Node, nested: Nested, text: str) -> Outcome:
    w.effects.portal_name = f.get("portalname")
    return K.FETCH, "MOVE" if f.get("ismove") else "FETCH"


def _close(w: Walker, f: Node, nested: Nested, text: str) -> Outcome:
    w.effects.portal_name = f.get("portalname")
    return K.CLOSE, "CLOSE CURSOR" if f.get("portalname") else "CLOSE CURSOR ALL"


def _rule(w: Walker, f: Node, nested: Nested, text: str) -> Outcome:
    if f.get("relation"):
        w.effects.ddl_targets.add(relation_ref(f["relation"]))
    w.walk(f.get("whereClause"))
    for action in f.get("actions", []):
        # A rule's actions run later, inside other statements; their text is not separable.
        w.effects.add_body(nested.nested_statement(action, ""), runs_now=False)
    return K.DDL, "CREATE RULE"


# -- session and transaction -------------------------------------------------------------------


def _transaction(w: Walker, f: Node, nested: Nested, text: str) -> Outcome:
    op, command = _TRANSACTIONS.get(f.get("kind", ""), (None, "TRANSACTION"))
    w.effects.transaction_op = op
    return K.TRANSACTION, command


def _set(w: Walker, f: Node, nested: Nested, text: str) -> Outcome:
    change = from_set_statement(f)
    if change is not None:
        w.effects.settings.append(change)
    return K.SET, "RESET" if f.get("kind") in ("VAR_RESET", "VAR_RESET_ALL") else "SET"


def _discard(w: Walker, f: Node, nested: Nested, text: str) -> Outcome:
    target = f.get("target", "DISCARD_ALL")
    if target == "DISCARD_ALL":
        w.effects.settings.append(SettingChange(None, None, reset=True))
    return K.UTILITY, target.replace("_", " ")


# -- code: DO, CALL, functions -----------------------------------------------------------------


def _do(w: Walker, f: Node, nested: Nested, text: str) -> Outcome:
    language, body = "plpgsql", None
    for arg in f.get("args", []):
        elem = arg.get("DefElem", {})
        value = elem.get("arg", {}).get("String", {}).get("sval")
        if elem.get("defname") == "language":
            language = value or ""
        elif elem.get("defname") == "as":
            body = value
    if language.lower() == "plpgsql":
        _add_plpgsql(w, plpgsql.analyze_body(text, nested, "DO block"), runs_now=True)
    elif body is not None:
        w.effects.dynamic_sql = True
    return K.DO, "DO"


def _call(w: Walker, f: Node, nested: Nested, text: str) -> Outcome:
    w.walk({"CallStmt": f})
    return K.CALL, "CALL"


def _create_function(w: Walker, f: Node, nested: Nested, text: str) -> Outcome:
    w.effects.ddl_routines.add(qualified_name(name_parts(f.get("funcname", []))))
    language, source = None, None
    for option in f.get("options", []):
        elem = option.get("DefElem", {})
        if elem.get("defname") == "language":
            language = elem.get("arg", {}).get("String", {}).get("sval", "")
        elif elem.get("defname") == "as":
            source = name_parts(elem.get("arg", {}).get("List", {}).get("items", []))
    w.walk(f.get("parameters"))  # default expressions
    sql_body = f.get("sql_body")
    if sql_body is not None:
        for stmt in _statement_nodes(sql_body):
            w.effects.add_body(nested.nested_statement(stmt, ""), runs_now=False)
    elif (language or "").lower() == "plpgsql":
        _add_plpgsql(w, plpgsql.analyze_body(text, nested, "function body"), runs_now=False)
    elif (language or "").lower() == "sql" and source and len(source) == 1:
        for info in nested.nested_text(source[0], "SQL function body"):
            w.effects.add_body(info, runs_now=False)
    else:
        w.effects.dynamic_sql = True
    return K.DDL, "CREATE PROCEDURE" if f.get("is_procedure") else "CREATE FUNCTION"


def _add_plpgsql(w: Walker, body: plpgsql.Body, *, runs_now: bool) -> None:
    for info in body.statements:
        w.effects.add_body(info, runs_now=runs_now)
    w.effects.dynamic_sql |= body.dynamic


def _statement_nodes(sql_body: Any) -> list[Node]:
    """Statements of a BEGIN ATOMIC body (nested Lists) or the single RETURN statement."""
    found: list[Node] = []
    pending = [sql_body]
    while pending:
        item = pending.pop()
        if type(item) is list:
            pending.extend(reversed(item))
        elif type(item) is dict and "List" in item:
            pending.append(item["List"].get("items", []))
        elif type(item) is dict:
            found.append(item)
    return found


_HANDLERS: dict[str, Handler] = {
    **ddl.HANDLERS,
    "SelectStmt": _select,
    "InsertStmt": _dml(K.INSERT, "InsertStmt"),
    "UpdateStmt": _dml(K.UPDATE, "UpdateStmt"),
    "DeleteStmt": _dml(K.DELETE, "DeleteStmt"),
    "MergeStmt": _dml(K.MERGE, "MergeStmt"),
    "CopyStmt": _copy,
    "ExplainStmt": _explain,
    "PrepareStmt": _prepare,
    "ExecuteStmt": _execute,
    "DeallocateStmt": _deallocate,
    "DeclareCursorStmt": _declare,
    "FetchStmt": _fetch,
    "ClosePortalStmt": _close,
    "RuleStmt": _rule,
    "TransactionStmt": _transaction,
    "VariableSetStmt": _set,
    "DiscardStmt": _discard,
    "DoStmt": _do,
    "CallStmt": _call,
    "CreateFunctionStmt": _create_function,
}
