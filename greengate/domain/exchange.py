"""Exchange order statuses and the transitions between them."""

from __future__ import annotations

from enum import StrEnum

from greengate.domain.errors import IllegalTransition


class OrderStatus(StrEnum):
    UNCONFIRMED = "unconfirmed"
    AWAITING = "awaiting"
    PAYED = "payed"  # the wire keeps this spelling
    COMPLETED = "completed"
    AUTOCANCELED = "autocanceled"
    CANCELED = "canceled"


OPEN_STATUSES = frozenset({OrderStatus.UNCONFIRMED, OrderStatus.AWAITING})
FINAL_STATUSES = frozenset({OrderStatus.COMPLETED, OrderStatus.AUTOCANCELED, OrderStatus.CANCELED})

ALLOWED_TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.UNCONFIRMED: frozenset(
        {OrderStatus.AWAITING, OrderStatus.PAYED, OrderStatus.AUTOCANCELED, OrderStatus.CANCELED}
    ),
    OrderStatus.AWAITING: frozenset({OrderStatus.PAYED, OrderStatus.AUTOCANCELED, OrderStatus.CANCELED}),
    OrderStatus.PAYED: frozenset({OrderStatus.COMPLETED}),
    OrderStatus.COMPLETED: frozenset(),
    OrderStatus.AUTOCANCELED: frozenset(),
    OrderStatus.CANCELED: frozenset(),
}


def check_transition(current: OrderStatus, target: OrderStatus) -> None:
    if target not in ALLOWED_TRANSITIONS[current]:
        raise IllegalTransition("order", current.value, target.value)


def can_transition(current: OrderStatus, target: OrderStatus) -> bool:
    return target in ALLOWED_TRANSITIONS[current]
