"""The evasion corpus: attacks the guard must refuse and benign statements it must let through.

An `Attack` is SQL that does real harm against the fixture (schema.sql) when nothing stops it
— test_corpus_direct proves each one on a direct connection — plus the rule family the worker
must name when it refuses. A `Benign` entry is ordinary application SQL whose result through
the worker must equal a direct connection's. Setup runs directly as superuser on the case's
own database before the attack; teardown undoes what outlives a database (ALTER SYSTEM).

The types are in entry.py; the entries in corpus_limits and corpus_limits_code (row limits),
corpus_honeytokens (honeytoken tables and values), corpus_signatures (dangerous functions and
commands) and corpus_benign.
"""

from __future__ import annotations

from tests.guard import (
    corpus_benign,
    corpus_honeytokens,
    corpus_limits,
    corpus_limits_code,
    corpus_signatures,
)
from tests.guard.entry import (
    HONEYTOKEN_TABLE,
    HONEYTOKEN_VALUE,
    SIGNATURE_IDS,
    TABLE_LIMIT,
    TECHNIQUES,
    Attack,
    Benign,
)

ATTACKS: tuple[Attack, ...] = (
    *corpus_limits.ATTACKS,
    *corpus_limits_code.ATTACKS,
    *corpus_honeytokens.ATTACKS,
    *corpus_signatures.ATTACKS,
)
BENIGN: tuple[Benign, ...] = tuple(corpus_benign.BENIGN)

__all__ = [
    "ATTACKS",
    "BENIGN",
    "HONEYTOKEN_TABLE",
    "HONEYTOKEN_VALUE",
    "SIGNATURE_IDS",
    "TABLE_LIMIT",
    "TECHNIQUES",
    "Attack",
    "Benign",
    "psql_sample",
]


def psql_sample(per_key: int = 1) -> list[Attack]:
    """The first attack of each technique within each rule family: what psql runs through
    the worker (a process per case makes all of them too slow)."""
    seen: dict[tuple[str, str], int] = {}
    chosen = []
    for attack in ATTACKS:
        key = (attack.technique, attack.rule.split(":")[0])
        if seen.get(key, 0) < per_key:
            seen[key] = seen.get(key, 0) + 1
            chosen.append(attack)
    return chosen
