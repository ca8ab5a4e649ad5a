"""Run-time parameter changes (SET, RESET, set_config()) read out of parse-tree nodes.

The session tracks search_path and the proxy's own `sqlproxy.*` switches from these, so values
are rendered the way the server stores them. This module must never guess: when an argument
is not a constant the change is reported with `exact=False` rather than a plausible value.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .names import ascii_lower, quote_identifier
from .statement import SettingChange

# GUC_LIST_QUOTE parameters: SET quotes each element with quote_identifier() when flattening.
_LIST_QUOTE = frozenset(
    {
        "search_path",
        "temp_tablespaces",
        "session_preload_libraries",
        "shared_preload_libraries",
        "local_preload_libraries",
    }
)
_TEXT_TYPES = frozenset({"text", "varchar", "bpchar", "name"})


class Constant(NamedTuple):
    text: str | None  # None for SQL NULL
    is_string: bool


def constant(node: Any) -> Constant | None:
    """The value of a literal expression node, or None when it is not a literal."""
    if type(node) is not dict:
        return None
    const = node.get("A_Const")
    if const is None:
        cast = node.get("TypeCast")
        if cast is None:
            return None
        names = cast.get("typeName", {}).get("names", [])
        if cast.get("typeName", {}).get("typmods") or not names:
            return None
        if names[-1].get("String", {}).get("sval") not in _TEXT_TYPES:
            return None
        return constant(cast.get("arg"))
    if const.get("isnull"):
        return Constant(None, False)
    if "sval" in const:
        return Constant(const["sval"].get("sval", ""), True)
    if "ival" in const:
        return Constant(str(const["ival"].get("ival", 0)), False)
    if "fval" in const:
        return Constant(const["fval"].get("fval", ""), False)
    if "boolval" in const:
        return Constant("true" if const["boolval"].get("boolval") else "false", False)
    if "bsval" in const:
        return Constant(const["bsval"].get("bsval", ""), True)
    return None


def parse_bool(text: str) -> bool | None:
    """The server's parse_bool(): prefixes of true/false/yes/no, on, of(f), 1, 0."""
    word = ascii_lower(text.strip())
    if word in ("1", "on"):
        return True
    if word in ("0", "of", "off"):
        return False
    if word:
        for candidate, value in (("true", True), ("false", False), ("yes", True), ("no", False)):
            if candidate.startswith(word):
                return value
    return None


def from_set_statement(fields: dict[str, Any]) -> SettingChange | None:
    """The change a VariableSetStmt makes; None for SET TRANSACTION and SET ... FROM CURRENT."""
    kind = fields.get("kind")
    is_local = bool(fields.get("is_local"))
    if kind == "VAR_RESET_ALL":
        return SettingChange(None, None, is_local, reset=True)
    raw_name = fields.get("name")
    if raw_name is None:
        return None
    name = ascii_lower(raw_name)
    if kind in ("VAR_SET_DEFAULT", "VAR_RESET"):
        return SettingChange(name, None, is_local, reset=True)
    if kind != "VAR_SET_VALUE":
        return None
    parts: list[str] = []
    for arg in fields.get("args", []):
        value = constant(arg)
        if value is None or value.text is None:
            return SettingChange(name, None, is_local, exact=False)
        quote = value.is_string and name in _LIST_QUOTE
        parts.append(quote_identifier(value.text) if quote else value.text)
    return SettingChange(name, ", ".join(parts), is_local)


def from_set_config(args: list[Any]) -> SettingChange:
    """The change set_config(name, value, is_local) makes, as far as its arguments show."""
    if len(args) != 3:
        return SettingChange(None, None, exact=False)
    name_arg, value_arg, local_arg = (constant(arg) for arg in args)
    name = ascii_lower(name_arg.text) if name_arg and name_arg.text is not None else None
    local = parse_bool(local_arg.text) if local_arg and local_arg.text is not None else None
    exact = name is not None and value_arg is not None and local is not None
    if value_arg is not None and value_arg.text is None:
        # set_config(name, NULL, ...) resets the parameter to its default.
        return SettingChange(name, None, bool(local), reset=True, exact=exact)
    value = value_arg.text if value_arg is not None else None
    return SettingChange(name, value, bool(local), exact=exact)
