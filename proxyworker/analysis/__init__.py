"""Statement analysis: SQL text -> StatementInfo, the facts every policy decision starts from.

pglast (libpg_query, the server's own grammar) parses; our walker reads its JSON tree. This
package reports what statements say — relations read and written, functions called, settings
changed, bodies of functions and DO blocks — with names folded as the server folds them but not
resolved: search_path resolution and "is this a view?" belong to the session and the catalog
cache. It must never allow or deny anything itself, and never let text it cannot analyse pass
as harmless: such text raises AnalysisError.
"""

from __future__ import annotations

from .analyzer import DEFAULT_CACHE_SIZE, analyze, cache_info, configure_cache
from .names import relation_search_order, split_identifier_list
from .statement import (
    AnalysisError,
    RelationRef,
    SettingChange,
    StatementInfo,
    StatementKind,
    TransactionOp,
)

__all__ = [
    "DEFAULT_CACHE_SIZE",
    "AnalysisError",
    "RelationRef",
    "SettingChange",
    "StatementInfo",
    "StatementKind",
    "TransactionOp",
    "analyze",
    "cache_info",
    "configure_cache",
    "relation_search_order",
    "split_identifier_list",
]
