"""The relay's reused lists behave as the plain containers they replace."""

from __future__ import annotations

from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from proxyworker.reuse import Fifo, put

# Operations: a number is appended; None takes from the front (when anything is there).
_OPERATIONS = st.lists(st.one_of(st.integers(), st.none()), max_size=400)


@settings(max_examples=300)
@given(_OPERATIONS)
def test_a_fifo_answers_as_a_deque_does(operations: list[int | None]) -> None:
    fifo: Fifo[int] = Fifo()
    model: deque[int] = deque()
    for operation in operations:
        if operation is None:
            if model:
                assert fifo.popleft() == model.popleft()
            else:
                with pytest.raises(IndexError):
                    fifo.popleft()
        else:
            fifo.append(operation)
            model.append(operation)
        assert len(fifo) == len(model) and bool(fifo) == bool(model)
        assert list(fifo) == list(model)
        if model:
            assert (
                fifo[0] == model[0] and fifo[-1] == model[-1] and fifo[len(model) - 1] == model[-1]
            )
        else:
            with pytest.raises(IndexError):
                fifo[-1]  # (not an item taken earlier that the list still holds)
    fifo.clear()
    assert not fifo and list(fifo) == []


def test_a_fifo_that_empties_after_every_item_keeps_a_bounded_list() -> None:
    fifo: Fifo[int] = Fifo()
    for i in range(1000):
        fifo.append(i)
        assert fifo.popleft() == i
    assert len(fifo._items) < 64  # compacted as it goes: what was taken is let go


@given(st.lists(st.lists(st.integers(), max_size=8), max_size=20))
def test_put_fills_the_front_of_a_scratch_list(rounds: list[list[int]]) -> None:
    scratch: list[int] = []
    longest = 0
    for values in rounds:
        for index, value in enumerate(values):
            put(scratch, index, value)
        longest = max(longest, len(values))
        assert scratch[: len(values)] == values and len(scratch) == longest  # never shrinks
