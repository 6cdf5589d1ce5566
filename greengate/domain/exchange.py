"""Exchange order statuses and the transitions between them."""

from __future__ import annotations

from datetime import datetime
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
# Statuses in which the order can no longer be paid: its requisites are not shown any more.
UNPAYABLE_STATUSES = FINAL_STATUSES

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


def status_seen(status: OrderStatus, expires_at: datetime, now: datetime) -> OrderStatus:
    """The status a reader is told at `now`: an open order whose time has run out is autocanceled,
    whether or not the expiry sweep has written it yet."""
    if status in OPEN_STATUSES and expires_at <= now:
        return OrderStatus.AUTOCANCELED
    return status
