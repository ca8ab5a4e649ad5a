"""The queue of what each request in flight leaves to audit (``AuditQueue``): it counts the
requests with nothing to audit instead of storing them, and must answer as a plain list of
every request's slot does."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from proxyworker.session.state import AuditQueue, AuditSlot

_SLOT = st.one_of(
    st.none(), st.builds(lambda tags: ((), tags), st.booleans())
)  # (no decisions kept: the queue never looks inside them)
_OPERATION = st.one_of(
    st.tuples(st.just("append"), _SLOT),
    st.tuples(st.just("skip"), st.integers(min_value=0, max_value=3)),
    st.tuples(st.just("popleft"), st.none()),
)


@given(st.lists(_OPERATION, max_size=40))
def test_it_answers_as_a_list_of_every_requests_slot(
    operations: list[tuple[str, AuditSlot | int]],
) -> None:
    queue = AuditQueue()
    model: list[AuditSlot] = []
    for operation, argument in operations:
        if operation == "append":
            assert not isinstance(argument, int)
            queue.append(argument)
            model.append(argument)
        elif operation == "skip":
            assert isinstance(argument, int)
            queue.skip(argument)
            model.extend([None] * argument)
        elif model:
            assert queue.popleft() == model.pop(0)
        else:
            with pytest.raises(IndexError):
                queue.popleft()
        assert list(queue) == model and len(queue) == len(model)
        assert queue.tags == sum(1 for slot in model if slot is not None and slot[1])
        assert queue.front_wants_tags() == bool(model and model[0] is not None and model[0][1])
