"""pytest plugin loaded into a third-party suite's run (``-p sqlproxy_outcomes``): appends one
JSON line per test report to the file named by ``SQLPROXY_OUTCOMES``.

It runs inside the suite's own interpreter and virtualenv, so it imports nothing from this
project. Lines are appended as reports arrive: a run killed midway still leaves the outcomes
of every test that finished. It never changes an outcome.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

_PATH = os.environ.get("SQLPROXY_OUTCOMES", "")


def _first_lines(report: pytest.TestReport, limit: int = 3) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    text = getattr(crash, "message", None) or report.longreprtext or ""
    if isinstance(report.longrepr, tuple):  # a skip: (path, line, reason)
        text = str(report.longrepr[2])
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines[:limit])[:600]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if not _PATH:
        return
    if report.passed and report.when != "call":
        return
    record: dict[str, Any] = {
        "nodeid": report.nodeid,
        "when": report.when,
        "outcome": report.outcome,
        "xfail": hasattr(report, "wasxfail"),
        "subtest": type(report).__name__ != "TestReport",
        "message": "" if report.passed else _first_lines(report),
        "duration": round(report.duration, 3),
    }
    with open(_PATH, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
