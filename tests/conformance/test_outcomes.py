"""How a run through the worker is compared with the direct run (``outcomes.compare``)."""

from __future__ import annotations

from tests.conformance.outcomes import KnownDifference, Outcome, compare, known_differences

PASSED = Outcome("passed")
FAILED = Outcome("failed", "AssertionError")


def _known(*tests: str, intermittent: bool = False) -> KnownDifference:
    return KnownDifference("suite", ("session",), "why", tests, intermittent=intermittent)


def test_a_known_difference_that_passes_is_reported_fixed_unless_intermittent() -> None:
    direct = {"t::fixed": PASSED, "t::timing": PASSED, "t::still": PASSED, "t::new": PASSED}
    proxied = {"t::fixed": PASSED, "t::timing": PASSED, "t::still": FAILED, "t::new": FAILED}
    known = [_known("t::fixed", "t::still"), _known("t::timing", intermittent=True)]
    result = compare("suite", "session", direct, proxied, known)
    assert result.fixed == ["t::fixed"]
    assert result.lucky == ["t::timing"]
    assert [(r.nodeid, r.known is not None) for r in result.regressions] == [
        ("t::new", False),
        ("t::still", True),
    ]


def test_an_intermittent_difference_that_fails_is_known() -> None:
    known = [_known("t::timing", intermittent=True)]
    result = compare("suite", "session", {"t::timing": PASSED}, {"t::timing": FAILED}, known)
    assert result.new == [] and [r.nodeid for r in result.regressions] == ["t::timing"]
    assert result.fixed == result.lucky == []


def test_the_shipped_list_parses_and_marks_the_timing_difference_intermittent() -> None:
    found = [k for k in known_differences() if k.intermittent]
    assert [k.tests for k in found] == [
        ("tests/test_execute.py::TestExecuteMany::test_executemany_server_failure_during_writes",)
    ]
