"""DDL and utility statements: command tags, and the relations and routines they act on.

DROP and TRUNCATE name relations as string lists rather than RangeVars, RENAME and SET SCHEMA
have a new name that matters as much as the old one, CREATE TABLE AS writes what it creates.
Every statement without a handler here is walked generically with RangeVars counted as DDL
targets, so an unknown statement still reports the relations it names. This module must never
narrow what a statement touches to make a policy's life easier.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .effects import Nested, Node
from .names import qualified_name, relation_from_parts, truncate_identifier
from .statement import RelationRef, StatementKind
from .walker import DDL, Walker, name_parts, relation_ref

K = StatementKind
Outcome = tuple[StatementKind, str]
Handler = Callable[[Walker, Node, Nested, str], Outcome]

_RELATION_OBJECTS = frozenset(
    {
        "OBJECT_TABLE",
        "OBJECT_VIEW",
        "OBJECT_MATVIEW",
        "OBJECT_INDEX",
        "OBJECT_SEQUENCE",
        "OBJECT_FOREIGN_TABLE",
    }
)
# Objects that belong to a table: DROP TRIGGER t ON users changes users.
_TABLE_MEMBER_OBJECTS = frozenset({"OBJECT_TRIGGER", "OBJECT_RULE", "OBJECT_POLICY"})
_SUBOBJECTS = frozenset({"OBJECT_COLUMN", "OBJECT_TABCONSTRAINT", "OBJECT_ATTRIBUTE"})
_ROUTINE_OBJECTS = frozenset(
    {"OBJECT_FUNCTION", "OBJECT_PROCEDURE", "OBJECT_ROUTINE", "OBJECT_AGGREGATE"}
)
_OBJECT_WORDS = {
    "OBJECT_MATVIEW": "MATERIALIZED VIEW",
    "OBJECT_TSCONFIGURATION": "TEXT SEARCH CONFIGURATION",
    "OBJECT_TSDICTIONARY": "TEXT SEARCH DICTIONARY",
    "OBJECT_TSPARSER": "TEXT SEARCH PARSER",
    "OBJECT_TSTEMPLATE": "TEXT SEARCH TEMPLATE",
    "OBJECT_FDW": "FOREIGN DATA WRAPPER",
    "OBJECT_FOREIGN_SERVER": "SERVER",
    "OBJECT_OPCLASS": "OPERATOR CLASS",
    "OBJECT_OPFAMILY": "OPERATOR FAMILY",
    "OBJECT_LARGEOBJECT": "LARGE OBJECT",
    "OBJECT_DOMCONSTRAINT": "DOMAIN",
    "OBJECT_TABCONSTRAINT": "TABLE",
    "OBJECT_COLUMN": "TABLE",
    "OBJECT_ATTRIBUTE": "TYPE",
    "OBJECT_DEFACL": "DEFAULT PRIVILEGES",
}
# Statements fully described by the generic walk, with their command tags.
_PLAIN: dict[str, Outcome] = {
    "CreateStmt": (K.DDL, "CREATE TABLE"),
    "CreateForeignTableStmt": (K.DDL, "CREATE FOREIGN TABLE"),
    "IndexStmt": (K.DDL, "CREATE INDEX"),
    "ViewStmt": (K.DDL, "CREATE VIEW"),
    "CreateSeqStmt": (K.DDL, "CREATE SEQUENCE"),
    "AlterSeqStmt": (K.DDL, "ALTER SEQUENCE"),
    "CreatedbStmt": (K.DDL, "CREATE DATABASE"),
    "DropdbStmt": (K.DDL, "DROP DATABASE"),
    "CreateRoleStmt": (K.DDL, "CREATE ROLE"),
    "AlterRoleStmt": (K.DDL, "ALTER ROLE"),
    "AlterRoleSetStmt": (K.DDL, "ALTER ROLE"),
    "DropRoleStmt": (K.DDL, "DROP ROLE"),
    "CommentStmt": (K.DDL, "COMMENT"),
    "SecLabelStmt": (K.DDL, "SECURITY LABEL"),
    "CreateExtensionStmt": (K.DDL, "CREATE EXTENSION"),
    "CreatePolicyStmt": (K.DDL, "CREATE POLICY"),
    "CreateStatsStmt": (K.DDL, "CREATE STATISTICS"),
    "AlterPolicyStmt": (K.DDL, "ALTER POLICY"),
    "CompositeTypeStmt": (K.DDL, "CREATE TYPE"),
    "CreateEnumStmt": (K.DDL, "CREATE TYPE"),
    "CreateDomainStmt": (K.DDL, "CREATE DOMAIN"),
    "DropOwnedStmt": (K.DDL, "DROP OWNED"),
    "ReassignOwnedStmt": (K.DDL, "REASSIGN OWNED"),
    "VariableShowStmt": (K.UTILITY, "SHOW"),
    "ClusterStmt": (K.UTILITY, "CLUSTER"),
    "ReindexStmt": (K.UTILITY, "REINDEX"),
    "LockStmt": (K.UTILITY, "LOCK TABLE"),
    "ListenStmt": (K.UTILITY, "LISTEN"),
    "UnlistenStmt": (K.UTILITY, "UNLISTEN"),
    "NotifyStmt": (K.UTILITY, "NOTIFY"),
    "LoadStmt": (K.UTILITY, "LOAD"),
    "CheckPointStmt": (K.UTILITY, "CHECKPOINT"),
    "ConstraintsSetStmt": (K.UTILITY, "SET CONSTRAINTS"),
    "AlterSystemStmt": (K.UTILITY, "ALTER SYSTEM"),
    "ReturnStmt": (K.OTHER, "RETURN"),  # the body of CREATE FUNCTION ... RETURN expr
}
_DDL_PREFIXES = ("Create", "Alter", "Drop", "Rename", "Grant", "Comment", "Import", "Reassign")
_CAMEL_WORD = re.compile(r"[A-Z][a-z]*")


def plain_outcome(node_type: str) -> Outcome:
    """Kind and command of a statement the generic walk fully describes."""
    return _PLAIN.get(node_type) or _fallback(node_type)


def _fallback(node_type: str) -> Outcome:
    base = node_type.removesuffix("Stmt")
    command = " ".join(_CAMEL_WORD.findall(base)).upper() or node_type
    if node_type.endswith("Stmt") and base.startswith(_DDL_PREFIXES):
        return K.DDL, command
    return (K.UTILITY if node_type.endswith("Stmt") else K.OTHER), command


def _object_words(object_type: str | None) -> str:
    if not object_type:
        return "OBJECT"
    return _OBJECT_WORDS.get(object_type) or object_type.removeprefix("OBJECT_").replace("_", " ")


def _add_schemas(w: Walker, objects: Any) -> None:
    """Record the schemas named by a list of String nodes."""
    for name in name_parts(objects if type(objects) is list else [objects]):
        w.effects.ddl_schemas.add(truncate_identifier(name))


def _routine_parts(node: Any) -> tuple[str, ...] | None:
    owa = node.get("ObjectWithArgs", node) if type(node) is dict else None
    if not owa or "objname" not in owa:
        return None
    return name_parts(owa["objname"])


def _add_routine(w: Walker, node: Any, *, new_name: str | None = None) -> None:
    """Record a routine named by an ObjectWithArgs, and its name after a rename if given."""
    parts = _routine_parts(node)
    if not parts:
        return
    w.effects.ddl_routines.add(qualified_name(parts))
    if new_name is not None:
        w.effects.ddl_routines.add(qualified_name((*parts[:-1], truncate_identifier(new_name))))


def _alter_function(w: Walker, f: Node, nested: Nested, text: str) -> Outcome:
    _add_routine(w, f.get("func"))
    return K.DDL, "ALTER " + _object_words(f.get("objtype", "OBJECT_FUNCTION"))


def _create_trigger(w: Walker, f: Node, nested: Nested, text: str) -> Outcome:
    # The trigger function will run inside every later write to the table.
    w.effects.functions.add(qualified_name(name_parts(f.get("funcname", []))))
    w.walk(f, DDL)
    return K.DDL, "CREATE EVENT TRIGGER" if "eventname" in f else "CREATE TRIGGER"


def _create_table_as(w: Walker, f: Node, nested: Nested, text: str) -> Outcome:
    rel = f.get("into", {}).get("rel")
    if rel:
        target = relation_ref(rel)
        w.effects.ddl_targets.add(target)
        if not f["into"].get("skipData"):
            w.effects.writes.add(target)
    w.walk(f.get("query"))
    if f.get("objtype") == "OBJECT_MATVIEW":
        return K.DDL, "CREATE MATERIALIZED VIEW"
    return K.DDL, "SELECT INTO" if f.get("is_select_into") else "CREATE TABLE AS"


def _refresh(w: Walker, f: Node, nested: Nested, text: str) -> Outcome:
    if f.get("relation"):
        target = relation_ref(f["relation"])
        w.effects.ddl_targets.add(target)
        if not f.get("skipData"):
            w.effects.writes.add(target)
    return K.UTILITY, "REFRESH MATERIALIZED VIEW"


def _truncate(w: Walker, f: Node, nested: Nested, text: str) -> Outcome:
    for item in f.get("relations", []):
        w.effects.truncates.add(relation_ref(item.get("RangeVar", item)))
    w.effects.cascade = f.get("behavior") == "DROP_CASCADE"
    return K.DDL, "TRUNCATE TABLE"


def _drop(w: Walker, f: Node, nested: Nested, text: str) -> Outcome:
    object_type = f.get("removeType")
    if object_type == "OBJECT_SCHEMA":
        _add_schemas(w, f.get("objects", []))
    for obj in f.get("objects", []):
        if object_type in _ROUTINE_OBJECTS:
            _add_routine(w, obj)
            continue
        parts = name_parts(obj.get("List", {}).get("items", [])) if type(obj) is dict else ()
        if object_type in _RELATION_OBJECTS:
            ref = relation_from_parts(parts)
            if ref is not None:
                w.effects.drops.add(ref)
        elif object_type in _TABLE_MEMBER_OBJECTS:
            ref = relation_from_parts(parts[:-1])
            if ref is not None:
                w.effects.ddl_targets.add(ref)
    w.effects.cascade = f.get("behavior") == "DROP_CASCADE"
    return K.DDL, "DROP " + _object_words(object_type)


def _rename(w: Walker, f: Node, nested: Nested, text: str) -> Outcome:
    rename_type = f.get("renameType")
    relation = f.get("relation")
    if relation:
        old = relation_ref(relation)
        w.effects.ddl_targets.add(old)
        if rename_type in _RELATION_OBJECTS and f.get("newname"):
            # The new name matters too: renaming a scratch table to a guarded name is a swap.
            w.effects.ddl_targets.add(RelationRef(old.schema, truncate_identifier(f["newname"])))
    elif rename_type in _ROUTINE_OBJECTS:
        _add_routine(w, f.get("object"), new_name=f.get("newname", ""))
    elif rename_type == "OBJECT_SCHEMA":
        w.effects.ddl_schemas.update(
            truncate_identifier(f.get(key, "")) for key in ("subname", "newname")
        )
    object_type = f.get("relationType") if rename_type in _SUBOBJECTS else rename_type
    return K.DDL, "ALTER " + _object_words(object_type)


def _set_schema(w: Walker, f: Node, nested: Nested, text: str) -> Outcome:
    object_type = f.get("objectType")
    new_schema = truncate_identifier(f.get("newschema", ""))
    if f.get("relation"):
        old = relation_ref(f["relation"])
        w.effects.ddl_targets.update((old, RelationRef(new_schema, old.name)))
    elif object_type in _ROUTINE_OBJECTS:
        parts = _routine_parts(f.get("object"))
        if parts:
            w.effects.ddl_routines.add(qualified_name(parts))
            w.effects.ddl_routines.add(qualified_name((new_schema, parts[-1])))
    return K.DDL, "ALTER " + _object_words(object_type)


def _alter_owner(w: Walker, f: Node, nested: Nested, text: str) -> Outcome:
    object_type = f.get("objectType")
    if object_type in _ROUTINE_OBJECTS:
        _add_routine(w, f.get("object"))
    elif object_type == "OBJECT_SCHEMA":
        _add_schemas(w, f.get("object"))
    w.walk(f.get("relation"), DDL)
    return K.DDL, "ALTER " + _object_words(object_type)


def _alter_table(w: Walker, f: Node, nested: Nested, text: str) -> Outcome:
    w.walk(f, DDL)
    return K.DDL, "ALTER " + _object_words(f.get("objtype", "OBJECT_TABLE"))


def _grant(w: Walker, f: Node, nested: Nested, text: str) -> Outcome:
    if f.get("objtype") in _ROUTINE_OBJECTS:
        for obj in f.get("objects", []):
            _add_routine(w, obj)
    elif f.get("objtype") == "OBJECT_SCHEMA" or f.get("targtype") == "ACL_TARGET_ALL_IN_SCHEMA":
        _add_schemas(w, f.get("objects", []))
    else:
        w.walk(f.get("objects"), DDL)
    return K.DDL, "GRANT" if f.get("is_grant") else "REVOKE"


def _default_privileges(w: Walker, f: Node, nested: Nested, text: str) -> Outcome:
    for option in f.get("options", []):
        elem = option.get("DefElem", {})
        if elem.get("defname") == "schemas":
            _add_schemas(w, elem.get("arg", {}).get("List", {}).get("items", []))
    return K.DDL, "ALTER DEFAULT PRIVILEGES"


def _define(w: Walker, f: Node, nested: Nested, text: str) -> Outcome:
    w.walk(f, DDL)
    return K.DDL, "CREATE " + _object_words(f.get("kind"))


def _grant_role(w: Walker, f: Node, nested: Nested, text: str) -> Outcome:
    return K.DDL, "GRANT ROLE" if f.get("is_grant") else "REVOKE ROLE"


def _create_schema(w: Walker, f: Node, nested: Nested, text: str) -> Outcome:
    schema = f.get("schemaname")
    if schema is not None:
        w.effects.ddl_schemas.add(truncate_identifier(schema))
    before = set(w.effects.ddl_targets)
    w.walk(f.get("schemaElts"), DDL)
    if schema is not None:
        # Objects created inside CREATE SCHEMA belong to the new schema.
        created = w.effects.ddl_targets - before
        w.effects.ddl_targets -= {ref for ref in created if ref.schema is None}
        w.effects.ddl_targets |= {
            RelationRef(truncate_identifier(schema), ref.name) if ref.schema is None else ref
            for ref in created
        }
    return K.DDL, "CREATE SCHEMA"


def _vacuum(w: Walker, f: Node, nested: Nested, text: str) -> Outcome:
    w.walk(f.get("rels"), DDL)
    return K.UTILITY, "VACUUM" if f.get("is_vacuumcmd") else "ANALYZE"


HANDLERS: dict[str, Handler] = {
    "AlterFunctionStmt": _alter_function,
    "CreateTrigStmt": _create_trigger,
    "CreateEventTrigStmt": _create_trigger,
    "CreateTableAsStmt": _create_table_as,
    "RefreshMatViewStmt": _refresh,
    "TruncateStmt": _truncate,
    "DropStmt": _drop,
    "RenameStmt": _rename,
    "AlterObjectSchemaStmt": _set_schema,
    "AlterOwnerStmt": _alter_owner,
    "AlterTableStmt": _alter_table,
    "GrantStmt": _grant,
    "AlterDefaultPrivilegesStmt": _default_privileges,
    "GrantRoleStmt": _grant_role,
    "DefineStmt": _define,
    "CreateSchemaStmt": _create_schema,
    "VacuumStmt": _vacuum,
}
