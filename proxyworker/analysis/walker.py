"""Walk pglast's JSON parse tree and record relations, functions and DML it reaches.

The walk is generic on purpose: every node is descended into unless a handler below knows
better, so a node type this module has never heard of still has its relations and function
calls reported (as reads, or as DDL targets under a DDL statement). Handlers exist only where
position changes meaning: DML targets are writes, CTE names shadow tables, FOR UPDATE OF
names aliases. The walk recurses: a tree too deep for Python's stack is one the JSON decoder
refuses first, and either way the caller gets AnalysisError. It must never decide policy or
look anything up; it only records what the text says.

In the JSON, a pointer to a generic Node is wrapped as {"TypeName": {fields}}, while a pointer
to a specific struct (UpdateStmt.relation, SelectStmt.larg, WithClause ...) is inlined as bare
{fields}. Inline RangeVars are recognised by their `relname` field.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .effects import Effects, Node
from .names import qualified_name, truncate_identifier
from .settings import from_set_config
from .statement import RelationRef

# What a RangeVar reached by the generic walk means in its position.
READ = 0
DDL = 1

Scope = frozenset[str]  # CTE names visible at a point; they shadow unqualified table names
NO_SCOPE: Scope = frozenset()

_Handler = Callable[["Walker", Node, int, Scope], None]

# Nodes that can contain no relation, function or statement.
_LEAVES = frozenset(
    {
        "A_Const",
        "A_Star",
        "BitString",
        "Boolean",
        "ColumnRef",
        "Float",
        "Integer",
        "ParamRef",
        "SQLValueFunction",
        "String",
        "TypeName",
    }
)
_SET_CONFIG = ("set_config",)
_SET_CONFIG_QUALIFIED = ("pg_catalog", "set_config")


def relation_ref(fields: Node) -> RelationRef:
    fields = fields.get("RangeVar", fields)
    schema = fields.get("schemaname")
    return RelationRef(
        truncate_identifier(schema) if schema is not None else None,
        truncate_identifier(fields.get("relname", "")),
    )


def name_parts(names: list[Any]) -> tuple[str, ...]:
    """["String" nodes] -> the strings, as funcname and DROP object lists carry them."""
    return tuple(item["String"].get("sval", "") for item in names if "String" in item)


class Walker:
    __slots__ = ("effects",)

    def __init__(self, effects: Effects) -> None:
        self.effects = effects

    def walk(self, node: Any, role: int = READ, scope: Scope = NO_SCOPE) -> None:
        if type(node) is list:
            for item in node:
                if type(item) is dict or type(item) is list:
                    self.walk(item, role, scope)
            return
        if type(node) is not dict:
            return
        if len(node) == 1:
            [(node_type, fields)] = node.items()
            if type(fields) is dict and node_type[:1].isupper():
                if node_type in _LEAVES:
                    return
                handler = _HANDLERS.get(node_type)
                if handler is not None:
                    handler(self, fields, role, scope)
                    return
                node = fields
        if "relname" in node:
            self.relation(node, role, scope)
            return
        for child in node.values():
            if type(child) is dict or type(child) is list:
                self.walk(child, role, scope)

    def relation(self, fields: Node, role: int, scope: Scope) -> None:
        if role == READ:
            if "schemaname" not in fields and fields.get("relname") in scope:
                return  # a CTE reference, not a table
            self.effects.reads.add(relation_ref(fields))
        else:
            self.effects.ddl_targets.add(relation_ref(fields))

    def function(self, names: list[Any], args: list[Any]) -> None:
        parts = name_parts(names)
        self.effects.functions.add(qualified_name(parts))
        if parts in (_SET_CONFIG, _SET_CONFIG_QUALIFIED):
            self.effects.settings.append(from_set_config(args))

    def write_target(self, relation: Node | None) -> RelationRef | None:
        if not relation:
            return None
        ref = relation_ref(relation)
        self.effects.writes.add(ref)
        return ref


def _with_scope(w: Walker, with_clause: Node | None, scope: Scope) -> Scope:
    """Walk the CTE bodies with the names each may see; return the names the query sees."""
    if not with_clause:
        return scope
    ctes = [item.get("CommonTableExpr", {}) for item in with_clause.get("ctes", [])]
    names = frozenset(cte.get("ctename", "") for cte in ctes)
    if with_clause.get("recursive"):
        inner = scope | names
        for cte in ctes:
            w.walk(cte, READ, inner)
        return inner
    # Without RECURSIVE a CTE sees only the ones before it, so a CTE named like a table can
    # read that table: WITH users AS (SELECT * FROM users) reads the real users.
    visible = scope
    for cte in ctes:
        w.walk(cte, READ, visible)
        visible = visible | {cte.get("ctename", "")}
    return scope | names


def _walk_fields(w: Walker, fields: Node, scope: Scope, skip: frozenset[str]) -> None:
    for key, child in fields.items():
        if key not in skip and (type(child) is dict or type(child) is list):
            w.walk(child, READ, scope)


_SELECT_SKIP = frozenset({"withClause", "intoClause", "lockingClause", "larg", "rarg"})
_DML_SKIP = frozenset({"withClause", "relation"})
_FUNC_CALL_SKIP = frozenset({"funcname"})


def _select(w: Walker, fields: Node, role: int, scope: Scope) -> None:
    scope = _with_scope(w, fields.get("withClause"), scope)
    # Set-operation branches are inline SelectStmts, invisible to the generic walk.
    for branch in ("larg", "rarg"):
        if branch in fields:
            _select(w, fields[branch], READ, scope)
    into = fields.get("intoClause")
    if into:
        target = w.write_target(into.get("rel"))
        if target is not None:
            w.effects.ddl_targets.add(target)
    # lockingClause is skipped: FOR UPDATE OF names range-table aliases, not relations.
    _walk_fields(w, fields, scope, _SELECT_SKIP)


def _insert_or_merge(w: Walker, fields: Node, role: int, scope: Scope) -> None:
    scope = _with_scope(w, fields.get("withClause"), scope)
    w.write_target(fields.get("relation"))
    _walk_fields(w, fields, scope, _DML_SKIP)


def _update_or_delete(w: Walker, fields: Node, role: int, scope: Scope) -> None:
    scope = _with_scope(w, fields.get("withClause"), scope)
    target = w.write_target(fields.get("relation"))
    if target is not None and "whereClause" not in fields:
        w.effects.writes_without_where.add(target)
    _walk_fields(w, fields, scope, _DML_SKIP)


def _func_call(w: Walker, fields: Node, role: int, scope: Scope) -> None:
    w.function(fields.get("funcname", []), fields.get("args", []))
    _walk_fields(w, fields, scope, _FUNC_CALL_SKIP)


def _call(w: Walker, fields: Node, role: int, scope: Scope) -> None:
    call = fields.get("funccall")
    if call:
        _func_call(w, call, READ, scope)


def _execute(w: Walker, fields: Node, role: int, scope: Scope) -> None:
    # Nested in EXPLAIN or CREATE TABLE AS: the session must still learn which prepared
    # statement runs.
    if w.effects.prepared_name is None:
        w.effects.prepared_name = fields.get("name")
    w.walk(fields.get("params"), READ, scope)


def _table_like(w: Walker, fields: Node, role: int, scope: Scope) -> None:
    # CREATE TABLE ... (LIKE src) copies src's definition; src itself is not changed.
    relation = fields.get("relation")
    if relation:
        w.effects.reads.add(relation_ref(relation))


def _operator(w: Walker, fields: Node, role: int, scope: Scope) -> None:
    # A user-defined operator is a function call in disguise.
    w.effects.operators.add(qualified_name(name_parts(fields.get("name") or [])))
    w.walk([fields.get("lexpr"), fields.get("rexpr")], READ, scope)


def _type_cast(w: Walker, fields: Node, role: int, scope: Scope) -> None:
    # A cast to a domain runs the domain's CHECK constraints, which may call functions.
    type_name = fields.get("typeName") or {}
    w.effects.cast_types.add(qualified_name(name_parts(type_name.get("names") or [])))
    w.walk(fields.get("arg"), READ, scope)


_HANDLERS: dict[str, _Handler] = {
    "A_Expr": _operator,
    "TypeCast": _type_cast,
    "SelectStmt": _select,
    "InsertStmt": _insert_or_merge,
    "UpdateStmt": _update_or_delete,
    "DeleteStmt": _update_or_delete,
    "MergeStmt": _insert_or_merge,
    "FuncCall": _func_call,
    "CallStmt": _call,
    "ExecuteStmt": _execute,
    "TableLikeClause": _table_like,
}
