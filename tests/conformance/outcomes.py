"""Outcomes of a third-party suite run, and how a run through a worker compares with the
direct run.

``plugin/sqlproxy_outcomes.py`` writes one JSON line per pytest report; ``load`` folds them
into one ``Outcome`` per test. ``compare`` lists the tests that pass directly but not through
the worker and matches them against ``known_differences.toml``, where every expected
difference carries its reason. This module only reads files: it never runs anything.
"""

from __future__ import annotations

import json
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

KNOWN_DIFFERENCES = Path(__file__).with_name("known_differences.toml")

# Order of precedence when a test produced several reports (setup, call, teardown, subtests).
STATUSES = ("failed", "error", "xpassed", "xfailed", "skipped", "passed")


@dataclass
class Outcome:
    status: str
    message: str = ""


def load(path: Path) -> dict[str, Outcome]:
    """One outcome per test id from the plugin's JSON lines (missing file: no tests)."""
    reports: dict[str, list[dict[str, object]]] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                record = json.loads(line)
                reports.setdefault(str(record["nodeid"]), []).append(record)
    return {nodeid: _fold(records) for nodeid, records in reports.items()}


def _fold(records: list[dict[str, object]]) -> Outcome:
    found: dict[str, str] = {}
    for r in records:
        outcome, when, xfail = r["outcome"], r["when"], r["xfail"]
        if outcome == "failed":
            status = "failed" if when == "call" else "error"
        elif xfail:
            status = "xfailed" if outcome == "skipped" else "xpassed"
        else:
            status = str(outcome)
        found.setdefault(status, str(r.get("message") or ""))
    status = next(s for s in STATUSES if s in found)
    return Outcome(status, found[status])


def counts(outcomes: dict[str, Outcome]) -> Counter[str]:
    return Counter(o.status for o in outcomes.values())


@dataclass(frozen=True)
class KnownDifference:
    suite: str
    modes: tuple[str, ...]
    reason: str
    tests: tuple[str, ...]
    deselect: bool = False
    """The tests hang in these modes: run.py does not run them there (exact ids only)."""
    intermittent: bool = False
    """The tests fail through the worker in some runs only (timing): passing is no news."""

    def covers(self, suite: str, mode: str, nodeid: str) -> bool:
        if suite != self.suite or mode not in self.modes:
            return False
        return any(
            nodeid == t or (t.endswith("*") and nodeid.startswith(t[:-1])) for t in self.tests
        )


def known_differences(path: Path = KNOWN_DIFFERENCES) -> list[KnownDifference]:
    with path.open("rb") as fh:
        data = tomllib.load(fh)
    return [
        KnownDifference(
            d["suite"],
            tuple(d["modes"]),
            d["reason"].strip(),
            tuple(d["tests"]),
            bool(d.get("deselect", False)),
            bool(d.get("intermittent", False)),
        )
        for d in data.get("difference", [])
    ]


@dataclass
class Regression:
    nodeid: str
    status: str
    message: str
    known: KnownDifference | None


@dataclass
class Comparison:
    suite: str
    mode: str
    regressions: list[Regression] = field(default_factory=list)
    """Passed directly; failed, errored or did not pass through the worker."""
    not_run: list[str] = field(default_factory=list)
    """Passed directly; no outcome through the worker (the run was cut short)."""
    fixed: list[str] = field(default_factory=list)
    """Listed as known differences for this mode, yet passed through the worker."""
    lucky: list[str] = field(default_factory=list)
    """Intermittent known differences that passed through the worker this time."""

    @property
    def new(self) -> list[Regression]:
        return [r for r in self.regressions if r.known is None]


def compare(
    suite: str,
    mode: str,
    direct: dict[str, Outcome],
    proxied: dict[str, Outcome],
    known: list[KnownDifference],
) -> Comparison:
    result = Comparison(suite, mode)
    for nodeid, outcome in sorted(direct.items()):
        if outcome.status != "passed":
            continue
        through = proxied.get(nodeid)
        match = next((k for k in known if k.covers(suite, mode, nodeid)), None)
        if through is None:
            if match is not None and match.deselect:
                result.regressions.append(Regression(nodeid, "deselected", "", match))
            else:
                result.not_run.append(nodeid)
            continue
        if through.status == "passed":
            # Only exact entries: a prefix entry may rightly cover tests that pass.
            if match is not None and nodeid in match.tests:
                (result.lucky if match.intermittent else result.fixed).append(nodeid)
            continue
        result.regressions.append(Regression(nodeid, through.status, through.message, match))
    return result
