"""The vocabulary of the corpus: Attack and Benign entries, rule families and techniques.

Kept apart from corpus.py so the corpus_* modules can import it without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.guard.harm import Harm

# Rule families, as the worker must name them in a refusal.
TABLE_LIMIT = "table_limit"
HONEYTOKEN_TABLE = "honeytoken_table"
HONEYTOKEN_VALUE = "honeytoken_value"
SIGNATURE_IDS = (
    "server-file-access",
    "program-execution",
    "large-object-file-io",
    "alter-system",
    "replication-role",
    "backend-signal",
    "dblink",
    "sleep",
    "role-switch",
)


def signature(sig_id: str) -> str:
    assert sig_id in SIGNATURE_IDS, sig_id
    return f"signature:{sig_id}"


# How an attack is disguised; every one of these is covered (test_corpus_shape).
TECHNIQUES = (
    "plain",
    "no-where",
    "tautology",
    "comments",
    "quoting",
    "case",
    "unicode-escape",
    "schema-qualified",
    "search-path",
    "cte",
    "cte-dml",
    "views",
    "functions",
    "security-definer",
    "do-block",
    "dynamic-sql",
    "fk-cascade",
    "triggers",
    "rules",
    "renames",
    "explain-analyze",
    "prepare-execute",
    "cursors",
    "merge",
    "upsert",
    "truncate-drop",
    "copy",
    "multi-statement",
    "transaction",
    "subquery",
    "catalog-functions",
    "returning",
    "raise",
    "expression",
    "stored-value",
    "error-text",
)


@dataclass(frozen=True)
class Attack:
    id: str
    technique: str
    description: str
    sql: str
    rule: str  # the rule family the refusal must name
    harm: Harm  # what the attack does on a direct connection
    setup: str = ""
    teardown: tuple[str, ...] = ()  # statements run one by one, directly, after the case
    copy_data: bytes | None = None  # what a COPY ... FROM STDIN in `sql` sends
    also: tuple[str, ...] = ()  # other rule families that may name the refusal instead
    victim: bool = False  # start a backend in pg_sleep for signal attacks
    commits: bool = False  # the harm shows only at COMMIT (deferred triggers)

    @property
    def rules(self) -> tuple[str, ...]:
        return (self.rule, *self.also)


@dataclass(frozen=True)
class Benign:
    id: str
    technique: str
    description: str
    sql: str
    setup: str = ""
    copy_data: bytes | None = None
