from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from greengate.domain.errors import IllegalTransition
from greengate.domain.exchange import (
    FINAL_STATUSES,
    OPEN_STATUSES,
    OrderStatus,
    can_transition,
    check_transition,
)

S = OrderStatus


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (S.UNCONFIRMED, S.AWAITING),
        (S.AWAITING, S.PAYED),
        (S.PAYED, S.COMPLETED),
        (S.UNCONFIRMED, S.CANCELED),
        (S.AWAITING, S.CANCELED),
        (S.UNCONFIRMED, S.AUTOCANCELED),
        (S.AWAITING, S.AUTOCANCELED),
    ],
)
def test_spec_transitions_are_allowed(current: OrderStatus, target: OrderStatus) -> None:
    check_transition(current, target)


@pytest.mark.parametrize(
    ("current", "target"),
    [
        (S.PAYED, S.CANCELED),
        (S.PAYED, S.AUTOCANCELED),
        (S.COMPLETED, S.CANCELED),
        (S.CANCELED, S.PAYED),
        (S.AUTOCANCELED, S.AWAITING),
        (S.AWAITING, S.UNCONFIRMED),
        (S.AWAITING, S.COMPLETED),
        (S.AWAITING, S.AWAITING),
    ],
)
def test_other_transitions_are_errors(current: OrderStatus, target: OrderStatus) -> None:
    with pytest.raises(IllegalTransition) as info:
        check_transition(current, target)
    assert info.value.current == current.value and info.value.target == target.value


@given(st.lists(st.sampled_from(list(OrderStatus)), max_size=12))
def test_any_walk_through_allowed_transitions_respects_the_lifecycle(targets: list[OrderStatus]) -> None:
    status = S.UNCONFIRMED
    history = [status]
    for target in targets:
        if can_transition(status, target):
            status = target
            history.append(status)
    # Final statuses are absorbing, payed/completed are never canceled, and nothing goes back to open.
    for earlier, later in itertools.pairwise(history):
        assert earlier not in FINAL_STATUSES
        assert not (earlier in (S.PAYED, S.COMPLETED) and later in (S.CANCELED, S.AUTOCANCELED))
        assert not (earlier not in OPEN_STATUSES and later in OPEN_STATUSES)
    assert history.count(S.PAYED) <= 1 and history.count(S.COMPLETED) <= 1
